"""`/v1/files` through the official SDK (strict) against the real app: uploads streamed to
the data directory, validated with line details, listed, read back, deleted, and private
to the key that uploaded them."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ainfinity.api.main import create_app
from tests.builders import API_KEY
from tests.conftest import MakeSettings
from tests.fine_tuning.conftest import SAMPLE_CHAT

USER_KEY = "test-key-user-files-123456"
SECOND_USER_KEY = "test-key-user-two-99887766"
LIMIT = 64 * 1024


@pytest.fixture
def app_client(make_settings: MakeSettings, tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(
        api_keys=SecretStr(f"tester:{API_KEY},user:{USER_KEY}:user,second:{SECOND_USER_KEY}:user"),
        max_upload_bytes=LIMIT,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def sdk_over(client: TestClient, key: str = USER_KEY) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1",
        api_key=key,
        http_client=client,
        max_retries=0,
        _strict_response_validation=True,
    )


def uploads(tmp_path: Path) -> list[str]:
    """What the upload directory holds (nothing half-written may stay)."""
    directory = tmp_path / "uploads"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def chat_row(n: int) -> str:
    return json.dumps(
        {"messages": [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": "a"}]}
    )


def test_an_upload_is_stored_validated_listed_read_back_and_deleted(
    app_client: TestClient, tmp_path: Path
) -> None:
    client = sdk_over(app_client)

    created = client.files.create(file=SAMPLE_CHAT, purpose="fine-tune")

    assert created.status == "processed" and created.status_details is None
    assert (created.filename, created.bytes) == ("tiny_chat.jsonl", SAMPLE_CHAT.stat().st_size)
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).content == SAMPLE_CHAT.read_bytes()
    assert uploads(tmp_path) == [f"{created.id}.jsonl"]

    deleted = client.files.delete(created.id)

    assert deleted.deleted and deleted.id == created.id
    with pytest.raises(openai.NotFoundError) as missing:
        client.files.retrieve(created.id)
    assert missing.value.body["code"] == "file_not_found"  # type: ignore[index]
    assert uploads(tmp_path) == []


def test_files_list_in_pages_newest_first(app_client: TestClient) -> None:
    client = sdk_over(app_client)
    ids = [
        client.files.create(file=(f"f{n}.jsonl", chat_row(n).encode()), purpose="fine-tune").id
        for n in range(5)
    ]

    newest_first = [f.id for f in client.files.list(limit=2)]  # three pages, auto-paginated
    oldest_first = [f.id for f in client.files.list(limit=2, order="asc")]

    assert newest_first == ids[::-1] and oldest_first == ids
    first = client.files.list(limit=2)
    assert first.has_more and [f.id for f in first.data] == ids[:2:-1][:2]
    assert [f.id for f in client.files.list(purpose="fine-tune")] == ids[::-1]
    assert list(client.files.list(purpose="assistants")) == []


def test_invalid_rows_give_status_error_with_their_lines(app_client: TestClient) -> None:
    client = sdk_over(app_client)
    lines = [chat_row(1), '{"messages": [}', chat_row(2), '{"prompt": "only a prompt"}']
    body = ("\n".join(lines) + "\n").encode()

    created = client.files.create(file=("bad.jsonl", body), purpose="fine-tune")

    assert created.status == "error"
    assert created.status_details is not None
    assert "line 2" in created.status_details and "line 4" in created.status_details
    assert "line 1:" not in created.status_details and "line 3:" not in created.status_details
    # A file in error is kept (its content can be read) but cannot be trained on.
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model="tiny-random-llama", training_file=created.id)
    assert refused.value.body["param"] == "training_file"  # type: ignore[index]
    assert "line 2" in refused.value.body["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("name", "content", "param"),
    [
        ("notes.txt", b"just some text\nand more\n", "file"),
        ("data.csv", b"a,b\n1,2\n", "file"),
        ("binary.jsonl", bytes(range(256)) * 4, "file"),
    ],
)
def test_what_is_not_jsonl_is_refused_and_not_kept(
    app_client: TestClient, tmp_path: Path, name: str, content: bytes, param: str
) -> None:
    client = sdk_over(app_client)

    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=(name, content), purpose="fine-tune")

    assert refused.value.body["param"] == param  # type: ignore[index]
    assert "JSONL" in refused.value.body["message"]  # type: ignore[index]
    assert uploads(tmp_path) == [] and list(client.files.list()) == []


def test_a_file_over_the_limit_is_413_and_leaves_nothing(
    app_client: TestClient, tmp_path: Path
) -> None:
    client = sdk_over(app_client)
    big = ("\n".join(chat_row(n) for n in range(2000)) + "\n").encode()
    assert len(big) > LIMIT

    with pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("big.jsonl", io.BytesIO(big)), purpose="fine-tune")

    assert refused.value.status_code == 413
    assert str(LIMIT) in refused.value.body["message"]  # type: ignore[index]
    assert uploads(tmp_path) == [] and list(client.files.list()) == []


def test_other_purposes_and_malformed_forms_are_400(app_client: TestClient, tmp_path: Path) -> None:
    client = sdk_over(app_client)
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=SAMPLE_CHAT, purpose="assistants")
    assert purpose.value.body["param"] == "purpose"  # type: ignore[index]

    headers = {"Authorization": f"Bearer {USER_KEY}"}
    boundary = "xyz"
    truncated = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
        f"\r\n{chat_row(1)}\n"
    ).encode()  # no closing boundary
    bad = [
        app_client.post(
            "/v1/files", content=b"{}", headers={**headers, "Content-Type": "application/json"}
        ),
        app_client.post(
            "/v1/files",
            content=truncated,
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        ),
        app_client.post(
            "/v1/files",
            content=b"garbage without any boundary",
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        ),
        app_client.post("/v1/files", data={"purpose": "fine-tune"}, headers=headers),  # no file
    ]

    for response in bad:
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
    assert uploads(tmp_path) == []


def test_files_belong_to_the_key_that_uploaded_them(app_client: TestClient) -> None:
    owner, stranger = sdk_over(app_client), sdk_over(app_client, SECOND_USER_KEY)
    mine = owner.files.create(file=SAMPLE_CHAT, purpose="fine-tune")

    for attempt in (
        lambda: stranger.files.retrieve(mine.id),
        lambda: stranger.files.content(mine.id),
        lambda: stranger.files.delete(mine.id),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert list(stranger.files.list()) == []
    with pytest.raises(openai.BadRequestError) as refused:
        stranger.fine_tuning.jobs.create(model="tiny-random-llama", training_file=mine.id)
    assert refused.value.body["param"] == "training_file"  # type: ignore[index]
    # Nothing happened to it; an admin key sees every file.
    assert owner.files.retrieve(mine.id) == mine
    assert sdk_over(app_client, API_KEY).files.retrieve(mine.id) == mine


def test_a_file_a_job_still_uses_cannot_be_deleted(app_client: TestClient) -> None:
    client = sdk_over(app_client)
    data = client.files.create(file=SAMPLE_CHAT, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny-random-llama", training_file=data.id)

    with pytest.raises(openai.ConflictError) as in_use:
        client.files.delete(data.id)
    assert in_use.value.body["code"] == "file_in_use"  # type: ignore[index]
    assert job.id in in_use.value.body["message"]  # type: ignore[index]

    client.fine_tuning.jobs.cancel(job.id)
    assert client.files.delete(data.id).deleted


def test_missing_files_are_404_in_openai_shape(app_client: TestClient) -> None:
    client = sdk_over(app_client)
    for call in (
        lambda: client.files.retrieve("file-doesnotexist"),
        lambda: client.files.content("file-doesnotexist"),
        lambda: client.files.delete("file-doesnotexist"),
    ):
        with pytest.raises(openai.NotFoundError) as missing:
            call()
        assert missing.value.body["code"] == "file_not_found"  # type: ignore[index]
    response = app_client.get("/v1/files/file-x", headers={"Authorization": f"Bearer {USER_KEY}"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "file_not_found"
