"""A full disk while uploading or creating a job: 507 `storage_full`, the partial upload
removed, nothing half-written, and the store as usable as before once space comes back.

The server runs in a mount namespace of its own over a small tmpfs (`unshare`), so the
disk really fills up, and only for it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import openai
import pytest

from tests.builders import job_body
from tests.fine_tuning.conftest import ADMIN_KEY, ALICE_KEY, KEYS, SAMPLE_CHAT, sdk
from tests.servers import UvicornServer

pytestmark = pytest.mark.timeout(300)

DISK = "2m"
ROW = json.dumps(
    {"messages": [{"role": "user", "content": "q" * 100}, {"role": "assistant", "content": "a"}]}
)


def on_own_tmpfs(mountpoint: Path) -> list[str]:
    """A command prefix: a private mount namespace with a `DISK`-sized tmpfs at
    `mountpoint` (and a `data` directory in it), then exec the rest."""
    script = f'mount -t tmpfs -o size={DISK} tmpfs "$0" && mkdir -p "$0/data" && exec "$@"'
    return ["unshare", "--map-root-user", "--mount", "sh", "-c", script, str(mountpoint)]


@pytest.fixture
def full_server(tmp_path: Path) -> UvicornServer:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(
        [*on_own_tmpfs(tmp_path), "true"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.strip()}")
    disk = tmp_path / "disk"
    disk.mkdir()
    return UvicornServer(
        disk / "home",
        env={
            "AINFINITY_API_KEYS": KEYS,
            "AINFINITY_DATA_DIRS": f"{disk / 'data'},{SAMPLE_CHAT.parent}",
        },
        log_path=tmp_path / "server.log",
        prefix=on_own_tmpfs(disk),
    )


def rows(size: int) -> bytes:
    count = max(1, size // (len(ROW) + 1))
    return ((ROW + "\n") * count).encode()


def test_a_full_disk_is_507_and_loses_nothing(full_server: UvicornServer) -> None:
    with full_server as server:
        client = sdk(server, ALICE_KEY)
        api = server.client(ADMIN_KEY)

        # An upload bigger than the disk: 507, and its partial file is gone...
        with pytest.raises(openai.APIStatusError) as too_big:
            client.files.create(file=("big.jsonl", rows(3 * 1024 * 1024)), purpose="fine-tune")
        assert too_big.value.status_code == 507
        assert too_big.value.body["code"] == "storage_full"  # type: ignore[index]
        assert list(client.files.list()) == []
        # ...for this one, that fits only in the space the partial file had taken, succeeds.
        kept = [client.files.create(file=("a.jsonl", rows(1200 * 1024)), purpose="fine-tune")]

        # Fill the disk to its last page with smaller and smaller uploads.
        for size in (256, 64, 16, 4, 1, 0):
            while True:
                try:
                    kept.append(
                        client.files.create(
                            file=("f.jsonl", rows(size * 1024)), purpose="fine-tune"
                        )
                    )
                except openai.APIStatusError as exc:
                    assert exc.status_code == 507, exc
                    break
        assert all(f.status == "processed" for f in kept)

        # Creating a job needs a few files: 507 on both APIs, and no job appears.
        native = api.post("/api/v1/jobs", json=job_body(name="no-room", dataset=str(SAMPLE_CHAT)))
        assert native.status_code == 507, native.text
        assert native.json()["detail"]["code"] == "storage_full"
        with pytest.raises(openai.APIStatusError) as openai_job:
            client.fine_tuning.jobs.create(model="tiny-random-llama", training_file=kept[0].id)
        assert openai_job.value.status_code == 507
        assert api.get("/api/v1/jobs").json()["data"] == []
        assert list(client.fine_tuning.jobs.list()) == []
        assert {f.id for f in client.files.list()} == {f.id for f in kept}

        # Space comes back: everything works as before.
        client.files.delete(kept[0].id)
        created = api.post("/api/v1/jobs", json=job_body(name="room", dataset=str(SAMPLE_CHAT)))
        assert created.status_code == 202, created.text
        job = client.fine_tuning.jobs.create(model="tiny-random-llama", training_file=kept[1].id)
        listed = [j["name"] for j in api.get("/api/v1/jobs").json()["data"]]
        assert listed == [job.id, "room"]
        assert api.get(f"/api/v1/jobs/{job.id}").json()["status"] == "PENDING"
        api.close()
