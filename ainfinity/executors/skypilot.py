"""Runs jobs as SkyPilot managed jobs: any cloud or Kubernetes, multi-node, spot recovery.

Nothing here blocks a request handler: the reconciler's thread submits launches and reads the
queue, and a launch's result, cancels and log streams are waited on in background threads that
wake the reconciler when they are done. What is needed to find a job again after a restart
(the launch request id, then the managed job id) is stored on the job as soon as it is known.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ainfinity.core.config import Settings
from ainfinity.executors.protocol import LaunchError, Observation
from ainfinity.executors.sky_log_sink import JobLogSink, strip_ansi
from ainfinity.executors.sky_sdk import SkyPilotSdk
from ainfinity.finops.prices import cluster_facts
from ainfinity.schema.job import JobRecord, JobStatus
from ainfinity.store.job_files import JobPaths

if TYPE_CHECKING:
    from sky.schemas.api.responses import ManagedJobRecord

logger = logging.getLogger("ainfinity.skypilot")

# How long a finished job may wait for its log stream to drain before it is reported finished.
LOG_DRAIN_SECONDS = 30.0
# What the executor reads of a managed-job record. `queue_v2` fills in only the fields it is
# asked for, and its default set leaves out `failure_reason`.
# Where the job runs and when (finops: cluster_facts) beside what tracking reads.
QUEUE_FIELDS = (
    "job_id", "job_name", "status", "failure_reason", "recovery_count",
    "cloud", "region", "accelerators", "start_at", "end_at",
)  # fmt: skip
# SkyPilot prefixes a failure with its exception's class: "[sky.exceptions.X] Catalog ...".
_EXCEPTION_TAG = re.compile(r"^\[[\w.]+\]\s*")

# SkyPilot's live states as ours (its PENDING and STARTING are both "not training yet").
_LIVE_STATUS = {
    "PENDING": JobStatus.STARTING,
    "STARTING": JobStatus.STARTING,
    "RUNNING": JobStatus.RUNNING,
    "WINDING_DOWN": JobStatus.RUNNING,
    "RECOVERING": JobStatus.RECOVERING,
    "CANCELLING": JobStatus.CANCELLING,
}
# Terminal failures, in words a user can act on.
_FAILURES = {
    "FAILED": ("job_failed", "the training process failed on the cluster"),
    "FAILED_SETUP": ("setup_failed", "the task's setup commands failed on the cluster"),
    "FAILED_PRECHECKS": (
        "prechecks_failed",
        "SkyPilot refused the task before launching it (resources or file mounts)",
    ),
    "FAILED_NO_RESOURCE": (
        "no_resource",
        "no cloud had the requested resources available (capacity or quota)",
    ),
    "FAILED_CONTROLLER": ("controller_failed", "SkyPilot's jobs controller failed"),
}


def plain_words(text: str, limit: int = 400) -> str:
    """SkyPilot's own words as one plain line: no colour codes, no hints, no class tags.

    Its failure reasons are written for a terminal: ANSI colours, several lines, and
    `Hint:` paragraphs that name `sky` commands a control plane's user cannot run."""
    kept = []
    for line in strip_ansi(text).splitlines():
        if line.strip().startswith("Hint:"):
            break
        kept.append(line)
    return _EXCEPTION_TAG.sub("", " ".join(" ".join(kept).split()))[:limit]


def describe_sky_error(exc: BaseException) -> str:
    """One plain line for a SkyPilot SDK failure, naming the usual causes."""
    kind = type(exc).__name__
    text = plain_words(str(exc)) or kind
    if kind == "NoCloudAccessError":
        return f"no cloud is enabled in SkyPilot (run `sky check`): {text}"
    if kind in ("ApiServerConnectionError", "ConnectionError", "ConnectError") or (
        "API server" in text
    ):
        return f"the SkyPilot API server cannot be reached: {text}"
    return f"{kind}: {text}"


@dataclass
class _Outcome:
    job_id: int | None = None
    error: str | None = None


class SkyPilotExecutor:
    """The `skypilot` executor: one managed job per ainfinity job."""

    name = "skypilot"

    def __init__(self, settings: Settings, sdk: SkyPilotSdk) -> None:
        self.settings = settings
        self.sdk = sdk
        self.notify: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._launches: dict[str, _Outcome | None] = {}  # request id -> outcome (None: waiting)
        self._records: dict[int, ManagedJobRecord] = {}
        self._polled_at = float("-inf")
        self._poll_now = False
        self._tailers: dict[str, threading.Thread] = {}
        self._terminal_since: dict[str, float] = {}
        self._cancelling: set[int] = set()

    def capacity(self) -> int | None:
        return None  # SkyPilot queues and schedules managed jobs itself

    # -- launch ------------------------------------------------------------------------------

    def launch(self, record: JobRecord, task: dict[str, Any], paths: JobPaths) -> dict[str, Any]:
        try:
            request_id = self.sdk.launch(task, name=record.name)
        except Exception as exc:  # noqa: BLE001 - any SDK failure ends this launch, in words
            raise LaunchError(describe_sky_error(exc)) from exc
        self._wait_for_launch(request_id)
        # Stored by the service before anything waits on it: a restart picks it up from here.
        return {"launch_request_id": request_id}

    def _wait_for_launch(self, request_id: str) -> None:
        with self._lock:
            if request_id in self._launches:
                return
            self._launches[request_id] = None

        def wait() -> None:
            try:
                outcome = _Outcome(job_id=self.sdk.wait_launch(request_id))
            except Exception as exc:  # noqa: BLE001 - reported on the job, not raised here
                outcome = _Outcome(error=describe_sky_error(exc))
            with self._lock:
                self._launches[request_id] = outcome
                self._poll_now = True
            self.notify()

        threading.Thread(target=wait, name=f"sky-launch-{request_id[:8]}", daemon=True).start()

    # -- status ------------------------------------------------------------------------------

    def refresh(self, records: Sequence[JobRecord]) -> None:
        """Read the managed-jobs queue once for every active job, at most every poll interval."""
        job_ids = sorted(
            {int(r.executor_state["job_id"]) for r in records if "job_id" in r.executor_state}
        )
        now = time.monotonic()
        with self._lock:
            due = self._poll_now or now - self._polled_at >= self.settings.skypilot_poll_seconds
        if not job_ids or not due:
            return
        try:
            found = self.sdk.queue(job_ids, QUEUE_FIELDS)
        except Exception as exc:  # noqa: BLE001 - a running job stays as it was; retried later
            logger.warning("cannot read the managed-jobs queue: %s", describe_sky_error(exc))
            found = None
        with self._lock:
            self._polled_at, self._poll_now = now, False
            if found is not None:
                self._records = {int(r.job_id): r for r in found if r.job_id is not None}

    def observe(self, record: JobRecord, paths: JobPaths) -> Observation:
        state = record.executor_state
        if "job_id" not in state:
            return self._observe_launch(state)
        job_id = int(state["job_id"])
        updates: dict[str, Any] = {}
        if record.cancel_requested_at is not None and not state.get("cancel_sent"):
            self._send_cancel(job_id)
            updates["cancel_sent"] = True
        with self._lock:
            found = self._records.get(job_id)
        if found is None or found.status is None:
            self._ensure_tailer(record.name, job_id, paths)
            return Observation(finished=False, state=updates or None)
        if found.recovery_count is not None and found.recovery_count != record.recovery_count:
            updates["recovery_count"] = found.recovery_count
        # Where it runs and what that costs (finops): kept when SkyPilot's view of it changes.
        cluster = cluster_facts(found, record.spec.resources)
        if cluster is not None and cluster != state.get("cluster"):
            updates["cluster"] = cluster
        status = found.status.value
        if status in _LIVE_STATUS:
            self._ensure_tailer(record.name, job_id, paths)
            return Observation(finished=False, status=_LIVE_STATUS[status], state=updates or None)
        if not self._logs_drained(record.name, job_id, paths):
            return Observation(finished=False, state=updates or None)
        if status == "SUCCEEDED":
            return Observation(finished=True, returncode=0, state=updates or None)
        if status == "CANCELLED":
            reason = "cancelled: the managed job was cancelled outside ainfinity (sky jobs cancel)"
            return Observation(
                finished=True, returncode=None, failure_reason=reason, state=updates or None
            )
        code, words = _FAILURES.get(status, ("unknown", f"SkyPilot reports {status}"))
        said = plain_words(found.failure_reason or "")
        detail = f"; SkyPilot says: {said}" if said else ""
        return Observation(
            finished=True,
            returncode=1,
            failure_reason=f"{code}: {words}{detail}",
            state=updates or None,
        )

    def _observe_launch(self, state: dict[str, Any]) -> Observation:
        request_id = state.get("launch_request_id")
        if not request_id:
            return Observation(
                finished=True, failure_reason="launch_error: no launch request was recorded"
            )
        with self._lock:
            outcome = self._launches.get(request_id)
            known = request_id in self._launches
        if not known:
            # A restart while the launch was being resolved: wait for the same request again.
            self._wait_for_launch(request_id)
            return Observation(finished=False)
        if outcome is None:
            return Observation(finished=False)
        if outcome.error is not None:
            return Observation(finished=True, failure_reason=f"launch_error: {outcome.error}")
        return Observation(finished=False, state={"job_id": outcome.job_id})

    # -- cancel ------------------------------------------------------------------------------

    def cancel(self, record: JobRecord, paths: JobPaths, *, force: bool) -> None:
        job_id = record.executor_state.get("job_id")
        if job_id is not None:
            self._send_cancel(int(job_id))
        # Without a job id yet, `observe` sends the cancel as soon as the launch resolves.

    def pause(self, record: JobRecord, paths: JobPaths) -> None:
        """A managed job cannot be signalled: it is cancelled, and its newest complete
        checkpoint, in the output bucket, is where the resumed job starts (the service only
        pauses SkyPilot jobs that have an output_uri)."""
        self.cancel(record, paths, force=False)

    def _send_cancel(self, job_id: int) -> None:
        with self._lock:
            if job_id in self._cancelling:
                return
            self._cancelling.add(job_id)

        def send() -> None:
            try:
                self.sdk.cancel([job_id])
            except Exception as exc:  # noqa: BLE001 - retried on the next observation
                logger.warning("cannot cancel managed job %s: %s", job_id, describe_sky_error(exc))
                with self._lock:
                    self._cancelling.discard(job_id)
            with self._lock:
                self._poll_now = True
            self.notify()

        threading.Thread(target=send, name=f"sky-cancel-{job_id}", daemon=True).start()

    def reap(self) -> None:
        pass

    # -- logs --------------------------------------------------------------------------------

    def _ensure_tailer(
        self, name: str, job_id: int, paths: JobPaths, *, restart: bool = True
    ) -> None:
        """Stream the job's log into its own log file (and metrics).

        While the job runs a dropped stream is restarted; once it has ended, one full read in
        this process is enough (a restarted server does it once more, to complete its copy).
        """
        with self._lock:
            current = self._tailers.get(name)
            if current is not None and (current.is_alive() or not restart):
                return

            def tail() -> None:
                # From the start each time: the copy is rewritten whole, never duplicated.
                with JobLogSink(paths.log, paths.metrics) as sink:
                    try:
                        self.sdk.tail_logs(job_id, sink, follow=True)
                    except Exception as exc:  # noqa: BLE001 - restarted by the next observation
                        logger.warning("log stream of %s ended: %s", name, describe_sky_error(exc))
                self.notify()

            thread = threading.Thread(target=tail, name=f"sky-logs-{name}", daemon=True)
            self._tailers[name] = thread
        thread.start()

    def _logs_drained(self, name: str, job_id: int, paths: JobPaths) -> bool:
        """After a job ends, give its log stream a little time to deliver the last lines."""
        self._ensure_tailer(name, job_id, paths, restart=False)
        with self._lock:
            since = self._terminal_since.setdefault(name, time.monotonic())
            tailer = self._tailers.get(name)
        return (
            tailer is None or not tailer.is_alive() or time.monotonic() - since >= LOG_DRAIN_SECONDS
        )
