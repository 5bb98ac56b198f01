"""Cost arithmetic shared by jobs and deployments: hours between two moments at an hourly
price, and the same spread over UTC days. Nothing here reads a catalog."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from typing import Any

_HOUR = 3600.0


def cost_between(hourly: float, start: datetime, end: datetime) -> float:
    """`hourly` USD for the time from `start` to `end` (nothing for an empty span)."""
    seconds = (end - start).total_seconds()
    return hourly * max(0.0, seconds) / _HOUR


def by_day(hourly: float, start: datetime, end: datetime) -> dict[date, float]:
    """The cost of `start` to `end`, split at each UTC midnight."""
    spent: dict[date, float] = {}
    start, end = start.astimezone(timezone.utc), end.astimezone(timezone.utc)
    while start < end:
        midnight = datetime.combine(
            start.date() + timedelta(days=1), datetime.min.time(), timezone.utc
        )
        stop = min(end, midnight)
        spent[start.date()] = spent.get(start.date(), 0.0) + cost_between(hourly, start, stop)
        start = stop
    return spent


def cluster_window(
    cluster: Mapping[str, Any], *, finished_at: datetime | None, now: datetime
) -> tuple[datetime, datetime] | None:
    """When a SkyPilot job's cluster ran it: SkyPilot's `start_at` to its `end_at` (else
    the job's end, else now); None before it started."""
    started = cluster.get("start_at")
    if started is None:
        return None
    ended = cluster.get("end_at")
    start = datetime.fromtimestamp(float(started), tz=timezone.utc)
    if ended is not None:
        return start, datetime.fromtimestamp(float(ended), tz=timezone.utc)
    return start, finished_at or now


def job_costs(
    executor_state: Mapping[str, Any], *, finished_at: datetime | None, now: datetime
) -> dict[str, float | None]:
    """`cost_per_hour` and `cost_to_date` of a SkyPilot job, from the cluster it ran on."""
    cluster = executor_state.get("cluster")
    if not isinstance(cluster, Mapping) or cluster.get("cost_per_hour") is None:
        return {"cost_per_hour": None, "cost_to_date": None}
    hourly = float(cluster["cost_per_hour"])
    window = cluster_window(cluster, finished_at=finished_at, now=now)
    spent = cost_between(hourly, *window) if window else 0.0
    return {"cost_per_hour": hourly, "cost_to_date": round(spent, 6)}
