"""The tracking pass: starts, updates and tears down deployments, and follows where they stand.

For SkyServe: a request (`up`, `update`, `down`) is marked on the record before it is
submitted, its id stored before it is waited on (`SkyRequests`), and one `status` call reads
every tracked service. A restarted server finds the marks and ids and waits on the same
requests: it never submits a second `up` for a deployment whose request id it holds. For
local deployments, the worker's state (as its babysitter wrote it) decides.

One pass runs at a time across the server's processes (a file lock).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from typing import Any

import anyio
import yaml

from ainfinity.core.config import Settings
from ainfinity.core.event_wait import wait_event
from ainfinity.deployments.lifecycle import (
    apply_service,
    event,
    move,
    name_of,
    service_outcome,
    utcnow,
)
from ainfinity.deployments.local_workers import LocalDeployments
from ainfinity.deployments.routing import DeploymentRouter
from ainfinity.deployments.serve_render import with_token
from ainfinity.deployments.sky_requests import Lost, Outcome, SkyRequests
from ainfinity.deployments.store import DeploymentStore, settle_next_task
from ainfinity.exceptions import DeploymentNotFound
from ainfinity.executors.sky_serve_sdk import SkyServeSdk
from ainfinity.executors.skypilot import describe_sky_error
from ainfinity.schema.deployment import (
    DeploymentEvent,
    DeploymentEventType,
    DeploymentRecord,
    DeploymentStatus,
)
from ainfinity.store.pass_lock import exclusive_pass

logger = logging.getLogger("ainfinity.deployments")
S = DeploymentStatus
# What `sky serve status` is asked about: deployments SkyServe may hold a service for.
_TRACKED = frozenset({S.PROVISIONING, S.READY, S.NOT_READY, S.UPDATING, S.STOPPING})
Events = list[DeploymentEvent] | None


class DeploymentTracker:
    """Moves deployments along; `run_pass` is called from a thread, never the event loop."""

    def __init__(self, store: DeploymentStore, sdk: SkyServeSdk) -> None:
        self.store = store
        self.sdk = sdk
        # Set by the app: wake the tracking loop (a request finished, from its thread).
        self.on_change: Callable[[], None] = lambda: None
        self.requests = SkyRequests(store, lambda: self.on_change())
        self._mutex = threading.Lock()
        self._status_error: str | None = None

    def run_pass(self, local_states: Mapping[str, dict[str, Any] | None]) -> None:
        """One pass; `local_states` is this process's view of the local workers."""
        with exclusive_pass(self._mutex, self.store.dir / ".tracker.lock") as acquired:
            if acquired:
                self._pass(local_states)

    def _pass(self, local_states: Mapping[str, dict[str, Any] | None]) -> None:
        live = [r for r in self.store.all() if not r.status.is_final]
        sky = [r for r in live if r.executor == "skypilot"]
        for record in sky:
            self._submit(record)
        names = [r.name for r in sky if r.status in _TRACKED]
        found: dict[str, Mapping[str, Any]] = {}
        status_error = None
        if names:
            try:
                found = {str(s["name"]): s for s in self.sdk.status(names)}
            except Exception as exc:  # noqa: BLE001 - SkyServe unreachable: noted, retried
                status_error = describe_sky_error(exc)
        if status_error != self._status_error and status_error is not None:
            logger.warning("sky serve status failed: %s", status_error)
        self._status_error = status_error
        now = utcnow()
        known = status_error is None
        for record in sky:
            self._change(
                record.name, lambda r: self._observe_sky(r, found.get(r.name), now, known=known)
            )
        for record in live:
            if record.executor == "local":
                self._change(
                    record.name, partial(_observe_local, state=local_states.get(record.name))
                )

    def _change(self, name: str, change: Callable[[DeploymentRecord], Events]) -> None:
        try:
            self.store.update(name, change)
        except DeploymentNotFound:
            pass

    # -- submitting SkyServe requests --------------------------------------------------------

    def _submit(self, record: DeploymentRecord) -> None:
        """Submit the request the record calls for, once: claimed under its lock first (a
        request answered meanwhile, a DELETE say, is never overridden)."""
        name = record.name

        def wants_down(r: DeploymentRecord) -> bool:
            state = r.executor_state
            return r.status == S.STOPPING and bool(state.get("up_submitted"))

        def wants_up(r: DeploymentRecord) -> bool:
            return r.status == S.PENDING

        def wants_update(r: DeploymentRecord) -> bool:
            return r.updating_to is not None and r.status == S.UPDATING

        if self._claim(name, "down_submitted", wants_down):
            self.requests.submit(name, "down", lambda: self.sdk.down(name), self.sdk.wait)
        elif self._claim(name, "up_submitted", wants_up, to=S.PROVISIONING):
            task = self._task(name, next_task=False)
            self.requests.submit(
                name, "up", lambda: self.sdk.up(task, service_name=name), self.sdk.wait_up
            )
        elif self._claim(name, "update_submitted", wants_update):
            task = self._task(name, next_task=True)
            self.requests.submit(
                name, "update", lambda: self.sdk.update(task, service_name=name), self.sdk.wait
            )

    def _task(self, name: str, *, next_task: bool) -> dict[str, Any]:
        paths = self.store.paths(name)
        task = yaml.safe_load((paths.next_task if next_task else paths.task).read_bytes())
        return with_token(task, self.store.token(name))

    def _claim(
        self,
        name: str,
        key: str,
        wanted: Callable[[DeploymentRecord], bool],
        *,
        to: DeploymentStatus | None = None,
    ) -> bool:
        """Mark on the record, before the call, that a request is being submitted; False
        when the record does not call for it (any more) or it was marked already."""
        claimed = False

        def change(record: DeploymentRecord) -> list[DeploymentEvent] | None:
            nonlocal claimed
            if record.executor_state.get(key) or not wanted(record):
                return None
            claimed = True
            record.executor_state[key] = utcnow().isoformat()
            if to is not None and record.status != to:
                return [move(record, to, f"sky serve {key.split('_')[0]} submitted")]
            return []

        try:
            self.store.update(name, change)
        except DeploymentNotFound:
            return False
        return claimed

    # -- observing ---------------------------------------------------------------------------

    def _observe_sky(
        self,
        record: DeploymentRecord,
        found: Mapping[str, Any] | None,
        now: datetime,
        *,
        known: bool,
    ) -> Events:
        """`known`: SkyServe's status was read this pass (`found` None: no such service)."""
        if record.status.is_final:
            return None
        events: list[DeploymentEvent] = []
        if found is not None:
            events += apply_service(record, found, now)
        if record.status == S.STOPPING:
            return events + self._observe_down(record, found, known=known)
        up = self.requests.state(record, "up", self.sdk.wait_up)
        if isinstance(up, Outcome) and up.error is not None:
            return events + _fail(record, f"sky serve up failed: {up.error}")
        if isinstance(up, Outcome) and up.value and record.endpoint is None:
            record.endpoint = str(up.value)
        if not known:
            return events or None
        if isinstance(up, Lost) and found is None and record.status == S.PROVISIONING:
            # Submitted before a restart, its id never stored: SkyServe has no such service,
            # so the call never reached it. Submit it again on the next pass.
            record.executor_state.pop("up_submitted", None)
            return events + [move(record, S.PENDING, "sky serve up interrupted; resubmitting")]
        if found is None:
            if isinstance(up, Outcome) and record.status != S.PROVISIONING:
                return events + _fail(record, "SkyServe no longer knows the service")
            return events or None
        target, reason = service_outcome(found)
        if record.updating_to is not None and target != S.FAILED:
            target = self._observe_update(record, found, events)
        if target != record.status:
            if target == S.FAILED:
                return events + _fail(record, reason or "SkyServe reports the service failed")
            events.append(move(record, target, f"SkyServe: {found.get('status')!s}"))
        return events or None

    def _observe_update(
        self, record: DeploymentRecord, found: Mapping[str, Any], events: list[DeploymentEvent]
    ) -> DeploymentStatus:
        """UPDATING until the update request is done and a replica of the newest version is
        READY; then the record serves the new model."""
        target, _ = service_outcome(found)
        update = self.requests.state(record, "update", self.sdk.wait)
        assert record.updating_to is not None
        if isinstance(update, Outcome) and update.error is not None:
            events.append(
                event(
                    DeploymentEventType.UPDATE_FAILED,
                    record.status,
                    f"update to {record.updating_to} failed: {update.error}",
                )
            )
            self._end_update(record, keep=False)
            return target
        if isinstance(update, Outcome) and target == S.READY and _newest_ready(found):
            events.append(
                event(
                    DeploymentEventType.UPDATED,
                    S.READY,
                    f"now serving {record.updating_to} (was {record.model})",
                )
            )
            record.model = record.updating_to
            self._end_update(record, keep=True)
            return S.READY
        return S.UPDATING

    def _end_update(self, record: DeploymentRecord, *, keep: bool) -> None:
        self.requests.forget(record, "update")
        record.executor_state.pop("update_submitted", None)
        record.updating_to = None
        settle_next_task(self.store.paths(record.name), keep=keep)

    def _observe_down(
        self, record: DeploymentRecord, found: Mapping[str, Any] | None, *, known: bool
    ) -> list[DeploymentEvent]:
        if not record.executor_state.get("up_submitted"):
            return [move(record, S.STOPPED, "stopped before SkyServe was asked for anything")]
        down = self.requests.state(record, "down", self.sdk.wait)
        if isinstance(down, Outcome):
            if down.error is not None and (found is not None or not known):
                return _fail(record, f"sky serve down failed: {down.error}")
            return [move(record, S.STOPPED, "SkyServe tore the service down")]
        if isinstance(down, Lost) and known and found is None:
            return [move(record, S.STOPPED, "SkyServe has no such service any more")]
        return []


def _newest_ready(found: Mapping[str, Any]) -> bool:
    replicas = found.get("replica_info") or []
    # SkyServe's active versions end with the update's; older SkyPilot: the replicas'.
    versions = list(found.get("active_versions") or []) or [
        int(r.get("version") or 0) for r in replicas
    ]
    if not versions:
        return False
    newest = max(int(v) for v in versions)
    return any(
        int(r.get("version") or 0) == newest and name_of(r.get("status")) == "READY"
        for r in replicas
    )


def _fail(record: DeploymentRecord, reason: str) -> list[DeploymentEvent]:
    record.failure_reason = reason
    return [move(record, S.FAILED, reason)]


_LOCAL_STATUS = {"starting": S.PROVISIONING, "ready": S.READY, "restarting": S.NOT_READY}


def _observe_local(record: DeploymentRecord, *, state: dict[str, Any] | None) -> Events:
    """A local deployment from its worker's state (None: this process runs no worker)."""
    if record.status.is_final:
        return None
    if record.status == S.STOPPING:
        return (
            [move(record, S.STOPPED, "the deployment's worker stopped")] if state is None else None
        )
    if state is None:
        return None
    worker = str(state.get("status", "stopped"))
    if worker == "failed":
        crashes = state.get("crashes") or []
        last = crashes[-1].get("reason") if crashes and isinstance(crashes[-1], dict) else None
        return _fail(record, f"the deployment's worker failed: {last or 'see its log'}")
    target = _LOCAL_STATUS.get(worker)
    if target is None:
        return None
    events: list[DeploymentEvent] = []
    if record.updating_to is not None:
        if target != S.READY:
            return None
        events.append(
            event(
                DeploymentEventType.UPDATED,
                S.READY,
                f"now serving {record.updating_to} (was {record.model})",
            )
        )
        record.model = record.updating_to
        record.executor_state["source"] = record.executor_state.pop("next_source")
        record.updating_to = None
    elif target == S.PROVISIONING and record.status not in (S.PENDING, S.PROVISIONING):
        target = S.NOT_READY
    if target != record.status:
        events.append(move(record, target, f"worker {worker}"))
    return events or None


async def track_forever(
    tracker: DeploymentTracker,
    local: LocalDeployments,
    store: DeploymentStore,
    router: DeploymentRouter,
    wake: asyncio.Event,
    settings: Settings,
) -> None:
    """The app's tracking loop: local workers synced on the event loop, the pass in a thread."""
    while True:
        await wait_event(wake, settings.deploy_poll_seconds)
        wake.clear()
        try:
            records = await anyio.to_thread.run_sync(store.all)
            await local.sync(records)
            states = {r.name: local.state_of(r.name) for r in records if r.executor == "local"}
            await anyio.to_thread.run_sync(tracker.run_pass, states)
            router.invalidate()
        except Exception:
            logger.exception("deployment pass failed; retrying on the next tick")
