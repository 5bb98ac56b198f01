"""A deployment's status changes and its replicas' bookkeeping, each with its event.

SkyServe's `ServiceStatus` and `ReplicaStatus` come in as SkyPilot's enums (or their names);
they map onto `DeploymentStatus` here, and every change (ours, SkyServe's service status, a
replica's status) leaves an event. Replica timestamps are kept for the cost: from the
cluster's `launched_at` to the moment a replica was first seen ended (or gone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from ainfinity.schema.deployment import (
    DeploymentEvent,
    DeploymentEventType,
    DeploymentRecord,
    DeploymentStatus,
    Replica,
)

SYSTEM = "system"
S = DeploymentStatus

# SkyServe's service statuses as ours; the failures carry words a user can act on.
SERVICE_STATUS: Mapping[str, DeploymentStatus] = {
    "CONTROLLER_INIT": S.PROVISIONING,
    "REPLICA_INIT": S.PROVISIONING,
    "READY": S.READY,
    "NO_REPLICA": S.NOT_READY,
    "SHUTTING_DOWN": S.STOPPING,
    "FAILED": S.FAILED,
    "CONTROLLER_FAILED": S.FAILED,
    "FAILED_CLEANUP": S.FAILED,
}
_SERVICE_FAILURES = {
    "FAILED": "service_failed: a replica failed and none is ready",
    "CONTROLLER_FAILED": "controller_failed: SkyServe's controller or load balancer failed",
    "FAILED_CLEANUP": "cleanup_failed: SkyServe could not tear the service down; resources may "
    "remain (sky serve down --purge)",
}
_REPLICA_FAILURES = {
    "FAILED": "its setup or run commands failed",
    "FAILED_INITIAL_DELAY": "it never passed the readiness probe within initial_delay_seconds",
    "FAILED_PROBING": "it stopped answering the readiness probe",
    "FAILED_PROVISION": "no cloud could provision it (capacity or quota)",
    "FAILED_CLEANUP": "its cluster could not be torn down",
    "UNKNOWN": "SkyServe lost track of it",
}
# Statuses before a replica's cluster exists: nothing is billed yet.
_NOT_LAUNCHED = frozenset({"PENDING", "PROVISIONING"})
# SkyServe's `ReplicaStatus.terminal_statuses()`: a replica in one of these is gone or going
# (spelled out so that local deployments never import sky; a test holds it to SkyPilot's).
TERMINAL_REPLICA_STATUSES = frozenset(
    {
        "SHUTTING_DOWN",
        "PREEMPTED",
        "UNKNOWN",
        "FAILED",
        "FAILED_CLEANUP",
        "FAILED_INITIAL_DELAY",
        "FAILED_PROBING",
        "FAILED_PROVISION",
    }
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def event(
    kind: DeploymentEventType,
    status: DeploymentStatus,
    message: str,
    *,
    actor: str = SYSTEM,
    time: datetime | None = None,
) -> DeploymentEvent:
    return DeploymentEvent(
        time=time or utcnow(), type=kind, status=status, message=message, actor=actor
    )


def move(
    record: DeploymentRecord, status: DeploymentStatus, message: str, *, actor: str = SYSTEM
) -> DeploymentEvent:
    """Set the record's status and the times that go with it; returns the event to log."""
    now = utcnow()
    record.status = status
    record.updated_at = now
    if status == S.READY and record.ready_at is None:
        record.ready_at = now
    if status.is_final:
        record.stopped_at = now
        # Nothing is watched any more: the cost stops counting here.
        for replica in record.replicas:
            if replica.ended_at is None:
                replica.ended_at = now
    return event(DeploymentEventType.STATUS_CHANGED, status, message, actor=actor, time=now)


def name_of(value: Any) -> str:
    """An enum member's name (SkyPilot's statuses), or the string itself."""
    return str(getattr(value, "value", value))


def service_outcome(found: Mapping[str, Any]) -> tuple[DeploymentStatus, str | None]:
    """Our status for SkyServe's record of the service, and why, when it failed."""
    service = name_of(found.get("status"))
    status = SERVICE_STATUS.get(service, S.PROVISIONING)
    if status != S.FAILED:
        return status, None
    failed = [
        f"replica {info.get('replica_id')} {name_of(info.get('status'))} "
        f"({_REPLICA_FAILURES[name_of(info.get('status'))]})"
        for info in found.get("replica_info") or []
        if name_of(info.get("status")) in _REPLICA_FAILURES
    ]
    reason = _SERVICE_FAILURES.get(service, f"SkyServe reports {service}")
    return status, reason + (": " + "; ".join(failed) if failed else "")


def apply_service(
    record: DeploymentRecord, found: Mapping[str, Any], now: datetime
) -> list[DeploymentEvent]:
    """Take in SkyServe's record: its status, endpoint and replicas; events for what changed."""
    events = []
    service = name_of(found.get("status"))
    if service != record.service_status:
        record.service_status = service
        events.append(
            event(DeploymentEventType.SERVICE_STATUS, record.status, f"SkyServe: {service}")
        )
    if found.get("endpoint"):
        record.endpoint = str(found["endpoint"])
    events += apply_replicas(record, found.get("replica_info") or [], now)
    return events


def apply_replicas(
    record: DeploymentRecord, infos: Iterable[Mapping[str, Any]], now: datetime
) -> list[DeploymentEvent]:
    """Update the record's replicas from SkyServe's `replica_info`; an event per change."""
    events = []
    terminal = TERMINAL_REPLICA_STATUSES
    known = {replica.id: replica for replica in record.replicas}
    seen = set()
    for info in infos:
        replica_id = int(info["replica_id"])
        status = name_of(info.get("status"))
        seen.add(replica_id)
        replica = known.get(replica_id)
        if replica is None:
            replica = known[replica_id] = Replica(id=replica_id, status=status)
            record.replicas.append(replica)
            message = f"replica {replica_id}: {status}"
        elif replica.status != status:
            message = f"replica {replica_id}: {replica.status} -> {status}"
        else:
            message = ""
        if message:
            events.append(event(DeploymentEventType.REPLICA_STATUS, record.status, message))
        replica.status = status
        replica.endpoint = info.get("endpoint") or replica.endpoint
        replica.version = info.get("version", replica.version)
        replica.is_spot = info.get("is_spot", replica.is_spot)
        launched = info.get("launched_at")
        if replica.launched_at is None:
            if launched:
                replica.launched_at = datetime.fromtimestamp(float(launched), tz=timezone.utc)
            elif status not in _NOT_LAUNCHED:
                replica.launched_at = now  # running, with no launch time reported: from now
        if status in terminal and replica.ended_at is None:
            replica.ended_at = now
    for replica in record.replicas:
        if replica.id not in seen and replica.ended_at is None:
            replica.ended_at = now  # SkyServe dropped it: it ended
    record.replicas.sort(key=lambda r: r.id)
    return events


def live_replicas(record: DeploymentRecord) -> list[Replica]:
    return [replica for replica in record.replicas if replica.ended_at is None]
