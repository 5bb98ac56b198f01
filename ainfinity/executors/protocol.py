"""The seam between the control plane and whatever runs a job."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ainfinity.schema.job import JobRecord, JobStatus
from ainfinity.store.job_files import JobPaths


class LaunchError(RuntimeError):
    """The executor could not start the job; the message says why, in plain words."""


@dataclass(frozen=True)
class Observation:
    """What an executor sees of a launched job right now.

    `status` is the live status the executor sees (None: it cannot tell yet, no change);
    `failure_reason` is the executor's own account of a failure (the run's log is consulted
    first); `state` holds what to merge into the job's stored executor state.
    """

    finished: bool
    returncode: int | None = None
    status: JobStatus | None = None
    failure_reason: str | None = None
    state: dict[str, Any] | None = None


class Executor(Protocol):
    """Runs rendered SkyPilot tasks. Implementations must not block for long: the
    reconciler calls them from a worker thread on every tick."""

    name: str
    # Set by the service: call it when something changed that the reconciler should see
    # now rather than on its next tick (a job's process exited, say).
    notify: Callable[[], None]

    def capacity(self) -> int | None:
        """How many jobs may run at once (None: no limit); the rest wait PENDING."""

    def launch(self, record: JobRecord, task: dict[str, Any], paths: JobPaths) -> dict[str, Any]:
        """Start the task; return what must be stored to find the job again after a restart."""

    def observe(self, record: JobRecord, paths: JobPaths) -> Observation:
        """Report whether the launched job is still going, and how it ended."""

    def cancel(self, record: JobRecord, paths: JobPaths, *, force: bool) -> None:
        """Ask the job to stop (force: make it stop now)."""

    def pause(self, record: JobRecord, paths: JobPaths) -> None:
        """Ask the job to save a complete checkpoint at its next step's end and stop."""

    def refresh(self, records: Sequence[JobRecord]) -> None:
        """Once per pass, before `observe`: fetch what is needed for all these live jobs."""

    def reap(self) -> None:
        """Housekeeping on every tick (e.g. collect exited children)."""
