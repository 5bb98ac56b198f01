"""What a job store on disk and its listing over the API must look like, checked the same
way by the load and crash tests.

The job records (`jobs/<name>/job.json`) are the record of truth; anything else the store
keeps beside them (an index, markers) is derived and only checked through the API.
`staging/` is the one place a crash may leave half-written files: nothing there is a job.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from ainfinity.schema.activity import Event, EventType
from ainfinity.schema.job import JOB_NAME_RE, JobRecord, JobStatus

# Directories whose entries are not (or no longer) jobs: leftovers there are allowed.
SCRATCH_DIRS = ("staging",)


def is_temp_file(path: Path) -> bool:
    """A temp file of `write_atomic` (`.<name>.<hex>.tmp`), or any other dot-`.tmp`."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


@dataclass
class HomeReport:
    """A store's files, read straight from disk."""

    jobs: dict[str, JobRecord] = field(default_factory=dict)
    events: dict[str, list[Event]] = field(default_factory=dict)
    # `staging/` entries: (the job name they were staged for, their path).
    staged: list[tuple[str, Path]] = field(default_factory=list)


def check_home(home: Path) -> HomeReport:
    """Assert that `home` holds only whole jobs and whole files, and return them.

    - outside `staging/`, no temp file is left and every `*.json` parses;
    - every entry of `jobs/` is a complete job: a valid `job.json` naming its directory,
      an `events.jsonl` that starts with its `created` event (every line whole),
      `task.yaml` and `workdir/job_config.json`.
    """
    scratch = [home / name for name in SCRATCH_DIRS]
    for directory, _subdirs, files in os.walk(home):
        here = Path(directory)
        if any(here == s or s in here.parents for s in scratch):
            continue
        for name in files:
            path = here / name
            assert not is_temp_file(path), f"temp file left behind: {path}"
            if name.endswith(".json"):
                try:
                    json.loads(path.read_bytes())
                except ValueError as exc:
                    raise AssertionError(f"{path} is not whole JSON: {exc}") from None

    report = HomeReport()
    for entry in sorted((home / "jobs").iterdir()):
        assert entry.is_dir() and JOB_NAME_RE.match(entry.name), f"not a job: {entry}"
        record = JobRecord.model_validate_json((entry / "job.json").read_bytes())
        assert record.name == entry.name
        lines = (entry / "events.jsonl").read_bytes().splitlines()
        events = [Event.model_validate_json(line) for line in lines]
        assert events and events[0].type == EventType.CREATED, entry
        assert events[0].status == JobStatus.PENDING
        assert isinstance(yaml.safe_load((entry / "task.yaml").read_text()), dict), entry
        json.loads((entry / "workdir" / "job_config.json").read_bytes())
        report.jobs[entry.name] = record
        report.events[entry.name] = events

    staging = home / "staging"
    if staging.is_dir():
        # Staged as `<name>.<32 hex digits>`; job names never contain a dot.
        report.staged = [(p.name.split(".", 1)[0], p) for p in sorted(staging.iterdir())]
    return report


def list_all(client: httpx.Client, *, limit: int = 37, **params: Any) -> list[dict[str, Any]]:
    """Every job the API lists, following `next_cursor` page by page (bounded), newest
    first; asserts each page is ordered and no job shows up twice."""
    jobs: list[dict[str, Any]] = []
    after: str | None = None
    for _ in range(10_000):
        query: dict[str, Any] = {"limit": limit, **params}
        if after is not None:
            query["after"] = after
        response = client.get("/api/v1/jobs", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["data"]) <= limit
        jobs.extend(page["data"])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        assert len(page["data"]) == limit, "a page short of `limit` that says has_more"
        after = page["next_cursor"]
    else:
        raise AssertionError("the listing did not end")
    names = [job["name"] for job in jobs]
    assert len(names) == len(set(names)), "a job listed twice"
    order = [(datetime.fromisoformat(job["created_at"]), job["name"]) for job in jobs]
    assert order == sorted(order, reverse=True), "not newest first"
    return jobs
