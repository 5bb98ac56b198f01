"""The app factory. `uvicorn ainfinity.api.main:app` serves the app built from the
environment; tests build their own with `create_app(settings)`.

Building an app touches no files: the store, the API key file and the reconciler all
start in the lifespan, so importing this module is free of side effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI, Request

from ainfinity import __version__
from ainfinity.api.dashboard import install_dashboard
from ainfinity.api.docs import install_docs
from ainfinity.api.metrics import build_metrics_router
from ainfinity.api.openai import openai_router
from ainfinity.api.openapi_schema import install_openapi
from ainfinity.api.v1 import api_router
from ainfinity.core.config import ApiKey, Settings, get_settings
from ainfinity.core.event_wait import wait_event
from ainfinity.core.logging import configure_logging
from ainfinity.deployments.local_workers import LocalDeployments
from ainfinity.deployments.routing import DeploymentRouter
from ainfinity.deployments.serve_render import load_serve_template
from ainfinity.deployments.service import DeploymentService
from ainfinity.deployments.store import DeploymentStore
from ainfinity.deployments.tracker import DeploymentTracker, track_forever
from ainfinity.exceptions import register_exception_handlers
from ainfinity.executors.local import LocalExecutor
from ainfinity.executors.sky_sdk import SkyPilotClient, SkyPilotSdk
from ainfinity.executors.sky_serve_sdk import SkyServeClient, SkyServeSdk
from ainfinity.executors.skypilot import SkyPilotExecutor
from ainfinity.files.service import FileService
from ainfinity.finetuning.service import FineTuningService
from ainfinity.jobs.dataset_stats import TokenStatsFiller
from ainfinity.jobs.service import SkyPilotService
from ainfinity.jobs.task_render import load_template
from ainfinity.middleware.auth import KeyRing, load_or_create_key_file
from ainfinity.middleware.body_limit import BodySizeLimitMiddleware
from ainfinity.middleware.cors import install_cors
from ainfinity.middleware.metrics import MetricsMiddleware
from ainfinity.middleware.rate_limit import RateLimitMiddleware, build_limiter
from ainfinity.middleware.request_logging import RequestLoggingMiddleware
from ainfinity.observability.prometheus import ApiMetrics
from ainfinity.schema.job import JobRecord
from ainfinity.serving.gateway import Gateway
from ainfinity.serving.registry import ModelRegistry
from ainfinity.serving.service import ServingService
from ainfinity.serving.supervisor import WorkerSupervisor
from ainfinity.store.job_store import JobStore

logger = logging.getLogger("ainfinity")
# How long a shutdown waits for the background loops to end after cancelling them.
SHUTDOWN_WAIT_SECONDS = 10.0


def create_app(
    settings: Settings | None = None,
    *,
    skypilot_sdk: SkyPilotSdk | None = None,
    skyserve_sdk: SkyServeSdk | None = None,
) -> FastAPI:
    """Build the whole app: middleware, routers, error handlers and background reconciler.

    `skypilot_sdk` and `skyserve_sdk` replace the real SkyPilot clients (tests pass
    recording fakes).
    """
    settings = settings or get_settings()
    configure_logging(settings.log_format, settings.log_level)
    store = JobStore(settings.home)
    sdk = skypilot_sdk or SkyPilotClient(settings.skypilot_api_server)
    registry = ModelRegistry(settings=settings, store=store)
    service = SkyPilotService(
        settings=settings,
        store=store,
        executors={
            "local": LocalExecutor(settings),
            "skypilot": SkyPilotExecutor(settings, sdk),
        },
        template=load_template(),
        registry=registry,
    )
    supervisor = WorkerSupervisor(settings)
    gateway = Gateway(settings, supervisor)
    deployment_store = DeploymentStore(settings.home)
    local_deployments = LocalDeployments(settings, deployment_store)
    router = DeploymentRouter(settings, deployment_store, local_deployments)
    serve_sdk = skyserve_sdk or SkyServeClient(settings.skypilot_api_server)
    deployments = DeploymentService(
        settings=settings,
        store=deployment_store,
        registry=registry,
        sdk=serve_sdk,
        template=load_serve_template(),
    )
    tracker = DeploymentTracker(deployment_store, serve_sdk)
    serving = ServingService(
        settings=settings,
        registry=registry,
        supervisor=supervisor,
        gateway=gateway,
        router=router,
    )
    token_stats = TokenStatsFiller(
        store=store, measure=lambda request: gateway.call("POST", "/token-stats", request)
    )
    metrics = ApiMetrics(store, service.executors)
    service.reconciler.on_launch_stage = metrics.observe_launch

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.initialize()
        deployment_store.initialize()
        if not app.state.keyring.keys:
            app.state.keyring.keys = [_server_key(settings)]
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wake_reconciler() -> None:
            # Called from request and job-waiter threads: hand the wake-up to the loop's
            # thread. A waiter may outlive this app (the job survives a restart), hence
            # the suppress for a loop that is already closed.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

        def forget_model(record: JobRecord) -> None:
            # A deleted job's model goes with it: unload it if a worker holds it.
            if record.fine_tuned_model is not None:
                asyncio.run_coroutine_threadsafe(serving.forget(record.fine_tuned_model), loop)

        service.on_change = wake_reconciler
        deploy_wake = asyncio.Event()

        def wake_tracker() -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(deploy_wake.set)

        deployments.on_change = wake_tracker
        tracker.on_change = wake_tracker
        service.on_created = token_stats.enqueue
        service.on_deleted = forget_model
        await anyio.to_thread.run_sync(service.startup)
        tasks = [
            asyncio.create_task(_reconcile_forever(service, wake, settings)),
            asyncio.create_task(service.webhooks.run_forever()),
            asyncio.create_task(supervisor.run_forever()),
            asyncio.create_task(
                track_forever(
                    tracker, local_deployments, deployment_store, router, deploy_wake, settings
                )
            ),
        ]
        if settings.token_stats:
            tasks.append(asyncio.create_task(token_stats.run_forever()))
        try:
            yield
        finally:
            # Jobs keep running: a restarted server picks them up again. The inference
            # worker stops with the process that supervises it.
            service.on_change = lambda: None
            service.on_created = lambda name: None
            service.on_deleted = lambda record: None
            deployments.on_change = lambda: None
            tracker.on_change = lambda: None
            for task in tasks:
                task.cancel()
            # A loop waiting on a pass in a thread ends when that pass does: bounded, so a
            # stuck call (a SkyPilot request, a file lock) cannot hold the shutdown forever
            # (the loops' own waits keep the cancellation: core.event_wait).
            _, stuck = await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_SECONDS)
            for task in stuck:
                logger.warning("shutdown: %s still running; not waiting for it", task.get_name())
            await gateway.close()
            await supervisor.stop()
            await router.close()
            await local_deployments.close()
            metrics.shutdown()

    app = FastAPI(
        title="ainfinity",
        version=__version__,
        summary="Control plane for LLM fine-tuning: launch, watch and cancel jobs.",
        lifespan=lifespan,
        # Served by install_docs from packaged assets instead of FastAPI's CDN pages.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.service = service
    app.state.serving = serving
    app.state.deployments = deployments
    app.state.files = FileService(settings=settings, jobs=store)
    app.state.fine_tuning = FineTuningService(jobs=service, files=app.state.files)
    app.state.keyring = KeyRing(settings.parsed_api_keys())
    app.state.metrics = metrics

    register_exception_handlers(app)
    install_openapi(app)
    # Added innermost first: logging sees every response, 401s and 429s included.
    limiter = build_limiter(settings)
    app.state.limiter = limiter
    app.add_middleware(RateLimitMiddleware, limiter=limiter, rate=settings.rate_limit)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        uploads={"/v1/files": settings.max_upload_bytes},
    )
    install_cors(app, settings)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestLoggingMiddleware)
    app.include_router(api_router)
    app.include_router(openai_router)
    app.include_router(build_metrics_router(require_key=settings.metrics_require_key))
    install_docs(app)
    install_dashboard(app)

    @app.get("/health", tags=["health"])
    async def health(request: Request) -> dict[str, str]:
        """Liveness probe; needs no API key."""
        return {"status": "ok"}

    return app


def _server_key(settings: Settings) -> ApiKey:
    key, created = load_or_create_key_file(settings.home)
    path = settings.home / "api_key"
    if created:
        # Printed once, on the terminal of whoever started the server; never logged.
        print(f"ainfinity: generated an API key, saved in {path} (mode 0600):\n  {key}", flush=True)
    else:
        print(f"ainfinity: using the API key in {path}", flush=True)
    return ApiKey.from_plain("default", key)


async def _reconcile_forever(
    service: SkyPilotService, wake: asyncio.Event, settings: Settings
) -> None:
    while True:
        await wait_event(wake, settings.reconcile_interval_seconds)
        wake.clear()
        try:
            await anyio.to_thread.run_sync(service.reconcile)
        except Exception:
            logger.exception("reconcile pass failed; retrying on the next tick")


app = create_app()
