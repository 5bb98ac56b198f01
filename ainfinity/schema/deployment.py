"""Deployment models: a model served from replicas of its own, locally or on SkyServe."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ainfinity.schema.base import PublicModel, StrictModel
from ainfinity.schema.job import (
    ACCELERATORS_PATTERN,
    CLOUD_PATTERN,
    JOB_NAME_PATTERN,
    REGION_PATTERN,
    MetadataKey,
    MetadataValue,
)

ModelId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=512,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="Any model id `/v1` serves: a base model or a fine-tuned one you may see.",
        examples=["ft:tiny-random-llama:llama-sft-1"],
    ),
]


class DeploymentStatus(str, Enum):
    """Lifecycle of a deployment. READY: at least one replica answers; NOT_READY: it did,
    and none does now (preempted, scaled to zero, restarting); UPDATING: a rolling update to
    another model is under way. STOPPED and FAILED are final."""

    PENDING = "PENDING"
    PROVISIONING = "PROVISIONING"
    READY = "READY"
    NOT_READY = "NOT_READY"
    UPDATING = "UPDATING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (DeploymentStatus.STOPPED, DeploymentStatus.FAILED)


class DeploymentResources(StrictModel):
    """What each replica runs on (SkyPilot); the fields mean what they mean for jobs."""

    accelerators: str | None = Field(None, pattern=ACCELERATORS_PATTERN, examples=["L4:1"])
    cloud: str | None = Field(None, pattern=CLOUD_PATTERN)
    region: str | None = Field(None, pattern=REGION_PATTERN)
    use_spot: bool = Field(False, description="Spot replicas: SkyServe replaces a preempted one.")


class Autoscaling(StrictModel):
    """SkyServe's `replica_policy`: replicas follow the load between two bounds."""

    min_replicas: int = Field(1, ge=0, le=100, description="0 lets the service scale to zero.")
    max_replicas: int = Field(ge=1, le=100)
    target_qps_per_replica: float = Field(
        gt=0, le=10_000, description="Requests per second one replica should take."
    )

    @model_validator(mode="after")
    def _bounds_in_order(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


class DeploymentCreate(StrictModel):
    """Body of `POST /api/v1/deployments`."""

    name: str | None = Field(None, pattern=JOB_NAME_PATTERN, examples=["support-bot"])
    model: ModelId
    executor: Literal["local", "skypilot"] | None = Field(
        None, description="Defaults to the server's AINFINITY_EXECUTOR."
    )
    engine: Literal["auto", "transformers", "vllm"] = Field(
        "auto",
        description="`auto`: vLLM on GPU replicas, transformers otherwise (and locally).",
    )
    resources: DeploymentResources = Field(default_factory=DeploymentResources)
    replicas: int | None = Field(
        None, ge=1, le=100, description="A fixed number of replicas (default 1)."
    )
    autoscaling: Autoscaling | None = Field(
        None, description="Instead of `replicas`: SkyServe scales with the load."
    )
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=64)

    @field_validator("metadata")
    @classmethod
    def _metadata_without_nul(cls, value: dict[str, str]) -> dict[str, str]:
        if any("\x00" in v for v in value.values()):
            raise ValueError("metadata values may not contain NUL bytes")
        return value

    @model_validator(mode="after")
    def _one_way_to_scale(self) -> DeploymentCreate:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("give replicas or autoscaling, not both")
        return self


class DeploymentSpec(DeploymentCreate):
    """A `DeploymentCreate` after the server filled its defaults."""

    name: str = Field(pattern=JOB_NAME_PATTERN)
    executor: Literal["local", "skypilot"]
    engine: Literal["auto", "transformers", "vllm"]


class DeploymentUpdate(StrictModel):
    """Body of `PATCH /api/v1/deployments/{name}`: a rolling update to another model."""

    model: ModelId


class Replica(PublicModel):
    """One replica: SkyServe's status for it (`PENDING`, `PROVISIONING`, `STARTING`, `READY`,
    `NOT_READY`, `SHUTTING_DOWN`, `FAILED...`, `PREEMPTED`), where it answers, and the times
    its cost is counted between."""

    id: int
    status: str
    endpoint: str | None = None
    version: int | None = None
    is_spot: bool | None = None
    launched_at: datetime | None = None
    ended_at: datetime | None = None
    hourly_price: float | None = Field(None, description="USD per hour, from the catalog.")


class Deployment(PublicModel):
    """A deployment as the API shows it."""

    name: str
    status: DeploymentStatus
    executor: str
    engine: Literal["transformers", "vllm"]
    model: str = Field(description="The model it serves now.")
    updating_to: str | None = Field(
        None, description="The model a rolling update (PATCH) is moving it to."
    )
    spec: DeploymentSpec
    created_at: datetime
    updated_at: datetime
    ready_at: datetime | None = None
    stopped_at: datetime | None = None
    failure_reason: str | None = None
    endpoint: str | None = Field(
        None,
        description="The service's endpoint (SkyServe's load balancer); it asks for a "
        "token only the control plane holds: call the model through `/v1`.",
    )
    service_status: str | None = Field(None, description="SkyServe's own status of it.")
    replicas: list[Replica] = Field(default_factory=list)
    cost_per_replica_hour: float | None = Field(
        None, description="USD per replica-hour from SkyPilot's catalog (spot or on-demand)."
    )
    cost_per_hour: float | None = Field(
        None, description="USD per hour of the replicas running now."
    )
    cost_to_date: float | None = Field(
        None, description="USD so far: each replica's hours (from its timestamps) × its price."
    )


class ReplicaPrices(PublicModel):
    """What one replica costs per hour, both ways SkyServe may rent it."""

    on_demand: float | None = None
    spot: float | None = None

    def of(self, *, spot: bool) -> float | None:
        return self.spot if spot else self.on_demand


_PUBLIC_FIELDS = set(Deployment.model_fields)


class DeploymentRecord(Deployment):
    """What `deployment.json` holds: the public deployment plus what only the server needs."""

    owner: str | None = None
    executor_state: dict[str, Any] = Field(default_factory=dict)
    prices: ReplicaPrices = Field(default_factory=ReplicaPrices)
    down_requested_at: datetime | None = None

    def public(self, **computed: Any) -> Deployment:
        """The public view, with what is computed at read time (costs, replica prices)."""
        return Deployment.model_validate({**self.model_dump(include=_PUBLIC_FIELDS), **computed})


class DeploymentList(PublicModel):
    """One page of deployments, newest first."""

    data: list[Deployment]
    has_more: bool
    next_cursor: str | None = None


class DeploymentEventType(str, Enum):
    CREATED = "created"
    STATUS_CHANGED = "status_changed"
    SERVICE_STATUS = "service_status"
    REPLICA_STATUS = "replica_status"
    UPDATE_REQUESTED = "update_requested"
    UPDATED = "updated"
    UPDATE_FAILED = "update_failed"
    DOWN_REQUESTED = "down_requested"


class DeploymentEvent(PublicModel):
    """One entry of a deployment's `events.jsonl`."""

    time: datetime
    type: DeploymentEventType
    status: DeploymentStatus
    message: str
    actor: str


class DeploymentEventList(PublicModel):
    data: list[DeploymentEvent]
