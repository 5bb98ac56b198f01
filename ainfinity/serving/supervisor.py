"""The babysitter: starts the inference worker on first use, checks its health, and restarts
it with back-off when it crashes or stops answering.

One worker serves every API process of a server. The process that first needs it takes an
`flock` on `serving/supervisor.lock`, starts the worker as its child and supervises it; the
others read `serving/worker.json` and talk to the same unix socket. If the supervising
process dies, its worker follows it (it watches its parent) and the next process that needs
a worker takes the lock over.

A local deployment's worker is babysat the same way, from a directory of its own, with its
model pinned (loaded at start, never evicted).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from ainfinity.core.config import Settings
from ainfinity.core.event_wait import wait_event
from ainfinity.exceptions import WorkerUnavailable
from ainfinity.executors.local import process_start_ticks
from ainfinity.jobs.run_output import tail_bytes
from ainfinity.schema.model import WorkerCrash
from ainfinity.serving.model_source import ModelSource
from ainfinity.store.job_files import write_atomic

logger = logging.getLogger("ainfinity.serving")

_UNIX_PATH_MAX = 100  # sun_path holds 108 bytes; keep a margin
_BACKOFF_FIRST, _BACKOFF_MAX = 0.5, 30.0
_HEALTHY_RESETS_AFTER = 60.0  # seconds of health that forgive earlier crashes
_MISSED_HEALTH_CHECKS = 3
_STOP_GRACE = 5.0


def socket_path_for(directory: Path) -> Path:
    """`directory/worker.sock`, or a private directory in /tmp when that path is too long
    for a unix socket (the same one for every process of a server)."""
    path = directory / "worker.sock"
    if len(os.fsencode(path)) <= _UNIX_PATH_MAX:
        return path
    digest = hashlib.sha256(os.fsencode(directory)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ainfinity-{digest}" / "worker.sock"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


class WorkerSupervisor:
    """The worker of this server, as seen from one API process."""

    def __init__(
        self,
        settings: Settings,
        *,
        directory: Path | None = None,
        pinned: ModelSource | None = None,
    ) -> None:
        self.settings = settings
        self.dir = directory or settings.home / "serving"
        self.pinned = pinned
        self.socket_path = socket_path_for(self.dir)
        self.state_path = self.dir / "worker.json"
        self.log_path = self.dir / "worker.log"
        self.status = "stopped"
        self.generation = 0
        self.restarts = 0
        self.crashes: deque[WorkerCrash] = deque(maxlen=20)
        self.started_at: datetime | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        # Bound to the event loop of the app's lifespan (a test may run several in turn).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self._consecutive = 0
        self._next_start = 0.0
        self._healthy_since: float | None = None
        self._start_monotonic: float | None = None
        self._missed = 0

    # -- what requests call ----------------------------------------------------------------

    async def ready(self) -> int:
        """Wait until a worker answers; start one if none runs. Returns its generation (it
        changes with every start, so a client knows to drop old connections)."""
        deadline = time.monotonic() + self.settings.serve_start_timeout_seconds
        while True:
            if self._owner():
                if self.status == "ready":
                    return self.generation
                if self.status in ("stopped", "failed"):
                    self._consecutive = 0
                    self._start()
            else:
                shared = self._read_shared()
                if shared is not None and shared.get("status") == "ready":
                    return int(shared["generation"])
                self._want()
                if self._take_lock():
                    continue  # the owner now: start it on the next turn
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerUnavailable(
                    "The inference worker did not become ready in "
                    f"{self.settings.serve_start_timeout_seconds:g} s; see GET /api/v1/serving."
                )
            if self._owner() and self.status == "failed":
                raise WorkerUnavailable(self._failure_message())
            self._event("ready").clear()
            await wait_event(self._event("ready"), min(remaining, 0.25))

    def notify_broken(self) -> None:
        """A request saw the worker's connection drop: look at it now."""
        self._event("changed").set()

    def shared_state(self) -> dict[str, Any]:
        """What the status route shows: this process's view when it supervises, else the
        supervising process's `worker.json`."""
        if self._owner() or not self.state_path.exists():
            return self._state()
        return self._read_shared() or self._state()

    # -- the babysitter loop ----------------------------------------------------------------

    async def run_forever(self) -> None:
        interval = self.settings.serve_health_interval_seconds
        while True:
            self._event("changed").clear()
            try:
                await self._tick()
            except Exception:
                logger.exception("supervisor pass failed")
            wait = 0.1 if self.status in ("starting", "restarting") else interval
            await wait_event(self._event("changed"), wait)

    async def _tick(self) -> None:
        if not self._owner():
            if self.dir.joinpath("wanted").exists() and not self._shared_alive():
                self._take_lock()
            if not self._owner():
                return
        process = self._process
        if process is not None and process.poll() is not None:
            self._crashed(_describe_exit(process.returncode))
        if self.status == "restarting" and time.monotonic() >= self._next_start:
            self._start()
        elif self.status in ("starting", "ready"):
            await self._check_health()
        elif self.status == "stopped" and self.dir.joinpath("wanted").exists():
            self._start()

    async def _check_health(self) -> None:
        healthy = await self._ping()
        now = time.monotonic()
        if healthy:
            self._missed = 0
            if self.status == "starting":
                self._set_status("ready")
                self._healthy_since = now
                logger.info("inference worker ready (pid %s)", self._pid())
            elif self._healthy_since and now - self._healthy_since > _HEALTHY_RESETS_AFTER:
                self._consecutive = 0
            return
        if self.status == "starting":
            if now - (self._start_monotonic or now) > self.settings.serve_start_timeout_seconds:
                self._kill(f"did not answer within {self.settings.serve_start_timeout_seconds:g} s")
            return
        self._missed += 1
        if self._missed >= _MISSED_HEALTH_CHECKS:
            self._kill(f"missed {self._missed} health checks in a row")

    async def _ping(self) -> bool:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket_path))
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://worker", timeout=2.0
            ) as client:
                response = await client.get("/health")
            return response.status_code == 200
        except httpx.HTTPError:
            return False

    # -- starting and stopping ---------------------------------------------------------------

    def _start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # uvicorn makes the socket world-writable: its directory keeps everyone else out.
        self.socket_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.socket_path.parent, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AINFINITY_")}
        settings = self.settings
        # Models load from this server's files only; a worker never reaches a hub.
        env.update(
            HF_HUB_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            PYTHONUNBUFFERED="1",
            # The jobs' cache of built-in models (ainfinity.train.builtin_models).
            AINFINITY_MODEL_CACHE=str(settings.home / "models"),
        )
        command = [
            sys.executable, "-m", "ainfinity.serving.worker",
            "--socket", str(self.socket_path),
            "--max-models", "1" if self.pinned else str(settings.serve_max_models),
            "--default-max-tokens", str(settings.serve_default_max_tokens),
            "--token-timeout", str(settings.serve_token_timeout_seconds),
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        if self.pinned is not None:
            # An argument list, never a shell: the model's id and paths stay data.
            command += ["--pin-model", self.pinned.to_json()]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        threading.Thread(
            target=self._wake_on_exit, args=(self._process, asyncio.get_running_loop()),
            name="worker-wait", daemon=True,
        ).start()  # fmt: skip
        self.generation += 1
        self.started_at = _now()
        self._start_monotonic = time.monotonic()
        self._missed = 0
        self._set_status("starting")
        logger.info("starting the inference worker (pid %s)", self._process.pid)

    def _wake_on_exit(
        self, process: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop
    ) -> None:
        process.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server stopped
            loop.call_soon_threadsafe(self.notify_broken)

    def _crashed(self, reason: str) -> None:
        tail = tail_bytes(self.log_path, 12).decode("utf-8", errors="replace").splitlines()
        self.crashes.append(WorkerCrash(time=_now(), reason=reason, log_tail=tail))
        self._process = None
        self._healthy_since = None
        if self._consecutive >= self.settings.serve_max_restarts:
            logger.error("inference worker %s; giving up after %d restarts", reason, self.restarts)
            self._set_status("failed")
            return
        delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2**self._consecutive)
        self._consecutive += 1
        self.restarts += 1
        self._next_start = time.monotonic() + delay
        logger.warning("inference worker %s; restarting in %.1f s", reason, delay)
        self._set_status("restarting")

    def _kill(self, reason: str) -> None:
        process = self._process
        if process is None:
            return
        logger.warning("inference worker %s; killing it", reason)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self._crashed(reason)

    async def stop(self) -> None:
        """Stop the worker if this process supervises it (server shutdown)."""
        process = self._process
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + _STOP_GRACE
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            self._process = None
            self._set_status("stopped")
            with contextlib.suppress(FileNotFoundError):
                self.dir.joinpath("wanted").unlink()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- sharing with the server's other processes ------------------------------------------

    def _event(self, name: str) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._events = {"changed": asyncio.Event(), "ready": asyncio.Event()}
        return self._events[name]

    def _owner(self) -> bool:
        return self._lock_fd is not None

    def _take_lock(self) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.dir / "supervisor.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def want(self) -> None:
        """Ask for the worker to run: whichever process may supervise it starts it."""
        self._want()

    def unwant(self) -> None:
        """No process is to start the worker again (a stopped deployment's)."""
        with contextlib.suppress(FileNotFoundError):
            self.dir.joinpath("wanted").unlink()

    def _want(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir.joinpath("wanted").touch()

    def _pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _set_status(self, status: str) -> None:
        self.status = status
        write_atomic(self.state_path, json.dumps(self._state()).encode())
        if status in ("ready", "failed"):
            self._event("ready").set()

    def _state(self) -> dict[str, Any]:
        pid = self._pid()
        return {
            "status": self.status,
            "pid": pid,
            "start_ticks": process_start_ticks(pid) if pid else None,
            "generation": self.generation,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "restarts": self.restarts,
            "crashes": [crash.model_dump(mode="json") for crash in self.crashes],
        }

    def _read_shared(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.state_path.read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(state, dict):
            return None
        if state.get("status") == "ready" and not self._alive(state):
            return {**state, "status": "stopped"}
        return state

    def _shared_alive(self) -> bool:
        state = self._read_shared()
        return state is not None and self._alive(state)

    @staticmethod
    def _alive(state: dict[str, Any]) -> bool:
        pid = state.get("pid")
        return isinstance(pid, int) and process_start_ticks(pid) == state.get("start_ticks")

    def _failure_message(self) -> str:
        last = self.crashes[-1].reason if self.crashes else "it could not start"
        return (
            f"The inference worker is down: {last}, {self.restarts} restarts. The next request "
            "tries again; its log is in $AINFINITY_HOME/serving/worker.log."
        )
