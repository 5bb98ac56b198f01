"""ainfinity's SkyPilot executor on the real engine: managed jobs on a one-machine Slurm cluster.

Everything SkyPilot and Slurm does happens for real inside a loopback-only network namespace
(see `world.py`); the ainfinity servers run there too, with the skypilot executor, and the
tests talk to them over a Unix socket. A job is POSTed with `"resources": {"cloud": "slurm"}`
and goes through `sky.jobs.launch`, a Slurm allocation, the template's `setup:` (installing
the server's own wheel, its dependencies from the node's offline index) and `run:` (training
the built-in tiny model on the uploaded dataset), `queue_v2` and `tail_logs`.

A managed job spends minutes in SkyPilot's own machinery however small it is, so the jobs
run side by side: they are launched when the module starts (`launched`), and the tests that
act on a running job (restart, then cancel) run first, while the others' jobs proceed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.sky_real.conftest import TIMINGS
from tests.sky_real.control_plane import ControlPlane
from tests.sky_real.world import SkyWorld

pytestmark = [pytest.mark.sky_real, pytest.mark.timeout(1800)]

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
# Generous: several clusters share two cores, and SkyPilot polls its clusters every few s.
JOB_TIMEOUT = 900.0
HYPERPARAMETERS = {
    "max_steps": 20,
    "batch_size": 4,
    "learning_rate": 1e-3,
    "max_seq_length": 128,
    "logging_steps": 5,
    "save_steps": None,
}


def job_body(name: str, data_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A job SkyPilot places on the Slurm cluster (`cloud: slurm`), writing its model to a
    directory of the cluster's shared filesystem (here, this machine's)."""
    body: dict[str, Any] = {
        "name": name,
        "executor": "skypilot",
        "model": "tiny-random-llama",
        "dataset": str(data_dir / "train.jsonl"),
        "resources": {"cloud": "slurm"},
        "hyperparameters": dict(HYPERPARAMETERS),
        "output_uri": f"file://{data_dir.parent / 'outputs' / name}",
    }
    body.update(overrides)
    return body


@dataclass(frozen=True)
class Plan:
    """The job a test follows: its name, and what differs from `job_body`."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    # POSTed once this job trains (a metric came back), instead of at once (see `launched`).
    after: str | None = None


# The job that trains to success (test 1) is also the one the server is restarted under while
# it trains (test 3): a managed job costs minutes of SkyPilot's own work on two cores, and a
# restart must leave no trace in a job's record anyway. It trains for 30 logging steps so that
# the restart lands mid-training.
TRAINS_TO_SUCCESS = Plan(
    "sky-ok", {"hyperparameters": {**HYPERPARAMETERS, "max_steps": 300, "logging_steps": 10}}
)
PLANS = {
    "test_a_restarted_control_plane_tracks_the_job_without_launching_again": TRAINS_TO_SUCCESS,
    "test_cancel_stops_a_running_job_and_frees_its_allocation": Plan(
        "sky-cancel",
        # Trains until cancelled: a core's worth of work that must not compete with the
        # other jobs, so it is launched once sky-ok trains, and trains when its test comes.
        {"hyperparameters": {**HYPERPARAMETERS, "max_steps": 10_000_000, "logging_steps": 10}},
        after="sky-ok",
    ),
    "test_a_job_trains_through_the_real_engine_to_success": TRAINS_TO_SUCCESS,
    "test_a_job_skypilot_cannot_place_fails_with_its_reason": Plan(
        "sky-noplace", {"resources": {"cloud": "slurm", "accelerators": "H100:1"}}
    ),
    "test_the_trainers_error_code_wins_over_skypilots_failed": Plan(
        "sky-trainfail",
        # Accepted by the API (it cannot know the node's hardware); the node has no
        # FlashAttention, so the trainer fails with its own `model_load_error`.
        {"hyperparameters": {**HYPERPARAMETERS, "attn_implementation": "flash_attention_2"}},
    ),
}


class Launches:
    """When each job was accepted; jobs POSTed later (`Plan.after`) appear when they are."""

    def __init__(self) -> None:
        self.accepted: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self._changed = threading.Condition()

    def record(self, name: str, *, error: str | None = None) -> None:
        with self._changed:
            if error is None:
                self.accepted[name] = time.time()
            else:
                self.errors[name] = error
            self._changed.notify_all()

    def wait(self, name: str, timeout: float = JOB_TIMEOUT) -> float:
        with self._changed:
            self._changed.wait_for(
                lambda: name in self.accepted or name in self.errors, timeout=timeout
            )
        assert name not in self.errors, self.errors[name]
        assert name in self.accepted, f"{name} was never launched"
        return self.accepted[name]


@pytest.fixture(scope="module")
def launched(
    request: pytest.FixtureRequest, data_dir: Path, control_plane: ControlPlane
) -> Launches:
    """POST the job of every selected test when the module starts (a managed job spends
    minutes in SkyPilot however small it is, so they run side by side); a job planned `after`
    another is POSTed by a background thread once that one trains."""
    selected = {item.name for item in request.session.items}
    planned = {plan.name: plan for test, plan in PLANS.items() if test in selected}
    launches = Launches()

    def post(plan: Plan) -> None:
        body = job_body(plan.name, data_dir, **plan.overrides)
        deadline = time.monotonic() + 120
        while True:
            try:
                with control_plane.client() as api:
                    response = api.post("/api/v1/jobs", json=body)
                break
            except httpx.TransportError:  # the server is being restarted (test 3)
                assert time.monotonic() < deadline, "the server did not come back"
                time.sleep(1)
        assert response.status_code == 202, response.text
        launches.record(plan.name)

    def post_later(plan: Plan, after: str) -> None:
        try:
            wait_job(control_plane, after, lambda j: j["progress"] or j["status"] in TERMINAL)
            post(plan)
        except (AssertionError, httpx.HTTPError) as exc:
            launches.record(plan.name, error=f"not launched: {exc}")

    for plan in planned.values():
        if plan.after in planned:
            threading.Thread(target=post_later, args=(plan, plan.after), daemon=True).start()
        else:
            post(plan)
    return launches


def wait_job(
    server: ControlPlane,
    name: str,
    done: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = JOB_TIMEOUT,
) -> dict[str, Any]:
    """Poll the job until `done(job)`; on time-out, say where it was stuck."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            with server.client() as api:
                response = api.get(f"/api/v1/jobs/{name}")
        except httpx.TransportError:  # the server is being restarted
            time.sleep(1)
            continue
        assert response.status_code == 200, response.text
        job = response.json()
        if done(job):
            return job
        if job.get("status") in TERMINAL:
            break
        time.sleep(1)
    with server.client() as api:
        log = api.get(f"/api/v1/jobs/{name}/logs", params={"tail": 30}).text
    raise AssertionError(
        f"{name}: {job.get('status')} {job.get('failure_reason')}; its log ends with:\n{log}\n"
        f"server log:\n{server.log()[-2000:]}"
    )


def events(server: ControlPlane, name: str) -> list[dict[str, Any]]:
    with server.client() as api:
        return list(api.get(f"/api/v1/jobs/{name}/events").json()["data"])


def statuses(server: ControlPlane, name: str) -> list[str]:
    return [e["status"] for e in events(server, name) if e["type"] in ("created", "status_changed")]


def stored_state(server: ControlPlane, name: str) -> dict[str, Any]:
    record = json.loads((server.home / "jobs" / name / "job.json").read_text())
    return dict(record["executor_state"])


def skypilot_record(world: SkyWorld, job_id: int) -> dict[str, Any]:
    """The managed job as SkyPilot's own queue has it (not through ainfinity)."""
    (record,) = world.sky.sdk_call(
        "[r.model_dump(mode='json') for r in sky.get(sky.jobs.queue_v2(refresh=False, "
        f"job_ids=[{job_id}], fields=['job_id', 'job_name', 'status', 'failure_reason', "
        "'start_at', 'end_at']))[0]]"
    )
    return dict(record)


def seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def test_a_restarted_control_plane_tracks_the_job_without_launching_again(
    world: SkyWorld, control_plane: ControlPlane, launched: Launches
) -> None:
    server = control_plane
    job = wait_job(server, "sky-ok", lambda j: j["status"] == "RUNNING" and j["progress"])
    assert job["progress"]["step"] < job["progress"]["total_steps"]

    server.restart()  # SIGTERM, then a new server process on the same home

    job = wait_job(server, "sky-ok", lambda j: j["status"] in TERMINAL)
    assert job["status"] == "SUCCEEDED", job["failure_reason"]
    assert job["progress"]["percent"] == 100.0
    assert statuses(server, "sky-ok") == ["PENDING", "STARTING", "RUNNING", "SUCCEEDED"]
    # One launch in total, as SkyPilot's API server recorded the requests it got: a single
    # `jobs.launch` for this job, the one whose id the first server stored.
    launches = world.sky.sdk_call(
        "[r.request_id for r in sky.api_status(all_status=True) if r.name == 'sky.jobs.launch'"
        " and json.loads(r.request_body).get('name') == 'sky-ok']"
    )
    assert launches == [stored_state(server, "sky-ok")["launch_request_id"]]
    names = world.sky.sdk_call(
        "[r.job_name for r in sky.get(sky.jobs.queue_v2(refresh=False, all_users=True, "
        "fields=['job_id', 'job_name']))[0]]"
    )
    assert names.count("sky-ok") == 1
    assert sum(e["message"] == "job launched" for e in events(server, "sky-ok")) == 1


def test_cancel_stops_a_running_job_and_frees_its_allocation(
    world: SkyWorld, control_plane: ControlPlane, launched: Launches
) -> None:
    launched.wait("sky-cancel")
    # Training for real (a metric has come back) before the cancel.
    wait_job(control_plane, "sky-cancel", lambda j: j["status"] == "RUNNING" and j["progress"])
    job_id = int(stored_state(control_plane, "sky-cancel")["job_id"])
    with control_plane.client() as api:
        response = api.post("/api/v1/jobs/sky-cancel/cancel")
    assert response.status_code == 202 and response.json()["status"] == "CANCELLING"
    asked = time.monotonic()

    job = wait_job(control_plane, "sky-cancel", lambda j: j["status"] in TERMINAL)
    TIMINGS["cancel: CANCELLING -> CANCELLED"] = time.monotonic() - asked

    assert job["status"] == "CANCELLED"
    assert statuses(control_plane, "sky-cancel")[-3:] == ["RUNNING", "CANCELLING", "CANCELLED"]
    assert skypilot_record(world, job_id)["status"] == "CANCELLED"
    # The cluster's Slurm allocation is named after the managed job: it must be gone.
    prefix = f"sky-cancel-{job_id}-"
    deadline = time.monotonic() + 60
    while any(line.split()[1].startswith(prefix) for line in world.cluster.queue()):
        assert time.monotonic() < deadline, f"allocation left behind: {world.cluster.queue()}"
        time.sleep(1)


def test_a_job_trains_through_the_real_engine_to_success(
    world: SkyWorld, control_plane: ControlPlane, launched: Launches
) -> None:
    job = wait_job(control_plane, "sky-ok", lambda j: j["status"] in TERMINAL)

    assert job["status"] == "SUCCEEDED", job["failure_reason"]
    timeline = {
        e["status"]: seconds(e["time"])
        for e in events(control_plane, "sky-ok")
        if e["type"] in ("created", "status_changed")
    }
    assert list(timeline) == ["PENDING", "STARTING", "RUNNING", "SUCCEEDED"]
    # RUNNING and SUCCEEDED came from SkyPilot's records: never before SkyPilot saw them.
    record = skypilot_record(world, int(stored_state(control_plane, "sky-ok")["job_id"]))
    assert record["status"] == "SUCCEEDED"
    assert timeline["RUNNING"] >= record["start_at"] and timeline["SUCCEEDED"] >= record["end_at"]
    with control_plane.client() as api:
        log = api.get("/api/v1/jobs/sky-ok/logs", params={"raw": True}).text
        shown = api.get("/api/v1/jobs/sky-ok/logs").text
        metrics = api.get("/api/v1/jobs/sky-ok/metrics").json()["data"]
    assert "ainfinity-done" in log and "\x1b" not in log
    # What people read by default: the trainer's progress lines, not its protocol lines.
    assert "step 300/300" in shown
    assert "ainfinity-metric {" not in shown and "ainfinity-done {" not in shown
    assert [m["step"] for m in metrics] == list(range(10, 301, 10))  # one per logging step
    assert job["progress"]["step"] == 300 and job["progress"]["percent"] == 100.0
    output = Path(job["output_dir"])
    assert (output / "config.json").is_file() and (output / "model.safetensors").stat().st_size
    TIMINGS.update(
        {
            "job: POST -> STARTING (launch request)": timeline["STARTING"] - timeline["PENDING"],
            "job: STARTING -> RUNNING (allocation, runtime, setup)": (
                timeline["RUNNING"] - timeline["STARTING"]
            ),
            "job: RUNNING -> SUCCEEDED (training, teardown)": (
                timeline["SUCCEEDED"] - timeline["RUNNING"]
            ),
            "job: POST -> SUCCEEDED": timeline["SUCCEEDED"] - timeline["PENDING"],
        }
    )


def test_a_job_skypilot_cannot_place_fails_with_its_reason(
    control_plane: ControlPlane, launched: Launches
) -> None:
    job = wait_job(control_plane, "sky-noplace", lambda j: j["status"] in TERMINAL)

    assert job["status"] == "FAILED"
    reason = job["failure_reason"]
    assert reason.startswith("prechecks_failed: "), reason
    assert "Catalog does not contain any instances satisfying the request" in reason
    assert "H100" in reason and "\x1b" not in reason and "Hint" not in reason
    assert "\n" not in reason
    # Not stuck: it ended as soon as SkyPilot refused it, without a cluster ever starting.
    assert seconds(job["finished_at"]) - launched.wait("sky-noplace") < 300
    assert statuses(control_plane, "sky-noplace") == ["PENDING", "STARTING", "FAILED"]


def test_the_trainers_error_code_wins_over_skypilots_failed(
    world: SkyWorld, control_plane: ControlPlane, launched: Launches
) -> None:
    job = wait_job(control_plane, "sky-trainfail", lambda j: j["status"] in TERMINAL)

    assert job["status"] == "FAILED"
    assert job["failure_reason"].startswith("model_load_error: cannot use attention"), job[
        "failure_reason"
    ]
    with control_plane.client() as api:
        log = api.get("/api/v1/jobs/sky-trainfail/logs", params={"raw": True}).text
    assert "(sky-trainfail, pid=" in log and 'ainfinity-error {"code":"model_load_error"' in log
    # SkyPilot itself only knows that the program failed.
    record = skypilot_record(world, int(stored_state(control_plane, "sky-trainfail")["job_id"]))
    assert record["status"] == "FAILED"
    assert "user program failure" in record["failure_reason"]
