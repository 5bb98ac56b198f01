"""Our statuses cover every one of SkyServe's, held to SkyPilot's own enums."""

from __future__ import annotations

from sky.serve.serve_state import ReplicaStatus, ServiceStatus

from ainfinity.deployments import lifecycle
from ainfinity.schema.deployment import DeploymentStatus


def test_every_service_status_maps_to_one_of_ours() -> None:
    assert set(lifecycle.SERVICE_STATUS) == {status.value for status in ServiceStatus}
    assert set(lifecycle.SERVICE_STATUS.values()) <= set(DeploymentStatus)


def test_terminal_replica_statuses_are_skypilots() -> None:
    assert lifecycle.TERMINAL_REPLICA_STATUSES == {
        status.value for status in ReplicaStatus.terminal_statuses()
    }


def test_every_failed_replica_status_has_words() -> None:
    failed = {status.value for status in ReplicaStatus.failed_statuses()}
    assert failed <= set(lifecycle._REPLICA_FAILURES)
