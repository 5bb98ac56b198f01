"""`/api/v1/usage`: what SkyPilot jobs and deployments cost, per API key and UTC day."""

from __future__ import annotations

from fastapi import APIRouter

from ainfinity.api.dependencies import CurrentKey, DeploymentsDep, StoreDep
from ainfinity.finops.usage import usage
from ainfinity.schema.usage import Usage

router = APIRouter(prefix="/usage", tags=["usage"])


@router.get("")
def get_usage(store: StoreDep, deployments: DeploymentsDep, key: CurrentKey) -> Usage:
    """Cost per key and day at SkyPilot's catalog prices (a `user` key sees its own)."""
    return usage(jobs=store, deployments=deployments.store, caller=key)
