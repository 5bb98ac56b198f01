"""The SkyServe SDK calls deployments make, and nothing else.

The seam the tests replace with a recording fake (`tests/sky_serve_fake.py`), as
`sky_sdk.py` is for jobs. Calls that return a request id do not wait for what the request
does (`up` itself blocks while SkyPilot checks the task and uploads its local file mounts:
it is only ever called from a background thread); `wait_up` and `wait` block until the
request is done. `sky` is imported on first use.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Protocol

from ainfinity.executors.sky_sdk import point_sdk_at


class SkyServeSdk(Protocol):
    """What deployments need of SkyServe."""

    def up(self, task: dict[str, Any], *, service_name: str) -> str:
        """Submit a new service; returns the request id (its result: the endpoint)."""

    def wait_up(self, request_id: str) -> str | None:
        """Block until an `up` request is done; the service's endpoint (None: not yet known)."""

    def update(self, task: dict[str, Any], *, service_name: str) -> str:
        """Submit a rolling update of a service to `task`; returns the request id."""

    def down(self, service_name: str) -> str:
        """Submit the teardown of a service; returns the request id."""

    def wait(self, request_id: str) -> None:
        """Block until an `update` or `down` request is done (raises what it raised)."""

    def status(self, service_names: Sequence[str]) -> list[dict[str, Any]]:
        """SkyServe's records of these services, in one call (absent ones are left out)."""

    def tail_logs(
        self,
        service_name: str,
        *,
        target: str,
        replica_id: int | None,
        follow: bool,
        sink: io.TextIOBase,
    ) -> None:
        """Write the log of the service's controller, load balancer or replica to `sink`."""


class SkyServeClient:
    """The real SDK, pointed at `api_server` when one is given."""

    def __init__(self, api_server: str | None = None) -> None:
        point_sdk_at(api_server)

    def up(self, task: dict[str, Any], *, service_name: str) -> str:
        import sky

        return str(sky.serve.up(sky.Task.from_yaml_config(task), service_name=service_name))

    def wait_up(self, request_id: str) -> str | None:
        import sky

        _name, endpoint = sky.get(request_id)  # type: ignore[arg-type, var-annotated]
        return str(endpoint) if endpoint else None

    def update(self, task: dict[str, Any], *, service_name: str) -> str:
        import sky

        mode = sky.serve.UpdateMode.ROLLING
        return str(sky.serve.update(sky.Task.from_yaml_config(task), service_name, mode))

    def down(self, service_name: str) -> str:
        import sky

        return str(sky.serve.down(service_name))

    def wait(self, request_id: str) -> None:
        import sky

        sky.get(request_id)  # type: ignore[arg-type]

    def status(self, service_names: Sequence[str]) -> list[dict[str, Any]]:
        import sky
        from sky import exceptions

        try:
            records: list[dict[str, Any]] = sky.get(sky.serve.status(list(service_names)))
            return list(records)
        except exceptions.ClusterNotUpError:
            return []  # no serve controller: no service exists

    def tail_logs(
        self,
        service_name: str,
        *,
        target: str,
        replica_id: int | None,
        follow: bool,
        sink: io.TextIOBase,
    ) -> None:
        import sky

        sky.serve.tail_logs(
            service_name, target=target, replica_id=replica_id, follow=follow, output_stream=sink
        )
