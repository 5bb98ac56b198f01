"""Large files stream from disk: uploading one, reading it back and reading a job's large log,
with several clients at once, leave the server's peak memory where it was."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from tests.builders import job_body
from tests.fine_tuning.conftest import ADMIN_KEY, ALICE_KEY, ft_server_at, sdk
from tests.servers import UvicornServer

pytestmark = pytest.mark.timeout(300)

MB = 1024 * 1024
LOG_BYTES = 200 * MB
UPLOAD_BYTES = 64 * MB
READERS = 4
# Python, uvicorn and the app hold far less than this; one file read whole would pass it.
ALLOWED_GROWTH = 40 * MB


def peak_rss(server: UvicornServer) -> int:
    """The highest resident memory (VmHWM) any of the server's processes has reached."""
    assert server.process is not None
    pids = {server.process.pid, *server.worker_pids()}
    peaks = []
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        peaks.append(int(line.split()[1]) * 1024)
    return max(peaks)


def read_all(server: UvicornServer, path: str, key: str, sizes: list[int]) -> None:
    total = 0
    with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=120) as client:
        with client.stream("GET", path) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                total += len(chunk)
    sizes.append(total)


def read_concurrently(server: UvicornServer, path: str, key: str) -> list[int]:
    sizes: list[int] = []
    threads = [
        threading.Thread(target=read_all, args=(server, path, key, sizes)) for _ in range(READERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sizes


def write_log(path: Path, size: int) -> int:
    line = b"step 1234/99999 | loss 1.2345 | lr 1.00e-04 | 5000 tokens/s | ETA 0:01:00\n"
    block = line * (MB // len(line))
    written = 0
    with open(path, "wb") as fh:
        while written < size:
            fh.write(block)
            written += len(block)
    return written


def test_large_uploads_contents_and_logs_keep_memory_flat(tmp_path: Path) -> None:
    server = ft_server_at(
        tmp_path, AINFINITY_MAX_UPLOAD_BYTES=str(2 * UPLOAD_BYTES), AINFINITY_LOCAL_MAX_JOBS="0"
    )
    row = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "x" * 200},
                {"role": "assistant", "content": "y"},
            ]
        }
    )
    upload = tmp_path / "big.jsonl"
    with open(upload, "w") as fh:
        fh.write((row + "\n") * (UPLOAD_BYTES // (len(row) + 1)))
    with server:
        with server.client(ADMIN_KEY) as api:
            assert api.post("/api/v1/jobs", json=job_body(name="chatty")).status_code == 202
        log_size = write_log(server.home / "jobs" / "chatty" / "run.log", LOG_BYTES)
        with server.client(ADMIN_KEY) as api:  # warm: every route's code imported once
            assert api.get("/api/v1/jobs/chatty/logs", params={"tail": 5}).status_code == 200
        before = peak_rss(server)

        with upload.open("rb") as fh:
            created = sdk(server, ALICE_KEY).files.create(file=fh, purpose="fine-tune")
        assert created.status == "processed" and created.bytes == upload.stat().st_size
        after_upload = peak_rss(server)
        contents = read_concurrently(server, f"/v1/files/{created.id}/content", ALICE_KEY)
        after_contents = peak_rss(server)
        logs = read_concurrently(server, "/api/v1/jobs/chatty/logs", ADMIN_KEY)
        after_logs = peak_rss(server)

    assert contents == [created.bytes] * READERS
    assert logs == [log_size] * READERS
    growth = {
        "upload": after_upload - before,
        "contents": after_contents - before,
        "logs": after_logs - before,
    }
    print({k: f"{v / MB:.1f} MB" for k, v in growth.items()})
    assert all(value < ALLOWED_GROWTH for value in growth.values()), {
        k: f"{v / MB:.1f} MB" for k, v in growth.items()
    }
