"""Where a webhook may go: never to this server's own network, unless the operator says so.

A `user` key chooses a job's `webhook_url`, and the server POSTs there: without a guard, a
key holder could aim it at the cloud metadata address (169.254.169.254), at loopback, or at
a private network. So by default a webhook refuses loopback, link-local, private, shared,
multicast, reserved and unspecified addresses, and `AINFINITY_WEBHOOK_HOSTS` both confines
the hosts (when set) and is the only way to allow an internal one (by naming it).

The check is made on the address the name resolves to when the delivery connects (the
connection goes to that very address), so DNS cannot hand over an internal address after a
check of the name; a literal address is checked at `POST /jobs` already.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

from ainfinity.exceptions import WebhookNotAllowed


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower().rstrip(".")


def named(host: str, allowed: Sequence[str]) -> bool:
    """Whether `host` is one the allow-list names (`host`, or `*.domain` for subdomains)."""
    for pattern in (entry.lower().rstrip(".") for entry in allowed):
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


def internal(address: str) -> bool:
    """Loopback, link-local, private, shared (100.64/10), multicast, reserved, unspecified."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_webhook_url(url: str, allowed: Sequence[str]) -> None:
    """At `POST /jobs`: a host outside a set allow-list, or a literal internal address the
    list does not name, is 403 `webhook_not_allowed`."""
    host = host_of(url)
    if allowed and not named(host, allowed):
        raise WebhookNotAllowed()
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return  # a name: checked on what it resolves to, when the delivery connects
    if internal(str(literal)) and not named(host, allowed):
        raise WebhookNotAllowed(
            f"Webhooks to internal addresses ({host}) are refused unless AINFINITY_WEBHOOK_HOSTS "
            "names them."
        )


class InternalAddressRefused(httpcore.ConnectError):
    """The webhook's host resolved to an internal address the allow-list does not name."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving each host itself and connecting to an address
    that passed the check (TLS still verifies the host's name: httpcore passes it on)."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, allowed: Sequence[str]) -> None:
        self.inner = inner
        self.allowed = list(allowed)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await _resolve(host, port)
        if not named(host.lower().rstrip("."), self.allowed):
            refused = [address for address in addresses if internal(address)]
            if refused:
                raise InternalAddressRefused(
                    f"{host} resolves to an internal address ({refused[0]}); "
                    "AINFINITY_WEBHOOK_HOSTS must name it to allow it"
                )
        return await self.inner.connect_tcp(
            addresses[0], port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are never delivered to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


async def _resolve(host: str, port: int) -> list[str]:
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        return [str(literal)]
    except ValueError:
        pass
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise httpcore.ConnectError(f"{host} has no address")
    return addresses


def guarded_transport(allowed: Sequence[str]) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every connection goes through `GuardedBackend`."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx builds its pool with httpcore's default backend and offers no argument for
    # another one; the pool keeps it in this attribute (httpcore 1.x).
    pool = transport._pool
    pool._network_backend = GuardedBackend(pool._network_backend, allowed)
    return transport
