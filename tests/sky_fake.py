"""A recording stand-in for SkyPilot's API server, at the executor's SDK boundary.

It answers with SkyPilot's own types (`ManagedJobRecord`, `ManagedJobStatus`) and checks every
launched task with SkyPilot's own `Task.from_yaml_config` + `validate`, so only the cloud is
fake. Tests move jobs through SkyPilot's states with `set_status` and feed logs with `log`.

What it imitates was checked against SkyPilot 0.14.1 on a real Slurm cluster
(tests/sky_real/):
- `queue` fills in only the record fields asked for (`queue_v2(fields=...)`); the rest are
  None, as SkyPilot's default field set leaves `failure_reason` out;
- `node_line` writes a line as `tail_logs` streams it: coloured, behind its source
  (`(setup pid=N)` for `setup:`, `(<task name>, pid=N)` for `run:`), and the stream opens
  and closes with SkyPilot's own status lines;
- failure reasons are SkyPilot's (`FAILURE_*`): a tagged exception, hints, colour codes;
- `cancel` is accepted at once and the job shows CANCELLING until the test ends it (the real
  controller takes seconds to tear the cluster down before CANCELLED).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Sequence
from typing import Any

from ainfinity.executors.sky_catalog import validate_task

# Real failure reasons, as `queue_v2` returned them.
FAILURE_NO_PLACE = (
    "[sky.exceptions.ResourcesUnavailableError] Catalog does not contain any instances "
    "satisfying the request: 1x Slurm({'H100': 1}).\nTo fix: relax or change the resource "
    "requirements.\n\nHint: \x1b[1msky gpus list\x1b[0m to list available accelerators.\n"
    "      \x1b[1msky check\x1b[0m to check the enabled clouds.\nHint: Check Per Resource Hint\n"
)
FAILURE_USER_CODE = (
    "Job exited with exit code 1 (user program failure). To see the details, run: "
    "sky jobs logs --controller 4"
)
_STREAM_START = (
    "\x1b[2m├── \x1b[0m\x1b[2mWaiting for task resources on 1 node.\x1b[0m\n"
    "\x1b[2m└── \x1b[0mJob started. Streaming logs... \x1b[2m(Ctrl-C to exit log streaming; "
    "job will not be killed)\x1b[0m\n"
)


class RecordingSkyPilot:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        self.jobs: dict[int, Any] = {}
        self.logs: dict[int, str] = {}
        self.launch_error: Exception | None = None
        self.launch_gate = threading.Event()
        self.launch_gate.set()
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()
        self._next_id = 1

    # -- the SkyPilotSdk protocol -------------------------------------------------------------

    def launch(self, task: dict[str, Any], *, name: str) -> str:
        validate_task(task)  # SkyPilot's own check of what we render, as the server does it
        with self._lock:
            request_id = f"req-{len(self._names) + 1}"
            self._names[request_id] = name
            self.tasks[name] = task
            self.calls.append(("launch", name, request_id))
        return request_id

    def wait_launch(self, request_id: str) -> int:
        self.calls.append(("wait_launch", request_id))
        if not self.launch_gate.wait(timeout=30):
            raise TimeoutError("the test never opened the launch gate")
        if self.launch_error is not None:
            raise self.launch_error
        with self._lock:
            job_id = self._next_id
            self._next_id += 1
            self.jobs[job_id] = self._record(job_id, self._names[request_id], "PENDING")
        return job_id

    def queue(self, job_ids: Sequence[int], fields: Sequence[str]) -> list[Any]:
        with self._lock:
            self.calls.append(("queue", tuple(job_ids)))
            found = [self.jobs[j] for j in job_ids if j in self.jobs]
        # Like queue_v2: the fields not asked for come back empty.
        return [
            type(record).model_validate({f: getattr(record, f) for f in fields}) for record in found
        ]

    def cancel(self, job_ids: Sequence[int]) -> None:
        with self._lock:
            self.calls.append(("cancel", tuple(job_ids)))
        for job_id in job_ids:
            self.set_status(job_id, "CANCELLING")

    def tail_logs(self, job_id: int, sink: io.TextIOBase, *, follow: bool) -> None:
        self.calls.append(("tail_logs", job_id))
        sink.write(_STREAM_START)
        sent = 0
        while True:
            with self._lock:
                text = self.logs.get(job_id, "")
                record = self.jobs.get(job_id)
                done = record is None or record.status.is_terminal()
            if len(text) > sent:
                sink.write(text[sent:])
                sink.flush()
                sent = len(text)
            if done or not follow:
                break
            time.sleep(0.02)
        if record is not None and done:
            status = record.status.value
            sink.write(
                f"\x1b[0m\x1b[32m✓ Job finished (status: {status}).\x1b[0m\x1b[0m\n"
                f"\x1b[0m\x1b[32m✓ Managed job finished: {job_id} (status: {status}).\x1b[0m"
                "\x1b[0m\n"
            )

    # -- test controls -----------------------------------------------------------------------

    def set_status(self, job_id: int, status: str, **fields: Any) -> None:
        from sky.jobs.state import ManagedJobStatus

        with self._lock:
            self.jobs[job_id] = self.jobs[job_id].model_copy(
                update={"status": ManagedJobStatus(status), **fields}
            )

    def log(self, job_id: int, text: str) -> None:
        with self._lock:
            self.logs[job_id] = self.logs.get(job_id, "") + text

    def node_line(self, job_id: int, text: str, *, setup: bool = False) -> None:
        """Log one line the node printed, as SkyPilot streams it."""
        source = "setup pid=812" if setup else f"{self.jobs[job_id].job_name}, pid=901"
        self.log(job_id, f"\x1b[36m({source})\x1b[0m {text}\n")

    def job_id(self, name: str) -> int:
        with self._lock:
            return next(j for j, r in self.jobs.items() if r.job_name == name)

    def queue_calls(self) -> list[tuple[int, ...]]:
        return [call[1] for call in self.calls if call[0] == "queue"]

    @staticmethod
    def _record(job_id: int, name: str, status: str) -> Any:
        from sky.jobs.state import ManagedJobStatus
        from sky.schemas.api.responses import ManagedJobRecord

        return ManagedJobRecord(
            job_id=job_id,
            job_name=name,
            task_id=0,
            status=ManagedJobStatus(status),
            recovery_count=0,
            submitted_at=time.time(),
        )
