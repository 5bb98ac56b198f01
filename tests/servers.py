"""Real servers for tests: `uvicorn ainfinity.api.main:app --workers N` on loopback, and a
throwaway `redis-server`.

    server = UvicornServer(tmp_path / "home", workers=4, env={"AINFINITY_LOCAL_MAX_JOBS": "0"})
    with server:                      # start(): waits until /health answers and every
        with server.client() as api:  # worker has finished its start-up
            api.post("/api/v1/jobs", json=job_body(name="a"))
        server.kill()                 # SIGKILL to the whole process group, mid-anything
        server.start()                # again, on the same home (and a fresh port)
    # leaving the block stops it (SIGTERM, then SIGKILL for anything left)

Every uvicorn line in the server's log (`server.log_path`) starts with `pid=<worker pid>`,
so a test can tell which worker served which request (`served_by`).
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

from tests.builders import API_KEY, OTHER_KEY, ROOT

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

_STARTED = re.compile(r"^pid=(\d+) INFO: +Application startup complete\.", re.MULTILINE)
_ACCESS = re.compile(r'^pid=(\d+) INFO: +\S+ - "(\S+) (\S+) HTTP/[\d.]+" (\d{3})', re.MULTILINE)

# uvicorn's own formatters, with the worker's pid in front of every line.
_LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {
            "()": "uvicorn.logging.DefaultFormatter",
            "fmt": "pid=%(process)d %(levelprefix)s %(message)s",
            "use_colors": False,
        },
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": 'pid=%(process)d %(levelprefix)s %(client_addr)s - "%(request_line)s" '
            "%(status_code)s",
            "use_colors": False,
        },
    },
    "handlers": {
        "default": {"class": "logging.StreamHandler", "formatter": "default"},
        "access": {"class": "logging.StreamHandler", "formatter": "access"},
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(home: Path, **overrides: str) -> dict[str, str]:
    """The environment of a test server: this process's, plus a store under `home`, the
    test keys (`tester` = API_KEY, `other` = OTHER_KEY, both admin), no practical rate
    limit, no job launched (`AINFINITY_LOCAL_MAX_JOBS=0`) and no token lengths measured
    (that starts the inference worker), then `overrides`."""
    return {
        **os.environ,
        "AINFINITY_HOME": str(home),
        "AINFINITY_API_KEYS": f"tester:{API_KEY},other:{OTHER_KEY}",
        "AINFINITY_RATE_LIMIT": "100000/minute",
        "AINFINITY_LOCAL_MAX_JOBS": "0",
        "AINFINITY_LOCAL_GPUS": "0",
        "AINFINITY_TOKEN_STATS": "false",
        "AINFINITY_WEBHOOK_HOSTS": "127.0.0.1,localhost",
        "AINFINITY_LOG_FORMAT": "text",
        **overrides,
    }


class UvicornServer:
    """One uvicorn process group serving the app from the environment; restartable.

    `env` overrides `server_env`'s defaults. Each `start()` takes a fresh free port (a
    killed server's port may linger), so read `url` after it. Jobs the local executor
    launches run in sessions of their own and outlive `kill()`, like in production.
    """

    def __init__(
        self,
        home: Path,
        *,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path = ROOT,
        prefix: Sequence[str] = (),
    ) -> None:
        self.home = home
        # Runs the server through another command (`unshare ...`), which execs uvicorn.
        self.prefix = list(prefix)
        self.workers = workers
        self.env = server_env(home, **(env or {}))
        self.log_path = log_path or home.parent / f"uvicorn-{home.name}.log"
        self.cwd = cwd
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        """Start, then wait until /health answers and all workers report start-up done."""
        assert self.process is None, "already started"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        config = self.log_path.with_name(self.log_path.name + ".config.json")
        config.write_text(json.dumps(_LOG_CONFIG))
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.port = free_port()
        command = [
            *self.prefix, sys.executable, "-m", "uvicorn", "ainfinity.api.main:app",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers), "--log-config", str(config),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            # Its own session: kill() reaches the supervisor and every worker at once.
            self.process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"uvicorn exited with {self.process.returncode}")
            if len(self.worker_pids()) >= self.workers and self._healthy():
                return
            time.sleep(0.2)
        self._fail(f"uvicorn did not start {self.workers} workers in {timeout:.0f} s")

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown (SIGTERM to the supervisor), SIGKILL for anything left."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL the supervisor and all its workers together; return once all are gone."""
        if self.process is None:
            return
        process, self.process = self.process, None
        group = process.pid  # start_new_session: the group id is the supervisor's pid
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)
        # Orphaned workers are reaped by init; wait until none is left in the group.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError(f"processes of group {group} survived SIGKILL")

    def restart(self, timeout: float = 90.0) -> None:
        self.stop()
        self.start(timeout)

    def __enter__(self) -> UvicornServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- talking to it ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.port is not None, "not started"
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str = API_KEY, **kwargs: Any) -> httpx.Client:
        """An httpx client for this server, authenticated with `key`."""
        kwargs.setdefault("timeout", 60)
        return httpx.Client(base_url=self.url, headers={"X-API-Key": key}, **kwargs)

    # -- its log ---------------------------------------------------------------------------

    def log(self, since_start: bool = True) -> str:
        """The server's output (since the last `start()`, or all of it)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset if since_start else 0)
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def worker_pids(self) -> set[int]:
        """Workers that completed their start-up since the last `start()`."""
        return {int(pid) for pid in _STARTED.findall(self.log())}

    def served_by(self, path: str, method: str = "GET") -> collections.Counter[int]:
        """How many `method` requests whose path (with query) starts with `path` each worker
        answered, since the last `start()`."""
        counts: collections.Counter[int] = collections.Counter()
        for pid, verb, target, _status in _ACCESS.findall(self.log()):
            if verb == method and target.startswith(path):
                counts[int(pid)] += 1
        return counts

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def _fail(self, why: str) -> None:
        tail = self.log()[-4000:]
        self.kill()
        raise AssertionError(f"{why}; its log ends with:\n{tail}")


# -- redis ---------------------------------------------------------------------------------


def require_redis_server() -> str:
    """The redis-server binary; skipped locally without one, a failure under CI."""
    if not os.access(REDIS_SERVER, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"{REDIS_SERVER} is missing; CI installs Debian's redis-server package")
        pytest.skip(f"{REDIS_SERVER} is not installed (apt-get install redis-server)")
    return REDIS_SERVER


@contextmanager
def redis_server(directory: Path, timeout: float = 20.0) -> Iterator[str]:
    """A private redis-server on a free loopback port, no persistence; yields its URL."""
    binary = require_redis_server()
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        binary, "--save", "", "--appendonly", "no", "--bind", "127.0.0.1",
        "--port", str(port), "--dir", str(directory),
    ]  # fmt: skip
    with open(directory / "redis.log", "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_redis(port, process, timeout)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_for_redis(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"redis-server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"redis-server did not answer on port {port} in {timeout:.0f} s")
