"""SkyServe requests in flight (`SkyRequests`): one wait per request, whatever a tracking pass
reads meanwhile."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ainfinity.deployments.sky_requests import Outcome, RequestState, SkyRequests, request_key
from ainfinity.deployments.store import DeploymentStore
from ainfinity.schema.deployment import DeploymentRecord
from tests.deployments.test_dashboard_page import write_ready_deployment

NAME = "support-bot"


class PeekingStore(DeploymentStore):
    """A real store that runs `peek` right after each change is written, as a tracking pass
    on another thread may read the record at that moment."""

    peek: Callable[[DeploymentRecord], None] = staticmethod(lambda record: None)

    def update(
        self, name: str, change: Any, *, files: dict[str, bytes] | None = None
    ) -> DeploymentRecord:
        record = super().update(name, change, files=files)
        self.peek(record)
        return record


def test_a_pass_reading_the_stored_id_at_once_does_not_wait_a_second_time(
    tmp_path: Path,
) -> None:
    write_ready_deployment(tmp_path)
    store = PeekingStore(tmp_path)
    done = threading.Event()
    requests = SkyRequests(store, wake=done.set)
    waits: list[str] = []

    def wait(request_id: str) -> str:
        waits.append(request_id)
        return "34.1.2.3:30001"

    seen: list[RequestState] = []

    def peek(record: DeploymentRecord) -> None:
        if record.executor_state.get(request_key("up")) is not None:
            seen.append(requests.state(record, "up", wait))

    store.peek = peek
    requests.submit(NAME, "up", lambda: "req-1", wait)
    assert done.wait(10)
    record = store.get(NAME)
    assert record.executor_state[request_key("up")] == "req-1"  # stored before the wait
    assert seen  # the pass did read the stored id while the request was in flight
    assert requests.state(record, "up", wait) == Outcome(value="34.1.2.3:30001")
    assert waits == ["req-1"]  # one wait: the pass did not take it for a restart's request
