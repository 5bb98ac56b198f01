"""What a deployment costs: each replica's hours, from its timestamps, times its price.

A replica is billed from its cluster's launch (`launched_at`, SkyPilot's) until it was seen
ended (preempted, failed, shut down, or dropped by SkyServe) or, while it lives, until now.
Its price is the catalog's spot or on-demand price, as the replica is (`is_spot`). Local
deployments run on this server: they have no price.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from ainfinity.finops.job_costs import cost_between
from ainfinity.schema.deployment import DeploymentRecord, Replica


def replica_price(record: DeploymentRecord, replica: Replica) -> float | None:
    spot = replica.is_spot if replica.is_spot is not None else record.spec.resources.use_spot
    return record.prices.of(spot=spot)


def billed_spans(
    record: DeploymentRecord, now: datetime
) -> Iterator[tuple[float, datetime, datetime]]:
    """(hourly price, start, end) of every replica that has a price and was launched."""
    for replica in record.replicas:
        price = replica_price(record, replica)
        if price is not None and replica.launched_at is not None:
            yield price, replica.launched_at, replica.ended_at or now


def deployment_costs(record: DeploymentRecord, now: datetime) -> dict[str, Any]:
    """The public view's cost fields, and its replicas with their prices."""
    replicas = [
        replica.model_copy(update={"hourly_price": replica_price(record, replica)})
        for replica in record.replicas
    ]
    per_replica = record.prices.of(spot=record.spec.resources.use_spot)
    priced = record.prices.on_demand is not None or record.prices.spot is not None
    if not priced:
        return {
            "replicas": replicas,
            "cost_per_replica_hour": None,
            "cost_per_hour": None,
            "cost_to_date": None,
        }
    spent = sum(cost_between(price, start, end) for price, start, end in billed_spans(record, now))
    running = sum(
        replica.hourly_price or 0.0
        for replica in replicas
        if replica.ended_at is None and replica.launched_at is not None
    )
    return {
        "replicas": replicas,
        "cost_per_replica_hour": per_replica,
        "cost_per_hour": round(running, 6),
        "cost_to_date": round(spent, 6),
    }
