"""Cost per API key and UTC day, for SkyPilot jobs and deployments (`GET /api/v1/usage`).

Counted from what the records hold (a job's cluster window and price, a deployment's replica
timestamps and prices), up to now for what still runs; local work has no price.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import date, datetime, timezone

from ainfinity.core.config import ApiKey
from ainfinity.deployments.store import DeploymentStore
from ainfinity.finops.deployment_costs import billed_spans
from ainfinity.finops.job_costs import by_day, cluster_window
from ainfinity.schema.job import JobRecord
from ainfinity.schema.usage import Usage, UsageRow
from ainfinity.store.job_store import JobStore

_PAGE = 100


def usage(*, jobs: JobStore, deployments: DeploymentStore, caller: ApiKey) -> Usage:
    owner = None if caller.role == "admin" else caller.name
    now = datetime.now(timezone.utc)
    spent: dict[tuple[str, date], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for record in _all_jobs(jobs, owner):
        cluster = record.executor_state.get("cluster")
        if not isinstance(cluster, dict) or cluster.get("cost_per_hour") is None:
            continue
        window = cluster_window(cluster, finished_at=record.finished_at, now=now)
        if window is None:
            continue
        for day, cost in by_day(float(cluster["cost_per_hour"]), *window).items():
            spent[(record.owner or "", day)][0] += cost
    for deployment in deployments.all():
        if owner is not None and deployment.owner != owner:
            continue
        for price, start, end in billed_spans(deployment, now):
            for day, cost in by_day(price, start, end).items():
                spent[(deployment.owner or "", day)][1] += cost
    rows = [
        UsageRow(
            key=key,
            day=day,
            jobs=round(job_cost, 6),
            deployments=round(deploy_cost, 6),
            total=round(job_cost + deploy_cost, 6),
        )
        for (key, day), (job_cost, deploy_cost) in sorted(
            spent.items(), key=lambda item: (item[0][1], item[0][0])
        )
    ]
    return Usage(data=rows, total=round(sum(row.total for row in rows), 6))


def _all_jobs(jobs: JobStore, owner: str | None) -> Iterator[JobRecord]:
    cursor = None
    while True:
        page = jobs.list_jobs(limit=_PAGE, cursor=cursor, owner=owner)
        yield from page.jobs
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
