"""DeploymentService: what the deployment routes ask for. No HTTP in here.

Requests (create, rolling update, down) are decided here under the deployment's lock and
leave the slow work (SkyServe's `up`, `update`, `down`; a local worker's start) to the
tracking pass (`ainfinity.deployments.tracker`), which runs on a timer and after every
request.
"""

from __future__ import annotations

import contextlib
import io
import queue
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from ainfinity.core.config import ApiKey, Settings
from ainfinity.deployments.lifecycle import event, move, utcnow
from ainfinity.deployments.model_files import replica_model
from ainfinity.deployments.serve_render import (
    choose_engine,
    render_service,
    validate_service,
    with_token,
)
from ainfinity.deployments.store import DeploymentPage, DeploymentStore
from ainfinity.exceptions import (
    CatalogUnavailable,
    DeploymentExists,
    DeploymentLimit,
    DeploymentNotFound,
    DeploymentNotReady,
    DeploymentStopped,
    DeploymentUpdating,
    InvalidCursor,
    InvalidSpec,
    NoServiceTask,
    NotImplementedYet,
)
from ainfinity.executors.sky_catalog import estimate_cost
from ainfinity.executors.sky_serve_sdk import SkyServeSdk
from ainfinity.executors.sky_wheel import ServerWheelUnavailable, server_wheel
from ainfinity.executors.skypilot import describe_sky_error
from ainfinity.finops.deployment_costs import deployment_costs
from ainfinity.finops.prices import replica_prices
from ainfinity.jobs.task_render import dump_task
from ainfinity.schema.deployment import (
    Deployment,
    DeploymentCreate,
    DeploymentEvent,
    DeploymentEventType,
    DeploymentRecord,
    DeploymentSpec,
    DeploymentStatus,
    ReplicaPrices,
)
from ainfinity.schema.job import Resources
from ainfinity.serving.registry import ModelRegistry
from ainfinity.store.job_index import decode_cursor

S = DeploymentStatus
_UNPRICED_CLOUDS = frozenset({"kubernetes", "ssh", "slurm", "lambda", "runpod", "vast"})
LogTarget = Literal["controller", "load_balancer", "replica"]


def generate_name() -> str:
    return f"deploy-{utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def public(record: DeploymentRecord, now: datetime | None = None) -> Deployment:
    """The API's view of a record: costs counted at read time."""
    return record.public(**deployment_costs(record, now or datetime.now(timezone.utc)))


class DeploymentService:
    """The control plane's decisions about deployments."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: DeploymentStore,
        registry: ModelRegistry,
        sdk: SkyServeSdk,
        template: dict[str, Any],
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.sdk = sdk
        self.template = template
        # Set by the app: wake the tracking loop early (after a create, update or down).
        self.on_change: Callable[[], None] = lambda: None

    # -- create ----------------------------------------------------------------------------

    def create(self, request: DeploymentCreate, *, caller: ApiKey) -> DeploymentRecord:
        """Validate and render a deployment and store it (PENDING); the tracker starts it."""
        executor = request.executor or self.settings.executor
        if executor not in ("local", "skypilot"):
            raise NotImplementedYet(f"The {executor} executor cannot run deployments.")
        name = request.name or generate_name()
        if self.store.exists(name):
            raise DeploymentExists(f"A deployment named {name!r} already exists.")
        spec = DeploymentSpec.model_validate(
            {**request.model_dump(), "name": name, "executor": executor}
        )
        engine = choose_engine(spec)
        token = secrets.token_urlsafe(32)
        state: dict[str, Any] = {}
        prices = ReplicaPrices()
        task = b""
        if executor == "local":
            self._check_local(spec)
            source = self.registry.serving_source(spec.model, caller=caller)
            state["source"] = asdict(source)
        else:
            rendered = self._render(spec, spec.model, caller=caller)
            task = dump_task(rendered).encode()
            prices = replica_prices(spec.resources)
            _check_offered(spec)
        now = utcnow()
        record = DeploymentRecord(
            name=name,
            status=S.PENDING,
            executor=executor,
            engine=engine,
            model=spec.model,
            spec=spec,
            created_at=now,
            updated_at=now,
            owner=caller.name,
            executor_state=state,
            prices=prices,
        )
        created = event(
            DeploymentEventType.CREATED,
            S.PENDING,
            f"deployment of {spec.model} created ({executor})",
            actor=caller.name,
            time=now,
        )
        self.store.create(record, created, task=task, token=token)
        self.on_change()
        return record

    def _check_local(self, spec: DeploymentSpec) -> None:
        if spec.autoscaling is not None or (spec.replicas or 1) != 1:
            raise InvalidSpec("A local deployment runs one replica, on this server.")
        if spec.resources.model_dump(exclude_defaults=True):
            raise InvalidSpec("resources are for SkyPilot replicas; local ones use this server.")
        running = [
            r
            for r in self.store.all()
            if r.executor == "local" and not r.status.is_final and r.status != S.STOPPING
        ]
        if len(running) >= self.settings.local_max_deployments:
            raise DeploymentLimit(
                f"{len(running)} local deployment(s) run; this server allows "
                f"{self.settings.local_max_deployments} (AINFINITY_LOCAL_MAX_DEPLOYMENTS)."
            )

    def _render(self, spec: DeploymentSpec, model_id: str, *, caller: ApiKey) -> dict[str, Any]:
        """The SkyServe task serving `model_id`, checked by SkyPilot's own code (422)."""
        model = replica_model(self.registry, model_id, caller=caller)
        engine = choose_engine(spec)
        task = render_service(
            self.template,
            spec.model_copy(update={"model": model_id}),
            model,
            engine=engine,
            pip_spec=self.settings.skypilot_pip_spec,
            wheel=self._replica_wheel() if engine == "transformers" else None,
        )
        # Checked as SkyPilot will get it: with a token in the secret the probe sends.
        validate_service(with_token(task, "x" * 43))
        return task

    def _replica_wheel(self) -> Path | None:
        """This server's ainfinity as a wheel for transformers replicas, unless a pip spec
        is set (no package index carries ainfinity)."""
        if self.settings.skypilot_pip_spec is not None:
            return None
        try:
            return server_wheel(self.settings.home)
        except ServerWheelUnavailable as exc:
            raise InvalidSpec(str(exc)) from None

    # -- read ------------------------------------------------------------------------------

    def get(self, name: str, *, caller: ApiKey) -> DeploymentRecord:
        record = self.store.get(name)
        if caller.role != "admin" and record.owner != caller.name:
            raise DeploymentNotFound(f"No deployment named {name!r}.")
        return record

    def page(
        self, *, limit: int, cursor: str | None, status: DeploymentStatus | None, caller: ApiKey
    ) -> DeploymentPage:
        after = None
        if cursor is not None:
            after = decode_cursor(cursor)
            if after is None:
                raise InvalidCursor("The cursor is not one this server issued.")
        owner = None if caller.role == "admin" else caller.name
        return self.store.page(limit=limit, after=after, status=status, owner=owner)

    def events(self, name: str, *, caller: ApiKey) -> list[DeploymentEvent]:
        self.get(name, caller=caller)
        return self.store.read_events(name)

    def task_yaml(self, name: str, *, caller: ApiKey) -> bytes:
        record = self.get(name, caller=caller)
        if record.executor != "skypilot":
            raise NoServiceTask(f"{name!r} runs on this server; it has no SkyServe task.")
        return self.store.paths(name).task.read_bytes()

    def logs(
        self,
        name: str,
        *,
        caller: ApiKey,
        target: LogTarget,
        replica: int | None,
        follow: bool,
    ) -> Iterator[bytes]:
        """The controller's, load balancer's or a replica's log (SkyServe), or the local
        worker's log; SkyServe's is read in a thread and handed over as it comes."""
        record = self.get(name, caller=caller)
        if record.executor == "local":
            path = self.store.paths(name).worker / "worker.log"
            return iter([path.read_bytes()] if path.is_file() else [])
        if target == "replica" and replica is None:
            raise InvalidSpec("target=replica needs replica=<id>.")
        return _stream_logs(
            lambda sink: self.sdk.tail_logs(
                name,
                target=target,
                replica_id=replica if target == "replica" else None,
                follow=follow,
                sink=sink,
            )
        )

    # -- change ----------------------------------------------------------------------------

    def update(self, name: str, *, model: str, caller: ApiKey) -> DeploymentRecord:
        """A rolling update to `model`: UPDATING until the new replicas are ready."""
        record = self.get(name, caller=caller)
        self._check_updatable(record)
        files: dict[str, bytes] = {}
        next_source: dict[str, Any] | None = None
        if record.executor == "local":
            next_source = asdict(self.registry.serving_source(model, caller=caller))
        else:
            task = self._render(record.spec, model, caller=caller)
            files[self.store.paths(name).next_task.name] = dump_task(task).encode()

        def change(current: DeploymentRecord) -> list[DeploymentEvent]:
            self._check_updatable(current)
            current.updating_to = model
            if next_source is not None:
                current.executor_state["next_source"] = next_source
            for key in ("update_request_id", "update_submitted"):
                current.executor_state.pop(key, None)
            return [
                event(
                    DeploymentEventType.UPDATE_REQUESTED,
                    S.UPDATING,
                    f"rolling update {current.model} -> {model}",
                    actor=caller.name,
                ),
                move(current, S.UPDATING, f"updating to {model}", actor=caller.name),
            ]

        updated = self.store.update(name, change, files=files)
        self.on_change()
        return updated

    @staticmethod
    def _check_updatable(record: DeploymentRecord) -> None:
        if record.status.is_final or record.status == S.STOPPING:
            raise DeploymentStopped(f"{record.name!r} is {record.status.value}.")
        if record.status == S.UPDATING:
            raise DeploymentUpdating(f"{record.name!r} is already updating.")
        if record.status not in (S.READY, S.NOT_READY):
            raise DeploymentNotReady(
                f"{record.name!r} is {record.status.value}; update it once READY."
            )

    def down(self, name: str, *, caller: ApiKey) -> DeploymentRecord:
        """Tear the deployment down (SkyServe's `down`): STOPPING, then STOPPED. The record
        stays. A FAILED SkyPilot deployment may be taken down too (what SkyServe left)."""

        def change(record: DeploymentRecord) -> list[DeploymentEvent] | None:
            if record.status == S.STOPPING:
                return None
            if record.status == S.STOPPED or (
                record.status == S.FAILED and record.executor != "skypilot"
            ):
                raise DeploymentStopped(f"{name!r} is already {record.status.value}.")
            if record.status == S.FAILED:
                record.stopped_at = None
            record.down_requested_at = utcnow()
            return [
                event(
                    DeploymentEventType.DOWN_REQUESTED,
                    S.STOPPING,
                    "down requested",
                    actor=caller.name,
                ),
                move(record, S.STOPPING, "stopping", actor=caller.name),
            ]

        self.get(name, caller=caller)
        record = self.store.update(name, change)
        self.on_change()
        return record


def _check_offered(spec: DeploymentSpec) -> None:
    """422 when SkyPilot's catalog offers the accelerators nowhere asked (its optimizer
    would refuse the service at launch); clouds without a price list are not checked."""
    wanted = spec.resources
    if wanted.accelerators is None or wanted.cloud in _UNPRICED_CLOUDS:
        return
    with contextlib.suppress(CatalogUnavailable):  # unknown now; SkyPilot decides at launch
        estimate_cost(
            Resources(
                accelerators=wanted.accelerators,
                cloud=wanted.cloud,
                region=wanted.region,
                use_spot=wanted.use_spot,
            )
        )


class _QueueSink(io.TextIOBase):
    def __init__(self, chunks: queue.Queue[str | None]) -> None:
        super().__init__()
        self.chunks = chunks

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self.chunks.put(text)
        return len(text)


def _stream_logs(tail: Callable[[io.TextIOBase], None]) -> Iterator[bytes]:
    chunks: queue.Queue[str | None] = queue.Queue()

    def run() -> None:
        try:
            tail(_QueueSink(chunks))
        except Exception as exc:  # noqa: BLE001 - shown to the reader, in words
            chunks.put(f"\n[ainfinity] SkyServe's log cannot be read: {describe_sky_error(exc)}\n")
        finally:
            chunks.put(None)

    threading.Thread(target=run, name="skyserve-logs", daemon=True).start()

    def read() -> Iterator[bytes]:
        while (chunk := chunks.get()) is not None:
            yield chunk.encode()

    return read()
