"""Hourly prices from SkyPilot's catalog: a deployment's replica (spot and on-demand), and
the cluster a SkyPilot job ran on.

Prices come from the same offline catalog as `POST /jobs/estimate` (the cheapest matching
instance type). A lookup reads CSVs with pandas, so answers are cached per process. What the
catalog cannot price (no accelerator named, a Kubernetes or Slurm cluster) has no price:
None, never a guess.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ainfinity.exceptions import CatalogUnavailable, InvalidSpec
from ainfinity.executors.sky_catalog import estimate_cost
from ainfinity.schema.deployment import DeploymentResources, ReplicaPrices
from ainfinity.schema.job import Resources

if TYPE_CHECKING:
    from sky.schemas.api.responses import ManagedJobRecord

logger = logging.getLogger("ainfinity.finops")


def hourly_price(
    accelerators: str,
    *,
    cloud: str | None,
    region: str | None,
    use_spot: bool,
    num_nodes: int = 1,
) -> float | None:
    """USD per hour for `num_nodes` nodes with these accelerators; None when unpriced."""
    try:
        return _cheapest(accelerators, cloud, region, use_spot, num_nodes)
    except CatalogUnavailable as exc:  # not cached: the next look may find the catalog
        logger.warning("no price for %s: %s", accelerators, exc.detail_msg)
        return None


@lru_cache(maxsize=512)
def _cheapest(
    accelerators: str, cloud: str | None, region: str | None, use_spot: bool, num_nodes: int
) -> float | None:
    try:
        requested = Resources(
            accelerators=accelerators,
            cloud=cloud,
            region=region,
            use_spot=use_spot,
            num_nodes=num_nodes,
        )
        return estimate_cost(requested).cheapest.hourly_price_total
    except (InvalidSpec, ValidationError):
        return None


def replica_prices(resources: DeploymentResources) -> ReplicaPrices:
    """What one replica costs per hour, on-demand and spot (SkyServe may mix them)."""
    if resources.accelerators is None:
        return ReplicaPrices()
    where: dict[str, Any] = {"cloud": resources.cloud, "region": resources.region}
    return ReplicaPrices(
        on_demand=hourly_price(resources.accelerators, use_spot=False, **where),
        spot=hourly_price(resources.accelerators, use_spot=True, **where),
    )


def cluster_facts(found: ManagedJobRecord, requested: Resources) -> dict[str, Any] | None:
    """Where a managed job ran (SkyPilot's record of it), with that cluster's hourly price;
    None while SkyPilot knows nothing of a cluster yet."""
    if found.start_at is None and found.cloud is None:
        return None
    accelerators = _accelerators(found.accelerators) or requested.accelerators
    cloud = (found.cloud or requested.cloud or "").lower() or None
    region = found.region or requested.region
    price = (
        hourly_price(
            accelerators,
            cloud=cloud,
            region=region,
            use_spot=requested.use_spot,
            num_nodes=requested.num_nodes,
        )
        if accelerators
        else None
    )
    return {
        "cloud": cloud,
        "region": region,
        "accelerators": accelerators,
        "start_at": found.start_at,
        "end_at": found.end_at,
        "cost_per_hour": price,
    }


def _accelerators(found: dict[str, int | float] | None) -> str | None:
    """SkyPilot's `{"L4": 1}` as `L4:1`; fractional GPUs have no catalog row."""
    if not found:
        return None
    name, count = next(iter(found.items()))
    return f"{name}:{int(count)}" if float(count).is_integer() and count >= 1 else None
