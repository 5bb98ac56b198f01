"""A recording stand-in for SkyServe, at the deployments' SDK boundary (`SkyServeSdk`).

It answers with SkyPilot's own status enums (`ServiceStatus`, `ReplicaStatus`) and the
fields of `sky.serve.status`'s records, and checks every submitted task with SkyPilot's own
code (`validate_service`), so only the cloud is fake. Tests move services through SkyServe's
states with `set_service` and `set_replica`.
"""

from __future__ import annotations

import copy
import io
import threading
from collections.abc import Sequence
from typing import Any

from sky.serve.serve_state import ReplicaStatus, ServiceStatus

from ainfinity.deployments.serve_render import validate_service

ENDPOINT = "127.0.0.1:30001"


class RecordingSkyServe:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.tasks: dict[str, list[dict[str, Any]]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.up_gate = threading.Event()
        self.up_gate.set()
        self.up_error: Exception | None = None
        self.update_error: Exception | None = None
        self.endpoint = ENDPOINT
        self.logs: dict[tuple[str, str, int | None], str] = {}
        self._requests: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def _request(self, kind: str, name: str) -> str:
        with self._lock:
            request_id = f"serve-{kind}-{len(self._requests) + 1}"
            self._requests[request_id] = (kind, name)
            self.calls.append((kind, name, request_id))
        return request_id

    # -- the SkyServeSdk protocol --------------------------------------------------------------

    def up(self, task: dict[str, Any], *, service_name: str) -> str:
        validate_service(task)  # SkyPilot's own checks, as its API server runs them
        self.tasks.setdefault(service_name, []).append(copy.deepcopy(task))
        return self._request("up", service_name)

    def wait_up(self, request_id: str) -> str | None:
        self.calls.append(("wait_up", request_id))
        if not self.up_gate.wait(timeout=30):
            raise TimeoutError("the test never opened the up gate")
        if self.up_error is not None:
            raise self.up_error
        _, name = self._requests[request_id]
        with self._lock:
            self.services.setdefault(name, _service(name, self.endpoint))
        return self.endpoint

    def update(self, task: dict[str, Any], *, service_name: str) -> str:
        validate_service(task)
        self.tasks.setdefault(service_name, []).append(copy.deepcopy(task))
        return self._request("update", service_name)

    def down(self, service_name: str) -> str:
        return self._request("down", service_name)

    def wait(self, request_id: str) -> None:
        self.calls.append(("wait", request_id))
        kind, name = self._requests[request_id]
        if kind == "update":
            if self.update_error is not None:
                raise self.update_error
            with self._lock:
                service = self.services[name]
                service["active_versions"].append(max(service["active_versions"]) + 1)
        elif kind == "down":
            with self._lock:
                self.services.pop(name, None)

    def status(self, service_names: Sequence[str]) -> list[dict[str, Any]]:
        with self._lock:
            self.calls.append(("status", tuple(service_names)))
            return [copy.deepcopy(self.services[n]) for n in service_names if n in self.services]

    def tail_logs(
        self,
        service_name: str,
        *,
        target: str,
        replica_id: int | None,
        follow: bool,
        sink: io.TextIOBase,
    ) -> None:
        self.calls.append(("tail_logs", service_name, target, replica_id, follow))
        text = self.logs.get((service_name, target, replica_id))
        if text is None:
            raise ValueError(f"no {target} log for {service_name}")
        sink.write(text)

    # -- what tests drive ------------------------------------------------------------------------

    def set_service(self, name: str, status: str) -> None:
        with self._lock:
            self.services[name]["status"] = ServiceStatus[status]

    def set_replica(
        self,
        name: str,
        replica_id: int,
        status: str,
        *,
        version: int = 1,
        launched_at: float | None = None,
        is_spot: bool = False,
    ) -> None:
        """Add or change a replica, as SkyServe's `replica_info` shows it."""
        with self._lock:
            infos = self.services[name]["replica_info"]
            info = next((i for i in infos if i["replica_id"] == replica_id), None)
            if info is None:
                info = {
                    "replica_id": replica_id,
                    "name": f"{name}-{replica_id}",
                    "version": version,
                    "replica_info_version": 1,
                    "endpoint": None,
                    "is_spot": is_spot,
                    "launched_at": None,
                }
                infos.append(info)
            info["status"] = ReplicaStatus[status]
            info["version"] = version
            if launched_at is not None:
                info["launched_at"] = launched_at
            if status == "READY":
                info["endpoint"] = f"http://10.0.0.{replica_id}:8080"

    def drop_replica(self, name: str, replica_id: int) -> None:
        with self._lock:
            infos = self.services[name]["replica_info"]
            infos[:] = [i for i in infos if i["replica_id"] != replica_id]

    def count(self, kind: str) -> int:
        return sum(1 for call in self.calls if call[0] == kind)


def _service(name: str, endpoint: str) -> dict[str, Any]:
    """A record as `sky.serve.status` gives it (its documented fields)."""
    return {
        "name": name,
        "active_versions": [1],
        "controller_job_id": 1,
        "uptime": 0,
        "status": ServiceStatus.CONTROLLER_INIT,
        "controller_port": 20001,
        "load_balancer_port": 30001,
        "endpoint": endpoint,
        "policy": "Fixed 1 replica",
        "requested_resources_str": "1x[L4:1]",
        "load_balancing_policy": "least_load",
        "replica_info": [],
    }
