"""Cost estimates: what a job's resources cost per hour at SkyPilot's catalog prices."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ainfinity.schema.base import PublicModel


class Offer(PublicModel):
    """One way to run the job: an instance type in one cloud region."""

    cloud: str = Field(examples=["GCP"])
    region: str = Field(examples=["us-central1"])
    instance_type: str | None = Field(None, examples=["a2-highgpu-8g"])
    accelerators: str = Field(examples=["A100:8"], description="Per node.")
    use_spot: bool
    hourly_price_per_node: float = Field(description="USD per hour for one node.")
    hourly_price_total: float = Field(description="USD per hour for all num_nodes nodes.")


class CostEstimate(PublicModel):
    """The cheapest offer for a job's resources, and the next cheapest instance types.

    List prices from SkyPilot's catalog, compute only: disks, egress and the jobs
    controller are not included, and spot prices change by the hour.
    """

    accelerators: str = Field(examples=["A100:8"])
    num_nodes: int
    use_spot: bool
    currency: Literal["USD"] = "USD"
    clouds: list[str] = Field(description="The clouds whose catalogs were searched.")
    cheapest: Offer
    alternatives: list[Offer] = Field(
        description="The cheapest offer of each other instance type, cheapest first."
    )
