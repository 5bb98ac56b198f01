"""The app's Prometheus metrics: requests, latency, jobs by status, launch latency.

One `ApiMetrics` per app: in single-process mode its own registry holds everything (tests
build many apps in one process); in multiprocess mode (`multiprocess.py`) a scrape sums
every worker's files instead, and the job gauge is read from the shared store either way.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ainfinity.jobs.transitions import utcnow
from ainfinity.observability.multiprocess import (
    forget_this_process,
    multiprocess_dir,
    sweep_dead_processes,
)
from ainfinity.schema.job import JobRecord, JobStatus
from ainfinity.store.job_store import JobStore

logger = logging.getLogger("ainfinity.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Launches take from a fraction of a second (local) to many minutes (a cloud VM, a spot wait).
LAUNCH_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)


def count_jobs(store: JobStore) -> dict[tuple[str, str], int] | None:
    """Jobs by (status, executor), without reading any job record: the list index keeps a
    row per job with both. None when the index cannot be read right now."""
    try:
        return store.index.counts()
    except sqlite3.Error:
        logger.exception("cannot count jobs from the list index")
        return None


class JobCountCollector(Collector):
    """`ainfinity_jobs{status, executor}`, counted at scrape time."""

    def __init__(self, store: JobStore, executors: Iterable[str]) -> None:
        self.store = store
        self.executors = sorted(executors)

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "ainfinity_jobs",
            "Jobs in the store by status and executor.",
            labels=["status", "executor"],
        )

    def describe(self) -> Iterator[Metric]:
        # Registering the collector must not count jobs: building an app touches no files.
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        counts = count_jobs(self.store)
        if counts is not None:
            # Every pair, zeros included: a dashboard's series do not vanish and come back.
            executors = sorted(set(self.executors) | {executor for _, executor in counts})
            for executor in executors:
                for status in JobStatus:
                    family.add_metric(
                        [status.value, executor], counts.get((status.value, executor), 0)
                    )
        yield family


class ApiMetrics:
    """The metrics of one app, and their exposition."""

    def __init__(self, store: JobStore, executors: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        self.directory = multiprocess_dir()
        self.requests = Counter(
            "ainfinity_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ainfinity_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "ainfinity_http_requests_in_progress",
            "Requests being answered now (open log follows and event streams included).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.launch = Histogram(
            "ainfinity_job_launch_seconds",
            "Seconds from a job's creation until the reconciler first saw it STARTING "
            "(launched) and RUNNING (training started).",
            ["executor", "stage"],
            buckets=LAUNCH_BUCKETS,
            registry=self.registry,
        )
        self.jobs = JobCountCollector(store, executors)
        self.registry.register(self.jobs)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_launch(self, record: JobRecord) -> None:
        """Called by the reconciler when a job first reaches STARTING or RUNNING."""
        if record.status not in (JobStatus.STARTING, JobStatus.RUNNING):
            return
        reached = record.started_at if record.status == JobStatus.RUNNING else None
        seconds = ((reached or utcnow()) - record.created_at).total_seconds()
        stage = record.status.value.lower()
        self.launch.labels(record.executor, stage).observe(max(seconds, 0.0))

    def render(self) -> bytes:
        """The text exposition: this app's metrics, or every worker's in multiprocess mode."""
        if self.directory is None:
            return generate_latest(self.registry)
        sweep_dead_processes(self.directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.directory))
        registry.register(self.jobs)
        return generate_latest(registry)

    def shutdown(self) -> None:
        if self.directory is not None:
            forget_this_process(self.directory)
