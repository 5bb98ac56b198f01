"""Waiting on an asyncio.Event with a timeout, without losing a cancellation.

Before Python 3.12, `asyncio.wait_for` can swallow a cancellation that arrives just as its
timeout fires. A background loop that waits that way can then outlive its `task.cancel()`,
and a shutdown that awaits it hangs (seen with the deployment tracker's 50 ms ticks in
tests). `asyncio.wait` leaves the cancellation to the caller.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set or `timeout` seconds pass; True when it was set."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return event.is_set()
