"""What `GET /api/v1/usage` answers: cost per API key and UTC day."""

from __future__ import annotations

from datetime import date

from pydantic import Field

from ainfinity.schema.base import PublicModel


class UsageRow(PublicModel):
    """What one key's jobs and deployments cost on one UTC day (USD, catalog prices)."""

    key: str = Field(description="The API key's name (the owner of the jobs and deployments).")
    day: date
    jobs: float = Field(description="SkyPilot jobs: their clusters' hours that day × price.")
    deployments: float = Field(description="Deployments: replica-hours that day × price.")
    total: float


class Usage(PublicModel):
    """Rows oldest day first, then by key; a `user` key sees its own rows only."""

    data: list[UsageRow]
    total: float
