"""SkyServe requests in flight: submitted and waited on in background threads.

A SkyServe call returns a request id; what the request does is waited on separately. Here the
call runs in a thread of its own (`up` blocks while SkyPilot checks the task and uploads its
files), its id is stored on the deployment before anything waits on it, and the wait runs in
the same thread. A restarted server finds the stored id and waits on the same request again;
the pass that drives deployments only ever reads where each one stands.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ainfinity.deployments.store import DeploymentStore
from ainfinity.exceptions import DeploymentNotFound
from ainfinity.executors.skypilot import describe_sky_error
from ainfinity.schema.deployment import DeploymentEvent, DeploymentRecord

logger = logging.getLogger("ainfinity.deployments")

Kind = Literal["up", "update", "down"]


@dataclass(frozen=True)
class Outcome:
    """A request's end: its result, or why it failed (in plain words)."""

    value: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Waiting:
    """The request is being submitted, or SkyServe is still at it."""


@dataclass(frozen=True)
class Lost:
    """Submitted before a restart, with no request id stored: SkyServe's status decides."""


RequestState = Outcome | Waiting | Lost


def request_key(kind: Kind) -> str:
    return f"{kind}_request_id"


class SkyRequests:
    """This process's SkyServe requests; thread-safe."""

    def __init__(self, store: DeploymentStore, wake: Callable[[], None]) -> None:
        self.store = store
        self.wake = wake
        self._lock = threading.Lock()
        self._submitting: set[tuple[str, Kind]] = set()
        self._submit_errors: dict[tuple[str, Kind], str] = {}
        self._outcomes: dict[str, Outcome | None] = {}  # request id -> outcome (None: waiting)

    def submit(
        self,
        name: str,
        kind: Kind,
        call: Callable[[], str],
        wait: Callable[[str], Any],
    ) -> None:
        """Call SkyServe in a thread; store the request id on the deployment, then wait."""
        with self._lock:
            if (name, kind) in self._submitting:
                return
            self._submitting.add((name, kind))
            self._submit_errors.pop((name, kind), None)

        def run() -> None:
            try:
                request_id = call()
            except Exception as exc:  # noqa: BLE001 - any SDK failure ends this request, in words
                with self._lock:
                    self._submitting.discard((name, kind))
                    self._submit_errors[(name, kind)] = describe_sky_error(exc)
                self.wake()
                return
            # Known to this process before the record shows it: a pass that reads the stored
            # id in between must not take it for a restart's and wait on it a second time.
            with self._lock:
                self._outcomes[request_id] = None
            try:
                self.store.update(name, _store_id(request_key(kind), request_id))
            except DeploymentNotFound:
                logger.warning("deployment %s vanished while its %s was submitted", name, kind)
            with self._lock:
                self._submitting.discard((name, kind))
            self._wait(request_id, wait)

        threading.Thread(target=run, name=f"skyserve-{kind}-{name}", daemon=True).start()

    def state(
        self, record: DeploymentRecord, kind: Kind, wait: Callable[[str], Any]
    ) -> RequestState:
        """Where the deployment's `kind` request stands in this process."""
        name = record.name
        request_id = record.executor_state.get(request_key(kind))
        with self._lock:
            if request_id is None:
                if (name, kind) in self._submitting:
                    return Waiting()
                error = self._submit_errors.get((name, kind))
                return Outcome(error=error) if error is not None else Lost()
            if request_id not in self._outcomes:
                # A restart while SkyServe was at it: wait on the same request again.
                self._outcomes[request_id] = None
                restart = True
            else:
                restart = False
            outcome = self._outcomes[request_id]
        if restart:
            threading.Thread(
                target=self._wait,
                args=(request_id, wait),
                name=f"skyserve-wait-{request_id[:12]}",
                daemon=True,
            ).start()
        return outcome if outcome is not None else Waiting()

    def forget(self, record: DeploymentRecord, kind: Kind) -> None:
        """Drop what is known of the deployment's `kind` request (to submit it again)."""
        request_id = record.executor_state.pop(request_key(kind), None)
        with self._lock:
            self._submit_errors.pop((record.name, kind), None)
            if request_id is not None:
                self._outcomes.pop(request_id, None)

    def _wait(self, request_id: str, wait: Callable[[str], Any]) -> None:
        try:
            outcome = Outcome(value=wait(request_id))
        except Exception as exc:  # noqa: BLE001 - reported on the deployment, not raised here
            outcome = Outcome(error=describe_sky_error(exc))
        with self._lock:
            self._outcomes[request_id] = outcome
        self.wake()


def _store_id(key: str, request_id: str) -> Callable[[DeploymentRecord], list[DeploymentEvent]]:
    def change(record: DeploymentRecord) -> list[DeploymentEvent]:
        record.executor_state[key] = request_id
        return []

    return change
