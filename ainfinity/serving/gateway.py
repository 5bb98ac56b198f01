"""The gateway: admits `/v1` generation requests and streams them through to the worker.

At most `AINFINITY_SERVE_MAX_CONCURRENCY` requests generate at once (per API process);
`AINFINITY_SERVE_MAX_QUEUE` more may wait for a slot, and the rest get 429 with
`Retry-After`. Bodies and answers pass as bytes (no parsing, no buffering of streams). A
worker that dies under a request gives a prompt 503, or a final error chunk in a stream.

A deployment's upstream (its pinned worker, or its SkyServe endpoint) gets a gateway of its
own (`UpstreamGateway`): its own slots, the same streaming.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from ainfinity.core.config import Settings
from ainfinity.exceptions import AinfinityError, ServerBusy, WorkerUnavailable
from ainfinity.serving.model_source import HEADER, ModelSource
from ainfinity.serving.supervisor import WorkerSupervisor

logger = logging.getLogger("ainfinity.serving")

_PASSED_HEADERS = ("content-type", "x-should-retry")
_BROKEN = "The inference worker stopped while answering; retry the request."


@dataclass
class WorkerReply:
    """The worker's answer: a whole body, or (status 200 only) a stream of chunks."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks: AsyncIterable[bytes] | None = None


class UpstreamGateway:
    """Admission control and streaming to one upstream OpenAI server: the inference worker
    (`Gateway`) or a deployment's (`ainfinity.deployments.routing`). Each has its own slots."""

    def __init__(self, settings: Settings, *, max_concurrency: int) -> None:
        self.settings = settings
        self.max_concurrency = max_concurrency
        self.active = 0
        self.waiting = 0
        # Bound to the event loop of the app's lifespan (a test may run several in turn).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None

    def _bind(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or loop is not self._loop:
            self._loop = loop
            self._slots = asyncio.Semaphore(self.max_concurrency)
            self._rebound()
            self.active = self.waiting = 0
        return self._slots

    def _rebound(self) -> None:
        """A new event loop: drop whatever belonged to the old one."""

    # -- what an upstream provides ------------------------------------------------------------

    async def client(self) -> httpx.AsyncClient:
        raise NotImplementedError

    def notify_broken(self) -> None:
        """A request saw the upstream's connection drop."""

    def request_headers(self, source: ModelSource) -> dict[str, str]:
        return {}

    def unavailable(self, detail: str) -> AinfinityError:
        return WorkerUnavailable(f"{_BROKEN} ({detail})")

    # -- admission -------------------------------------------------------------------------

    async def _admit(self) -> None:
        slots = self._bind()
        if (slots.locked() or self.waiting) and self.waiting >= self.settings.serve_max_queue:
            raise ServerBusy(
                f"{self.active} requests are generating and {self.waiting} waiting, the most "
                "this server takes; retry shortly.",
                headers={"Retry-After": "1"},
            )
        self.waiting += 1
        try:
            await slots.acquire()
        finally:
            self.waiting -= 1
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        assert self._slots is not None
        self._slots.release()

    async def generate(
        self, path: str, body: bytes, source: ModelSource, *, stream: bool
    ) -> WorkerReply:
        """Send one completion request upstream and hand back its answer."""
        await self._admit()
        try:
            client = await self.client()
            request = client.build_request(
                "POST",
                path,
                content=body,
                headers={**self.request_headers(source), "content-type": "application/json"},
                # Between two chunks of a stream; a whole answer is bounded by the worker.
                timeout=httpx.Timeout(
                    10.0, read=self.settings.serve_token_timeout_seconds + 10 if stream else None
                ),
            )
            response = await client.send(request, stream=True)
        except httpx.TransportError as exc:
            self.release()
            self.notify_broken()
            raise self.unavailable(type(exc).__name__) from exc
        except BaseException:
            self.release()
            raise
        headers = {k: v for k, v in response.headers.items() if k in _PASSED_HEADERS}
        if not stream or response.status_code != 200:
            try:
                content = await response.aread()
            except httpx.TransportError as exc:
                self.notify_broken()
                raise self.unavailable(type(exc).__name__) from exc
            finally:
                await response.aclose()
                self.release()
            return self.answer(WorkerReply(response.status_code, headers, content))
        return WorkerReply(200, headers, chunks=_Relay(self, response))

    def answer(self, reply: WorkerReply) -> WorkerReply:
        """A whole (or failed) answer as the client gets it."""
        return reply


class Gateway(UpstreamGateway):
    """One per API process: its admission control and its connections to the worker."""

    def __init__(
        self,
        settings: Settings,
        supervisor: WorkerSupervisor,
        *,
        max_concurrency: int | None = None,
    ) -> None:
        super().__init__(
            settings, max_concurrency=max_concurrency or settings.serve_max_concurrency
        )
        self.supervisor = supervisor
        self._client: httpx.AsyncClient | None = None
        self._client_generation = -1

    def _rebound(self) -> None:
        self._client, self._client_generation = None, -1

    # -- talking to the worker ---------------------------------------------------------------

    async def client(self) -> httpx.AsyncClient:
        """A client of the running worker (waits for it to start); new after each restart,
        so no pooled connection of a dead worker is reused."""
        self._bind()
        generation = await self.supervisor.ready()
        if self._client is None or generation != self._client_generation:
            old, self._client = (
                self._client,
                httpx.AsyncClient(
                    transport=httpx.AsyncHTTPTransport(uds=str(self.supervisor.socket_path)),
                    base_url="http://worker",
                    timeout=httpx.Timeout(10.0, read=None),
                ),
            )
            self._client_generation = generation
            if old is not None:
                await old.aclose()
        return self._client

    def notify_broken(self) -> None:
        self.supervisor.notify_broken()

    def request_headers(self, source: ModelSource) -> dict[str, str]:
        return {HEADER: source.to_json()}

    async def call(self, method: str, path: str, payload: Any = None) -> Any:
        """A JSON call to the worker outside admission (status, unload, token statistics)."""
        client = await self.client()
        try:
            response = await client.request(method, path, json=payload, timeout=120.0)
        except httpx.TransportError as exc:
            self.supervisor.notify_broken()
            raise WorkerUnavailable(f"{_BROKEN} ({type(exc).__name__})") from exc
        response.raise_for_status()
        return response.json()

    async def call_if_running(self, method: str, path: str, payload: Any = None) -> Any:
        """`call`, but None instead of starting a worker that is not running."""
        if self.supervisor.shared_state().get("status") != "ready":
            return None
        with contextlib.suppress(WorkerUnavailable, httpx.HTTPError):
            return await self.call(method, path, payload)
        return None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class _Relay:
    """The worker's stream, chunk by chunk. Closing it (the response does, however it ends,
    even before the first chunk) closes the worker's stream, so generation stops, and frees
    the admission slot, once."""

    def __init__(self, gateway: UpstreamGateway, response: httpx.Response) -> None:
        self.gateway = gateway
        self.response = response
        self.closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.aiter_raw():
                yield chunk
        except httpx.TransportError as exc:
            self.gateway.notify_broken()
            logger.warning("upstream connection lost mid-stream: %s", exc)
            yield _error_chunk(_BROKEN, code="worker_unavailable")
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            with anyio.CancelScope(shield=True):
                await self.response.aclose()
        finally:
            self.gateway.release()


def _error_chunk(message: str, *, code: str) -> bytes:
    payload = {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
