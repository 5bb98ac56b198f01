"""A loopback-only network namespace, the only place the harness runs SkyPilot and Slurm.

`unshare --net` starts an anchor process in a fresh network namespace that has nothing but
`lo`; every other process enters it with `nsenter --net=/proc/<anchor>/ns/net`, and whatever
those processes start stays inside, so no packet can leave the machine. Teardown finds the
namespace's processes by PID (each process's `/proc/<pid>/ns/net` link names its namespace)
and kills exactly those, however a test ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

# Inside the new namespace: bring lo up, and give it a second address. glibc's
# AI_ADDRCONFIG check ignores 127.0.0.1 itself, so with lo alone getaddrinfo() (which Slurm
# uses) fails with "Unable to resolve 127.0.0.1"; 127.0.0.2 is still loopback.
_ANCHOR_SCRIPT = (
    "set -e; ip link set lo up; ip addr add 127.0.0.2/8 dev lo; echo ready; exec sleep infinity"
)


class CommandTimeout(AssertionError):
    """A bounded command ran past its time limit (and was killed with its process group)."""


class LoopbackNamespace:
    """One network namespace with only `lo`; `start()`, run commands in it, `stop()`."""

    def __init__(self) -> None:
        self.anchor: subprocess.Popen[bytes] | None = None
        self.netns_id: str | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.anchor = subprocess.Popen(
            ["unshare", "--net", "--", "bash", "-c", _ANCHOR_SCRIPT],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.anchor.stdout is not None
        line = _read_line(self.anchor.stdout, timeout)
        if line.strip() != b"ready":
            _, err = self.anchor.communicate(timeout=5)
            raise RuntimeError(f"the network namespace did not come up: {err.decode()[-500:]}")
        self.netns_id = os.readlink(f"/proc/{self.anchor.pid}/ns/net")
        if self.netns_id == os.readlink("/proc/self/ns/net"):
            raise RuntimeError("unshare --net did not create a new network namespace")
        links = self.run(["ip", "-o", "link"], timeout=10).stdout.decode()
        names = {line.split(":")[1].strip() for line in links.splitlines() if ":" in line}
        if names != {"lo"}:  # the whole point: nothing but loopback in here
            raise RuntimeError(f"the namespace has interfaces other than lo: {sorted(names)}")

    @property
    def netns_path(self) -> str:
        assert self.anchor is not None, "namespace not started"
        return f"/proc/{self.anchor.pid}/ns/net"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """`argv` as a command that runs inside the namespace."""
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log: IO[bytes] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in the namespace, in a session of its own."""
        return subprocess.Popen(
            self.wrap(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command in the namespace and wait for it, for at most `timeout` seconds."""
        return run_bounded(self.wrap(argv), timeout=timeout, env=env, check=check, cwd=cwd)

    def pids(self) -> list[int]:
        """Every process in the namespace except the anchor."""
        if self.netns_id is None:
            return []
        anchor = self.anchor.pid if self.anchor is not None else None
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in (anchor, os.getpid()):
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == self.netns_id:
                    found.append(int(entry))
            except OSError:
                continue  # gone meanwhile, or a kernel thread
        return found

    def stop(self, grace: float = 5.0) -> None:
        """Kill every process in the namespace (SIGTERM, then SIGKILL), then the anchor.

        Several rounds, because a dying process may start another (a Slurm step's cleanup,
        SkyPilot's daemons)."""
        deadline = time.monotonic() + grace
        for pid in self.pids():
            _signal(pid, signal.SIGTERM)
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(20):
            left = self.pids()
            if not left:
                break
            for pid in left:
                _signal(pid, signal.SIGKILL)
            time.sleep(0.1)
        else:
            left = [_describe(pid) for pid in self.pids()]
            raise RuntimeError(f"processes survive in the namespace: {left}")
        if self.anchor is not None:
            _signal(self.anchor.pid, signal.SIGKILL)
            self.anchor.wait(timeout=10)
            self.anchor = None


def run_bounded(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command for at most `timeout` s; on time-out its whole process group is killed.

    Several SkyPilot failure modes retry forever, so nothing here waits without a limit."""
    kwargs: dict[str, Any] = {"user": user} if user is not None else {}
    process = subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **kwargs,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        stdout, stderr = process.communicate()
        raise CommandTimeout(
            f"{' '.join(argv)} ran past {timeout:.0f} s; output ends with:\n"
            f"{(stdout + stderr).decode(errors='replace')[-3000:]}"
        ) from None
    result = subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited with {result.returncode}:\n"
            f"{(stdout + stderr).decode(errors='replace')[-3000:]}"
        )
    return result


def _read_line(stream: IO[bytes], timeout: float) -> bytes:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return b""
    return stream.readline()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            command = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = "?"
    return f"{pid} {command[:120]}"
