"""`Annotated` dependency aliases: handlers ask for what they need by type."""

from typing import Annotated

from fastapi import Depends, Request, Security

from ainfinity.core.config import ApiKey, Settings
from ainfinity.deployments.service import DeploymentService
from ainfinity.files.service import FileService
from ainfinity.finetuning.service import FineTuningService
from ainfinity.jobs.service import SkyPilotService
from ainfinity.middleware.auth import require_api_key
from ainfinity.observability.prometheus import ApiMetrics
from ainfinity.serving.service import ServingService
from ainfinity.store.job_store import JobStore


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


async def get_service(request: Request) -> SkyPilotService:
    service: SkyPilotService = request.app.state.service
    return service


async def get_serving(request: Request) -> ServingService:
    serving: ServingService = request.app.state.serving
    return serving


async def get_files(request: Request) -> FileService:
    files: FileService = request.app.state.files
    return files


async def get_fine_tuning(request: Request) -> FineTuningService:
    fine_tuning: FineTuningService = request.app.state.fine_tuning
    return fine_tuning


async def get_deployments(request: Request) -> DeploymentService:
    deployments: DeploymentService = request.app.state.deployments
    return deployments


async def get_metrics(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
ServiceDep = Annotated[SkyPilotService, Depends(get_service)]
ServingDep = Annotated[ServingService, Depends(get_serving)]
FilesDep = Annotated[FileService, Depends(get_files)]
FineTuningDep = Annotated[FineTuningService, Depends(get_fine_tuning)]
DeploymentsDep = Annotated[DeploymentService, Depends(get_deployments)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
CurrentKey = Annotated[ApiKey, Security(require_api_key)]
