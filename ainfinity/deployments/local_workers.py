"""Local deployments: one dedicated inference worker each, its model pinned.

Every API process keeps, for each local deployment that should run, a `WorkerSupervisor`
(the same babysitter as the on-demand worker, from the deployment's own directory) and a
gateway with slots of its own. As for the on-demand worker, one process (the first to take
the directory's lock) starts the worker and restarts it when it crashes; the others talk to
it through its socket, and take over if that process dies. The worker loads the model before
it answers its first health check and never loads another: nothing evicts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from ainfinity.core.config import Settings
from ainfinity.deployments.store import DeploymentStore
from ainfinity.schema.deployment import DeploymentRecord, DeploymentStatus
from ainfinity.serving.gateway import Gateway
from ainfinity.serving.model_source import ModelSource
from ainfinity.serving.supervisor import WorkerSupervisor

logger = logging.getLogger("ainfinity.deployments")


def running_source(record: DeploymentRecord) -> ModelSource:
    """The model the deployment's worker is to hold now: the new one during an update."""
    state = record.executor_state
    raw = state["next_source"] if record.updating_to is not None else state["source"]
    return ModelSource(**raw)


def should_run(record: DeploymentRecord) -> bool:
    return (
        record.executor == "local"
        and not record.status.is_final
        and record.status != DeploymentStatus.STOPPING
    )


@dataclass
class _Worker:
    source: ModelSource
    supervisor: WorkerSupervisor
    gateway: Gateway
    babysitter: asyncio.Task[None]


class LocalDeployments:
    """This process's workers of the local deployments."""

    def __init__(self, settings: Settings, store: DeploymentStore) -> None:
        self.settings = settings
        self.store = store
        self._workers: dict[str, _Worker] = {}

    async def sync(self, records: list[DeploymentRecord]) -> None:
        """Babysit a worker for each local deployment that should run, with the model it
        should hold; stop the others (run by every process, on each tick)."""
        wanted = {record.name: record for record in records if should_run(record)}
        for name, worker in list(self._workers.items()):
            record = wanted.get(name)
            if record is None or running_source(record) != worker.source:
                await self._stop(name)
        for name, record in wanted.items():
            if name not in self._workers:
                self._start(name, running_source(record))

    def _start(self, name: str, source: ModelSource) -> None:
        supervisor = WorkerSupervisor(
            self.settings, directory=self.store.paths(name).worker, pinned=source
        )
        gateway = Gateway(
            self.settings, supervisor, max_concurrency=self.settings.deploy_max_concurrency
        )
        supervisor.want()
        task = asyncio.create_task(supervisor.run_forever(), name=f"deployment-{name}")
        self._workers[name] = _Worker(source, supervisor, gateway, task)
        logger.info("deployment %s: worker wanted for %s", name, source.id)

    async def _stop(self, name: str) -> None:
        worker = self._workers.pop(name)
        worker.supervisor.unwant()
        worker.babysitter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker.babysitter
        await worker.gateway.close()
        await worker.supervisor.stop()

    def state_of(self, name: str) -> dict[str, Any] | None:
        """The worker's status (`starting`, `ready`, `restarting`, `failed`, `stopped`), as
        its supervising process last wrote it; None when this process runs none for it."""
        worker = self._workers.get(name)
        return worker.supervisor.shared_state() if worker is not None else None

    def gateway_of(self, name: str) -> Gateway | None:
        worker = self._workers.get(name)
        return worker.gateway if worker is not None else None

    async def close(self) -> None:
        """Server shutdown: the workers stop with the process that supervises them."""
        for name in list(self._workers):
            worker = self._workers.pop(name)
            worker.babysitter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker.babysitter
            await worker.gateway.close()
            await worker.supervisor.stop()
