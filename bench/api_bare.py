"""The baseline of bench/api_bench.py: a bare FastAPI app with no middleware, no auth and
no store, answering `GET /api/v1/jobs/{name}` with a real job's JSON held in memory.

    AINFINITY_BENCH_JOB=path/to/job.json uvicorn bench.api_bare:app
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI

app = FastAPI()
_JOB: dict[str, Any] = json.loads(Path(os.environ["AINFINITY_BENCH_JOB"]).read_text())


@app.get("/api/v1/jobs/{name}")
def get_job(name: str) -> dict[str, Any]:
    # A sync handler like ours, so both pay the same thread-pool hop.
    return {**_JOB, "name": name}
