"""The local executor: runs a job's rendered task on this machine, as one SkyPilot node would.

Each job is a `local_runner` process in its own session and process group, so it outlives
a server restart, and a cancel reaches every process the job started. Identity is
(pid, kernel start time), so a recycled pid is never mistaken for the job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ainfinity.core.config import Settings
from ainfinity.executors.protocol import Observation
from ainfinity.jobs.run_output import read_exit_status
from ainfinity.schema.job import JobRecord, JobStatus
from ainfinity.store.job_files import JobPaths, write_atomic

logger = logging.getLogger("ainfinity.local")


def detect_gpus() -> int:
    """NVIDIA GPUs visible to this machine, counted without importing torch."""
    try:
        return sum(1 for entry in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", entry))
    except OSError:
        return 0


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone (FileNotFoundError), or /proc unreadable
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
                members.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return members


def trainer_pids(pgid: int) -> list[int]:
    """The group's `python -m ainfinity.train.finetune` processes (its ranks), not a launcher
    that names the module in its own arguments (`--module ainfinity.train.finetune`)."""
    found = []
    for pid in _group_members(pgid):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        pairs = zip(args, args[1:], strict=False)
        if any(a == b"-m" and b == b"ainfinity.train.finetune" for a, b in pairs):
            found.append(pid)
    return found


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every process in a process group, from /proc."""
    total = 0
    for pid in _group_members(pgid):
        try:
            # statm's second field: resident pages.
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_SIZE
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return total


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class LocalExecutor:
    """Runs tasks as local process groups, `settings.local_max_jobs` at a time."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gpus = settings.local_gpus if settings.local_gpus is not None else detect_gpus()
        # Children this process started; polled so they never linger as zombies.
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self.notify: Callable[[], None] = lambda: None

    def capacity(self) -> int | None:
        return self.settings.local_max_jobs

    def launch(self, record: JobRecord, task: dict[str, Any], paths: JobPaths) -> dict[str, Any]:
        write_atomic(paths.run_script, task["run"].encode())
        paths.output.mkdir(exist_ok=True)
        with open(paths.log, "ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ainfinity.executors.local_runner",
                    str(paths.run_script),
                    str(paths.exit_status),
                ],
                cwd=task["workdir"],
                env=self._environment(task, paths),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self._children[process.pid] = process
        threading.Thread(
            target=self._wake_on_exit, args=(process,), name=f"wait-{record.name}", daemon=True
        ).start()
        logger.info("launched job", extra={"job": record.name, "pid": process.pid})
        return {
            "pid": process.pid,
            "pgid": process.pid,
            "start_ticks": process_start_ticks(process.pid),
        }

    def _wake_on_exit(self, process: subprocess.Popen[bytes]) -> None:
        # A job this server started is seen to end at once, not on the next tick.
        process.wait()
        self.notify()

    def _environment(self, task: dict[str, Any], paths: JobPaths) -> dict[str, str]:
        # The server's own settings (API keys above all) are not the job's business.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AINFINITY_")}
        env.update({str(k): str(v) for k, v in (task.get("envs") or {}).items()})
        env.update(
            {
                # What SkyPilot sets on a one-node cluster.
                "SKYPILOT_NODE_RANK": "0",
                "SKYPILOT_NODE_IPS": "127.0.0.1",
                "SKYPILOT_NUM_NODES": "1",
                "SKYPILOT_NUM_GPUS_PER_NODE": str(self.gpus),
                "SKYPILOT_TASK_ID": f"ainfinity-local-{task['name']}",
                "AINFINITY_METRICS_FILE": str(paths.metrics),
                # Built-in models unpacked once, for every job (ainfinity.train.builtin_models).
                "AINFINITY_MODEL_CACHE": str(self.settings.home / "models"),
                # Run with this server's interpreter and tools (python, deepspeed).
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            }
        )
        return env

    def _alive(self, state: dict[str, Any]) -> bool:
        pid = state.get("pid")
        if not isinstance(pid, int):
            return False
        child = self._children.get(pid)
        if child is not None:
            if child.poll() is None:
                return True
            del self._children[pid]
            return False
        ticks = process_start_ticks(pid)
        return ticks is not None and ticks == state.get("start_ticks")

    def observe(self, record: JobRecord, paths: JobPaths) -> Observation:
        state = record.executor_state
        if self._alive(state):
            return Observation(
                finished=False, status=JobStatus.RUNNING, state=self._memory_change(state)
            )
        # The runner is gone; take down anything of the job's it left behind.
        self._signal_group(state, signal.SIGKILL)
        exit_status = read_exit_status(paths.exit_status)
        returncode = exit_status.get("returncode") if exit_status else None
        return Observation(
            finished=True, returncode=returncode if isinstance(returncode, int) else None
        )

    def pause(self, record: JobRecord, paths: JobPaths) -> None:
        """SIGUSR1 to the job's trainer processes only: under the deepspeed launcher, a
        signal to the whole group would make the launcher kill its ranks mid-save."""
        pgid = record.executor_state.get("pgid")
        if not isinstance(pgid, int) or not self._alive(record.executor_state):
            return
        for pid in trainer_pids(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGUSR1)

    def _memory_change(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """The job's resident memory when it moved by 5 % or more since it was last stored
        (a job killed for memory is then reported with what it had)."""
        pgid = state.get("pgid")
        if not isinstance(pgid, int):
            return None
        rss = group_rss_bytes(pgid)
        last = state.get("rss_bytes")
        if not rss or (isinstance(last, int) and abs(rss - last) < 0.05 * last):
            return None
        peak = state.get("peak_rss_bytes")
        return {"rss_bytes": rss, "peak_rss_bytes": max(rss, peak if isinstance(peak, int) else 0)}

    def cancel(self, record: JobRecord, paths: JobPaths, *, force: bool) -> None:
        if self._alive(record.executor_state):
            self._signal_group(record.executor_state, signal.SIGKILL if force else signal.SIGTERM)

    def _signal_group(self, state: dict[str, Any], signum: int) -> None:
        pgid = state.get("pgid")
        if isinstance(pgid, int) and pgid > 1:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signum)

    def refresh(self, records: Sequence[JobRecord]) -> None:
        pass  # each job's process is looked at directly in `observe`

    def reap(self) -> None:
        # poll() collects an exited child (no zombie) and caches its status for observe().
        for child in self._children.values():
            child.poll()
