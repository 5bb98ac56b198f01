"""Webhooks: when a job with a `webhook_url` ends, its public JSON is POSTed there once.

- The delivery is armed in the same record write as the terminal status (`transition`), and
  a marker file `$AINFINITY_HOME/webhooks/<name>` (a store hook, written before that record)
  lets every worker find pending deliveries without reading every job.
- Every worker runs a dispatcher. An attempt is claimed under the job's lock with a lease
  (`lease_until`), so one worker makes it; the POST runs outside the lock, in the loop, and
  its outcome is recorded as a `webhook_delivered` / `webhook_failed` job event.
- Failed attempts are retried after `webhook_backoff_seconds * 2**(n-1)`, up to
  `webhook_max_attempts`. A delivery pending at a restart is resumed (its lease, if any,
  runs out first). A worker dying mid-attempt means the next one may repeat a POST the
  receiver already got: receivers deduplicate with `X-Ainfinity-Delivery`.
- The body is signed with HMAC-SHA256 (`X-Ainfinity-Signature: sha256=<hex>`) when
  `AINFINITY_WEBHOOK_SECRET` is set, and sent unsigned, without that header, when not.
- Redirects are followed only to the same scheme, host and port (307/308, which keep the
  POST); each attempt has an overall time limit; proxy variables are not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urljoin, urlsplit

import anyio
import httpx
from pydantic import ValidationError

from ainfinity import __version__
from ainfinity.core.config import Settings
from ainfinity.exceptions import JobNotFound
from ainfinity.jobs.transitions import SYSTEM_ACTOR, utcnow
from ainfinity.jobs.webhook_targets import InternalAddressRefused, guarded_transport
from ainfinity.schema.activity import Event, EventType
from ainfinity.schema.job import JobRecord
from ainfinity.store.job_store import JobStore

logger = logging.getLogger("ainfinity.webhooks")

_MAX_REDIRECTS = 3
_MAX_CONCURRENT = 8
# Beyond the attempt's own time limit, before another worker may take the delivery over.
_LEASE_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class Claim:
    """One attempt this worker has claimed."""

    name: str
    delivery_id: str
    attempt: int
    event: str
    url: str
    body: bytes


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    detail: str
    # No later attempt can do better (the target is refused by policy).
    final: bool = False


def signature(secret: str, body: bytes) -> str:
    """The `X-Ainfinity-Signature` value for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookDispatcher:
    """Finds, claims, sends and records webhook deliveries (one per worker)."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self.markers = store.home / "webhooks"
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- arming ------------------------------------------------------------------------------

    def on_write(self, record: JobRecord, events: list[Event]) -> None:
        """Store hook: mark a job whose delivery is pending, before its record says so."""
        if record.webhook is not None and record.webhook.state == "pending":
            self.markers.mkdir(exist_ok=True)
            (self.markers / record.name).touch()

    # -- the loop ----------------------------------------------------------------------------

    async def run_forever(self) -> None:
        """Claim and send due deliveries every reconcile interval, until cancelled."""
        timeout = httpx.Timeout(self.settings.webhook_timeout_seconds)
        # Made here, in the loop that uses it (an app may be started more than once).
        self._slots = asyncio.Semaphore(_MAX_CONCURRENT)
        async with httpx.AsyncClient(
            transport=guarded_transport(self.settings.webhook_hosts),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        ) as client:
            try:
                while True:
                    try:
                        await self.dispatch_due(client)
                    except Exception:
                        logger.exception("webhook pass failed; retrying on the next tick")
                    await asyncio.sleep(self.settings.reconcile_interval_seconds)
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def dispatch_due(self, client: httpx.AsyncClient) -> None:
        for name in await anyio.to_thread.run_sync(self._marked):
            if name in self._in_flight:
                continue
            claim = await anyio.to_thread.run_sync(self._claim, name)
            if claim is None:
                continue
            self._in_flight.add(name)
            task = asyncio.create_task(self._deliver(client, claim))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _marked(self) -> list[str]:
        try:
            return sorted(os.listdir(self.markers))
        except FileNotFoundError:
            return []

    # -- one attempt ---------------------------------------------------------------------------

    def _claim(self, name: str) -> Claim | None:
        claimed = False

        def change(record: JobRecord) -> list[Event] | None:
            nonlocal claimed
            hook = record.webhook
            now = utcnow()
            if hook is None or hook.state != "pending" or hook.next_attempt_at > now:
                return None
            if hook.lease_until is not None and hook.lease_until > now:
                return None  # another worker's attempt
            lease = self.settings.webhook_timeout_seconds + _LEASE_MARGIN_SECONDS
            hook.attempts += 1
            hook.lease_until = now + timedelta(seconds=lease)
            claimed = True
            return []

        try:
            record = self.store.update(name, change)
        except JobNotFound:
            self._release(name)
            return None
        hook = record.webhook
        if hook is None or hook.state != "pending":
            self._release(name)
            return None
        if not claimed or record.spec.webhook_url is None:
            return None
        return Claim(
            name=name,
            delivery_id=hook.delivery_id,
            attempt=hook.attempts,
            event=hook.event,
            url=record.spec.webhook_url,
            body=record.public().model_dump_json().encode(),
        )

    async def _deliver(self, client: httpx.AsyncClient, claim: Claim) -> None:
        try:
            async with self._slots:
                outcome = await self._post(client, claim)
            await anyio.to_thread.run_sync(self._settle, claim, outcome)
        except Exception:
            # The lease runs out and the attempt is made again.
            logger.exception("webhook attempt failed unexpectedly", extra={"job": claim.name})
        finally:
            self._in_flight.discard(claim.name)

    async def _post(self, client: httpx.AsyncClient, claim: Claim) -> Outcome:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"ainfinity/{__version__}",
            "X-Ainfinity-Event": claim.event,
            "X-Ainfinity-Delivery": claim.delivery_id,
            "X-Ainfinity-Attempt": str(claim.attempt),
        }
        secret = self.settings.webhook_secret.get_secret_value()
        if secret:
            headers["X-Ainfinity-Signature"] = signature(secret, claim.body)
        url = claim.url
        try:
            with anyio.fail_after(self.settings.webhook_timeout_seconds):
                for _ in range(_MAX_REDIRECTS + 1):
                    response = await client.post(url, content=claim.body, headers=headers)
                    code = response.status_code
                    if 200 <= code < 300:
                        return Outcome(True, f"HTTP {code}")
                    target = _same_origin_redirect(url, response)
                    if target is None:
                        return Outcome(False, f"HTTP {code}" + _redirect_note(response))
                    url = target
                return Outcome(False, "too many redirects")
        except TimeoutError:
            return Outcome(False, f"no answer in {self.settings.webhook_timeout_seconds:g} s")
        except httpx.HTTPError as exc:
            refused = isinstance(exc.__cause__, InternalAddressRefused)
            return Outcome(False, f"{type(exc).__name__}: {exc}"[:300], final=refused)

    def _settle(self, claim: Claim, outcome: Outcome) -> None:
        host = urlsplit(claim.url).hostname
        attempts = self.settings.webhook_max_attempts

        def change(record: JobRecord) -> list[Event] | None:
            hook = record.webhook
            if (
                hook is None
                or hook.state != "pending"
                or hook.delivery_id != claim.delivery_id
                or hook.attempts != claim.attempt
            ):
                return None  # our lease ran out and another worker took over
            now = utcnow()
            hook.lease_until = None
            kind = EventType.WEBHOOK_FAILED
            if outcome.delivered:
                hook.state = "delivered"
                kind = EventType.WEBHOOK_DELIVERED
                message = f"webhook delivered to {host} ({outcome.detail}, attempt {claim.attempt})"
            elif claim.attempt >= attempts or outcome.final:
                hook.state = "failed"
                message = (
                    f"webhook to {host} failed: {outcome.detail} "
                    f"(attempt {claim.attempt} of {attempts}); giving up"
                    if not outcome.final
                    else f"webhook to {host} refused: {outcome.detail}; not retried"
                )
            else:
                delay = self.settings.webhook_backoff_seconds * 2 ** (claim.attempt - 1)
                hook.next_attempt_at = now + timedelta(seconds=delay)
                message = (
                    f"webhook to {host} failed: {outcome.detail} "
                    f"(attempt {claim.attempt} of {attempts}); retrying in {delay:g} s"
                )
            return [
                Event(
                    time=now, type=kind, status=record.status, message=message, actor=SYSTEM_ACTOR
                )
            ]

        try:
            record = self.store.update(claim.name, change)
        except JobNotFound:
            self._release(claim.name)
            return
        if record.webhook is None or record.webhook.state != "pending":
            self._release(claim.name)

    def _release(self, name: str) -> None:
        """Drop the marker of a settled (or deleted) delivery, unless a job created under
        the name since has one pending."""
        (self.markers / name).unlink(missing_ok=True)
        with contextlib.suppress(JobNotFound, ValidationError, OSError):
            current = self.store.get(name)
            if current.webhook is not None and current.webhook.state == "pending":
                (self.markers / name).touch()


def _same_origin_redirect(url: str, response: httpx.Response) -> str | None:
    location = response.headers.get("location")
    if response.status_code not in (307, 308) or not location:
        return None
    target = urljoin(url, location)
    before, after = urlsplit(url), urlsplit(target)
    try:
        same = (before.scheme, before.hostname, before.port) == (
            after.scheme,
            after.hostname,
            after.port,
        )
    except ValueError:
        return None
    return target if same else None


def _redirect_note(response: httpx.Response) -> str:
    if 300 <= response.status_code < 400:
        return " (redirect not followed: only 307/308 to the same host are)"
    return ""
