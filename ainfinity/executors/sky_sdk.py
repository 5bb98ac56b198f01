"""The SkyPilot SDK calls the SkyPilot executor makes, and nothing else.

This is the seam the tests replace with a recording fake: every call here goes to a SkyPilot
API server (the local one the SDK starts, or `AINFINITY_SKYPILOT_API_SERVER`). `sky` is
imported on first use: it takes seconds, and a server that only runs local jobs never pays it.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sky.schemas.api.responses import ManagedJobRecord


class SkyPilotSdk(Protocol):
    """What the executor needs of SkyPilot. Methods returning a request id do not wait."""

    def launch(self, task: dict[str, Any], *, name: str) -> str:
        """Submit a managed job; returns the request id (its result: the managed job id)."""

    def wait_launch(self, request_id: str) -> int:
        """Block until a launch request is done; return the managed job id."""

    def queue(self, job_ids: Sequence[int], fields: Sequence[str]) -> list[ManagedJobRecord]:
        """The managed-job records of these ids, in one call (blocks for one round trip).

        Only `fields` are filled in; SkyPilot leaves the others None."""

    def cancel(self, job_ids: Sequence[int]) -> None:
        """Ask SkyPilot to cancel these managed jobs (blocks until the request is accepted)."""

    def tail_logs(self, job_id: int, sink: io.TextIOBase, *, follow: bool) -> None:
        """Write the job's log to `sink` until it ends (follow) or up to now."""


def point_sdk_at(api_server: str | None) -> None:
    """Send the SDK's calls to `api_server` (None: its own local one)."""
    if api_server:
        os.environ["SKYPILOT_API_SERVER_ENDPOINT"] = api_server
    # The SDK caches its endpoint on first use; a client built after that (a second app
    # in one process) must not talk to the previous one's server.
    common = sys.modules.get("sky.server.common")
    if common is not None:
        common.get_server_url.cache_clear()


class SkyPilotClient:
    """The real SDK, pointed at `api_server` when one is given."""

    def __init__(self, api_server: str | None = None) -> None:
        point_sdk_at(api_server)

    def launch(self, task: dict[str, Any], *, name: str) -> str:
        import sky

        return str(sky.jobs.launch(sky.Task.from_yaml_config(task), name=name))

    def wait_launch(self, request_id: str) -> int:
        import sky

        job_ids, _handle = sky.get(request_id)  # type: ignore[arg-type, var-annotated]
        if not job_ids:
            raise RuntimeError("SkyPilot accepted the launch but returned no managed job id")
        return int(job_ids[0])

    def queue(self, job_ids: Sequence[int], fields: Sequence[str]) -> list[ManagedJobRecord]:
        import sky

        result = sky.get(
            sky.jobs.queue_v2(refresh=False, job_ids=list(job_ids), fields=list(fields))
        )
        # 0.14 answers (records, total, status_counts, total_no_filter); older servers a list.
        records = result[0] if isinstance(result, tuple) else result
        return list(records)

    def cancel(self, job_ids: Sequence[int]) -> None:
        import sky

        sky.get(sky.jobs.cancel(job_ids=list(job_ids)))

    def tail_logs(self, job_id: int, sink: io.TextIOBase, *, follow: bool) -> None:
        import sky

        sky.jobs.tail_logs(job_id=job_id, follow=follow, output_stream=sink)
