"""Health, docs, auth, rate limiting, request ids and CORS, over HTTP."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from ainfinity.api.main import create_app
from tests.builders import API_KEY, OTHER_KEY, job_body
from tests.conftest import MakeSettings

# Every /api/v1 route, with a body where it takes one.
ROUTES = [
    ("POST", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/some-job"),
    ("POST", "/api/v1/jobs/some-job/cancel"),
    ("DELETE", "/api/v1/jobs/some-job"),
    ("GET", "/api/v1/jobs/some-job/logs"),
    ("GET", "/api/v1/jobs/some-job/events"),
    ("GET", "/api/v1/jobs/some-job/metrics"),
    ("GET", "/api/v1/jobs/some-job/task"),
]


class TestHealthAndDocs:
    def test_health_needs_no_key(self, client: TestClient) -> None:
        response = client.get("/health", headers={"X-API-Key": ""})
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    def test_openapi_declares_both_key_schemes(self, client: TestClient) -> None:
        spec = client.get("/openapi.json").json()
        schemes = spec["components"]["securitySchemes"]
        assert schemes["ApiKeyHeader"] == {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "The API key, as `X-API-Key: <key>`.",
        }
        assert schemes["BearerKey"]["scheme"] == "bearer"
        assert {"ApiKeyHeader": []} in spec["paths"]["/api/v1/jobs"]["post"]["security"]

    def test_swagger_ui_is_served(self, client: TestClient) -> None:
        response = client.get("/docs")
        assert response.status_code == 200
        assert "swagger-ui" in response.text


class TestAuth:
    @pytest.mark.parametrize(("method", "path"), ROUTES)
    def test_no_key_is_401(self, client: TestClient, method: str, path: str) -> None:
        response = client.request(method, path, headers={"X-API-Key": ""}, json=job_body())
        assert response.status_code == 401
        assert response.json()["detail"]["code"] == "unauthorized"

    @pytest.mark.parametrize(("method", "path"), ROUTES)
    def test_wrong_key_is_401(self, client: TestClient, method: str, path: str) -> None:
        response = client.request(
            method, path, headers={"X-API-Key": "wrong-key-0123456789"}, json=job_body()
        )
        assert response.status_code == 401
        assert response.json()["detail"]["code"] == "unauthorized"

    def test_bearer_key_is_accepted(self, client: TestClient) -> None:
        headers = {"X-API-Key": "", "Authorization": f"Bearer {API_KEY}"}
        assert client.get("/api/v1/jobs", headers=headers).status_code == 200

    def test_both_headers_with_the_same_key_are_accepted(self, client: TestClient) -> None:
        headers = {"X-API-Key": API_KEY, "Authorization": f"Bearer {API_KEY}"}
        assert client.get("/api/v1/jobs", headers=headers).status_code == 200

    def test_both_headers_with_different_keys_are_401(self, client: TestClient) -> None:
        headers = {"X-API-Key": API_KEY, "Authorization": f"Bearer {OTHER_KEY}"}
        response = client.get("/api/v1/jobs", headers=headers)
        assert response.status_code == 401

    def test_wrong_bearer_is_401(self, client: TestClient) -> None:
        headers = {"X-API-Key": "", "Authorization": "Bearer not-the-key-0123456"}
        assert client.get("/api/v1/jobs", headers=headers).status_code == 401

    def test_keys_never_reach_the_logs(
        self, client: TestClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        logging.getLogger("ainfinity").propagate = True
        try:
            with caplog.at_level(logging.DEBUG):
                client.get("/api/v1/jobs")
                client.get("/api/v1/jobs", headers={"X-API-Key": "wrong-key-0123456789"})
                client.post("/api/v1/jobs", json=job_body(name="logged-job"))
        finally:
            logging.getLogger("ainfinity").propagate = False
        text = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
        assert "GET /api/v1/jobs 200" in text  # the request log line is there...
        assert API_KEY not in text  # ...without the key
        assert "wrong-key-0123456789" not in text

    def test_server_generates_a_key_when_none_is_configured(
        self, make_settings: MakeSettings
    ) -> None:
        settings = make_settings(api_keys="")
        with TestClient(create_app(settings)) as client:
            key_file = settings.home / "api_key"
            key = key_file.read_text().strip()
            assert key_file.stat().st_mode & 0o777 == 0o600
            assert client.get("/api/v1/jobs", headers={"X-API-Key": key}).status_code == 200
        # A second start keeps the same key.
        with TestClient(create_app(settings)) as client:
            assert client.get("/api/v1/jobs", headers={"X-API-Key": key}).status_code == 200


class TestRateLimit:
    def test_limit_answers_429_with_retry_after(self, make_settings: MakeSettings) -> None:
        settings = make_settings(rate_limit="3/minute")
        with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
            statuses = [client.get("/api/v1/jobs").status_code for _ in range(3)]
            assert statuses == [200, 200, 200]
            limited = client.get("/api/v1/jobs/whatever")
            assert limited.status_code == 429
            assert limited.json()["detail"]["code"] == "rate_limited"
            assert 0 < int(limited.headers["Retry-After"]) <= 61
            # The budget is per key: another key still gets through.
            other = client.get("/api/v1/jobs", headers={"X-API-Key": OTHER_KEY})
            assert other.status_code == 200
            # Health checks are never limited.
            assert client.get("/health").status_code == 200


class TestRequestId:
    def test_a_valid_request_id_is_echoed(self, client: TestClient) -> None:
        response = client.get("/api/v1/jobs", headers={"X-Request-ID": "abc-123"})
        assert response.headers["X-Request-ID"] == "abc-123"

    def test_a_request_id_is_made_when_missing_or_unsafe(self, client: TestClient) -> None:
        response = client.get("/api/v1/jobs", headers={"X-Request-ID": "bad id\twith tab"})
        assert response.headers["X-Request-ID"] != "bad id\twith tab"
        assert len(response.headers["X-Request-ID"]) == 32


class TestCors:
    def test_configured_origin_is_allowed(self, make_settings: MakeSettings) -> None:
        settings = make_settings(cors_origins="https://ui.example.com")
        with TestClient(create_app(settings)) as client:
            response = client.options(
                "/api/v1/jobs",
                headers={
                    "Origin": "https://ui.example.com",
                    "Access-Control-Request-Method": "GET",
                },
            )
            assert response.headers["access-control-allow-origin"] == "https://ui.example.com"
            response = client.options(
                "/api/v1/jobs",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
            )
            assert "access-control-allow-origin" not in response.headers

    def test_no_cors_headers_by_default(self, client: TestClient) -> None:
        response = client.get("/health", headers={"Origin": "https://ui.example.com"})
        assert "access-control-allow-origin" not in response.headers

    def test_wildcard_never_goes_with_credentials(self, make_settings: MakeSettings) -> None:
        with TestClient(create_app(make_settings(cors_origins="*"))) as client:
            response = client.get("/health", headers={"Origin": "https://any.example"})
            assert response.headers["access-control-allow-origin"] == "*"
            assert "access-control-allow-credentials" not in response.headers


class TestRequestLog:
    def test_json_lines_carry_the_request_fields(
        self, make_settings: MakeSettings, capsys: pytest.CaptureFixture[str]
    ) -> None:
        settings = make_settings(log_format="json")
        with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
            client.get("/api/v1/jobs/absent", headers={"X-Request-ID": "req-42"})
        lines = [line for line in capsys.readouterr().err.splitlines() if '"req-42"' in line]
        assert len(lines) == 1
        record = json.loads(lines[0])
        assert record["method"] == "GET" and record["path"] == "/api/v1/jobs/absent"
        assert record["status"] == 404 and record["request_id"] == "req-42"
        assert record["latency_ms"] >= 0 and record["level"] == "INFO"
        assert API_KEY not in lines[0]
