"""Which upstream answers a `/v1` request: a READY deployment of the model, else none.

A SkyServe deployment is reached at its service endpoint (the load balancer) with the
deployment's token as the Bearer token, which its replicas require; a local deployment at
its pinned worker. Each has its own admission slots (`AINFINITY_DEPLOY_MAX_CONCURRENCY`).
Records are read at most once a second per process: a deployment that became READY routes
within that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio
import httpx

from ainfinity.core.config import Settings
from ainfinity.deployments.local_workers import LocalDeployments, running_source
from ainfinity.deployments.store import DeploymentStore
from ainfinity.exceptions import AinfinityError, DeploymentUnavailable
from ainfinity.schema.deployment import DeploymentRecord, DeploymentStatus
from ainfinity.serving.gateway import UpstreamGateway, WorkerReply
from ainfinity.serving.model_source import ModelSource

_REFRESH_SECONDS = 1.0


class EndpointGateway(UpstreamGateway):
    """A SkyServe service's endpoint, called with the deployment's token."""

    def __init__(self, settings: Settings, *, endpoint: str, token: str) -> None:
        super().__init__(settings, max_concurrency=settings.deploy_max_concurrency)
        self.base_url = endpoint if "://" in endpoint else f"http://{endpoint}"
        self.token = token
        self._client: httpx.AsyncClient | None = None

    def _rebound(self) -> None:
        self._client = None

    async def client(self) -> httpx.AsyncClient:
        self._bind()
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url, timeout=httpx.Timeout(10.0, read=None)
            )
        return self._client

    def request_headers(self, source: ModelSource) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def unavailable(self, detail: str) -> AinfinityError:
        return DeploymentUnavailable(f"The deployment's endpoint cannot be reached ({detail}).")

    def answer(self, reply: WorkerReply) -> WorkerReply:
        if reply.status in (401, 403):
            # The client's key was good (the gateway checked it); the replica refusing the
            # deployment's own token is the server's problem, not the caller's.
            raise DeploymentUnavailable("The deployment's replicas refused its token.")
        return reply

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


@dataclass(frozen=True)
class Route:
    """Where a request for a model goes: `gateway`, told `source`."""

    deployment: str
    gateway: UpstreamGateway
    source: ModelSource


class DeploymentRouter:
    """This process's routes to READY deployments."""

    def __init__(self, settings: Settings, store: DeploymentStore, local: LocalDeployments) -> None:
        self.settings = settings
        self.store = store
        self.local = local
        self._ready: dict[str, DeploymentRecord] = {}
        self._read_at = float("-inf")
        self._endpoints: dict[str, EndpointGateway] = {}

    async def route(self, model_id: str) -> Route | None:
        """A READY deployment serving `model_id` (the newest), or None."""
        if time.monotonic() - self._read_at > _REFRESH_SECONDS:
            records = await anyio.to_thread.run_sync(self.store.all)
            self._ready = {}
            for record in reversed(records):  # oldest first: the newest wins
                if record.status == DeploymentStatus.READY:
                    self._ready[record.model] = record
            self._read_at = time.monotonic()
        found = self._ready.get(model_id)
        if found is None:
            return None
        record = found
        if record.executor == "local":
            gateway = self.local.gateway_of(record.name)
            if gateway is None:
                return None
            return Route(record.name, gateway, running_source(record))
        if record.endpoint is None:
            return None
        return Route(
            record.name,
            await self._endpoint(record.name, record.endpoint),
            ModelSource(id=model_id, load=model_id),
        )

    async def _endpoint(self, name: str, endpoint: str) -> EndpointGateway:
        gateway = self._endpoints.get(name)
        if gateway is None or gateway.base_url.removeprefix("http://") != endpoint.removeprefix(
            "http://"
        ):
            if gateway is not None:
                await gateway.close()
            token = await anyio.to_thread.run_sync(self.store.token, name)
            gateway = self._endpoints[name] = EndpointGateway(
                self.settings, endpoint=endpoint, token=token
            )
        return gateway

    def invalidate(self) -> None:
        """Read the records again on the next request (a deployment changed)."""
        self._read_at = float("-inf")

    async def close(self) -> None:
        for gateway in self._endpoints.values():
            await gateway.close()
        self._endpoints.clear()
