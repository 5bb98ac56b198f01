"""Request body size limit (413) and the directories datasets may come from (403)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from tests.builders import API_KEY, SAMPLE_SFT, job_body, write_jsonl
from tests.conftest import MakeSettings


def nothing_stored(settings: Settings) -> bool:
    jobs = settings.home / "jobs"
    return not jobs.exists() or not any(jobs.iterdir())


class TestBodyLimit:
    def test_a_declared_body_over_the_limit_is_413_before_it_is_read(
        self, make_settings: MakeSettings
    ) -> None:
        settings = make_settings(max_body_bytes=4096)
        body = job_body(metadata={f"k{i}": "y" * 1000 for i in range(6)})
        with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
            response = client.post("/api/v1/jobs", json=body)
            small = client.post("/api/v1/jobs", json=job_body(name="small"))

        assert response.status_code == 413
        assert response.json()["detail"]["code"] == "body_too_large"
        assert "4096" in response.json()["detail"]["msg"]
        assert small.status_code == 202

    def test_a_streamed_body_is_cut_off_at_the_limit(self, make_settings: MakeSettings) -> None:
        settings = make_settings(max_body_bytes=4096)
        payload = json.dumps(job_body(name="streamed", metadata={"blob": "z" * 8000})).encode()

        def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
            for start in range(0, len(payload), 1000):
                yield payload[start : start + 1000]

        with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
            response = client.post(
                "/api/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"}
            )

        assert response.status_code == 413
        assert response.json()["detail"]["code"] == "body_too_large"
        assert nothing_stored(settings)

    def test_a_one_megabyte_string_is_refused_with_the_default_limit(
        self, client: TestClient, settings: Settings
    ) -> None:
        response = client.post("/api/v1/jobs", json=job_body(name="x" * 1_048_576))

        assert response.status_code == 413
        assert nothing_stored(settings)


class TestDataDirs:
    def test_a_dataset_outside_the_data_dirs_is_403(
        self, make_settings: MakeSettings, tmp_path: Path
    ) -> None:
        allowed = tmp_path / "allowed"
        allowed.mkdir()
        outside = write_jsonl(tmp_path / "outside.jsonl", [{"text": "secret"}])
        settings = make_settings(data_dirs=[allowed])
        with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
            answers = [
                client.post("/api/v1/jobs", json=job_body(dataset=path))
                for path in (
                    str(outside),  # exists, outside
                    "/etc/passwd.jsonl",  # does not exist: 403 all the same, nothing revealed
                    str(allowed / ".." / "outside.jsonl"),  # climbs out
                    str(SAMPLE_SFT),  # the samples are not allowed when data_dirs is set
                )
            ]
            inside = client.post(
                "/api/v1/jobs",
                json=job_body(dataset=str(write_jsonl(allowed / "ok.jsonl", [{"text": "a"}]))),
            )

        for response in answers:
            assert response.status_code == 403, response.text
            assert response.json()["detail"]["code"] == "path_not_allowed"
            assert "secret" not in response.text
        assert inside.status_code == 202

    def test_a_link_inside_that_leads_outside_is_403(
        self, make_settings: MakeSettings, tmp_path: Path
    ) -> None:
        allowed = tmp_path / "allowed"
        allowed.mkdir()
        target = write_jsonl(tmp_path / "target.jsonl", [{"text": "a"}])
        os.symlink(target, allowed / "link.jsonl")
        settings = make_settings(data_dirs=[allowed])
        with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
            response = client.post(
                "/api/v1/jobs", json=job_body(dataset=str(allowed / "link.jsonl"))
            )
            validation = client.post(
                "/api/v1/jobs",
                json=job_body(
                    dataset=str(write_jsonl(allowed / "ok.jsonl", [{"text": "a"}])),
                    validation_dataset=str(target),
                ),
            )

        assert response.status_code == 403
        assert validation.status_code == 403
        assert "Validation dataset" in validation.json()["detail"]["msg"]
        assert nothing_stored(settings)

    def test_defaults_are_the_homes_data_dir_and_the_samples(self, tmp_path: Path) -> None:
        settings = Settings(_env_file=None, home=tmp_path / "home")  # type: ignore[call-arg]

        assert settings.data_dirs == [
            (tmp_path / "home" / "data").resolve(),
            SAMPLE_SFT.parent.resolve(),
        ]

    def test_the_environment_gives_a_comma_separated_list(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AINFINITY_DATA_DIRS", f"{tmp_path}/a, {tmp_path}/b")
        settings = Settings(_env_file=None, home=tmp_path)  # type: ignore[call-arg]

        assert settings.data_dirs == [(tmp_path / "a").resolve(), (tmp_path / "b").resolve()]
