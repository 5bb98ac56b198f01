"""The background loops' wait (`wait_event`) never loses a cancellation.

Before Python 3.12, `asyncio.wait_for(event.wait(), timeout)` returns normally when the event
is set in the same loop iteration as the task's cancel(), so a `while True` loop outlived
its cancellation and a shutdown awaiting it hung (seen with the deployment tracker).
"""

from __future__ import annotations

import asyncio

from ainfinity.core.event_wait import wait_event


async def tick_forever(wake: asyncio.Event) -> None:
    while True:
        await wait_event(wake, 0.05)
        wake.clear()


def test_a_loop_woken_as_it_is_cancelled_still_ends() -> None:
    async def scenario() -> int:
        outlived = 0
        for _ in range(20):
            wake = asyncio.Event()
            task = asyncio.create_task(tick_forever(wake))
            await asyncio.sleep(0.001)
            wake.set()  # a request's wake-up, in the same iteration as the shutdown's cancel
            task.cancel()
            _, pending = await asyncio.wait({task}, timeout=1)
            outlived += len(pending)
            for stuck in pending:
                stuck.cancel()
        return outlived

    assert asyncio.run(scenario()) == 0


def test_it_reports_whether_the_event_was_set() -> None:
    async def scenario() -> tuple[bool, bool]:
        wake = asyncio.Event()
        timed_out = await wait_event(wake, 0.01)
        asyncio.get_running_loop().call_later(0.01, wake.set)
        woken = await wait_event(wake, 5)
        return timed_out, woken

    assert asyncio.run(scenario()) == (False, True)
