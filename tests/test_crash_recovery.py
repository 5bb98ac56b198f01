"""SIGKILL a `uvicorn --workers 4` in the middle of a stream of launches, restart it on the
same home, and check what the store promises (ainfinity/store/job_store.py):

- every job whose POST was answered 202 is there, whole, and listed by the API;
- `jobs/` never holds a partial job, and no temp file or torn JSON is left outside
  `staging/`; a job created but not yet answered when the kill came is whole too, or absent;
- what a crash leaves in `staging/` is invisible (never listed, never a job), kept while
  it is young (it may belong to a live worker) and swept at a start-up once it is older
  than the store's 300 s;
- after a restart the listing holds exactly the jobs on disk, each with its active marker
  (the reconciler only launches what is marked).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from ainfinity.store.job_store import _STALE_STAGING_SECONDS
from tests.builders import job_body
from tests.servers import UvicornServer
from tests.store_checks import check_home, list_all

pytestmark = pytest.mark.timeout(240)

WORKERS = 4
STREAMS = 6
# Kill moments, in 202s received: right after the first (other workers are still busy
# with their first request), and twice in a steady stream.
KILL_AFTER_ACKS = (1, 15, 40)
MAX_POSTS_PER_ROUND = 400


@dataclass
class Round:
    """What the client saw in one stream of launches."""

    prefix: str
    acked: set[str] = field(default_factory=set)
    # Sent, but the connection died before an answer came.
    unanswered: set[str] = field(default_factory=set)
    # Refused at connect: the server never saw these.
    not_sent: set[str] = field(default_factory=set)
    other: list[tuple[str, int, str]] = field(default_factory=list)
    in_flight_at_kill: int = 0


def stream_and_kill(server: UvicornServer, prefix: str, kill_after: int) -> Round:
    """STREAMS threads post new jobs back to back; once `kill_after` were answered 202,
    SIGKILL the whole server while the others are in flight."""
    seen = Round(prefix)
    lock = threading.Lock()
    reached = threading.Event()
    stop = threading.Event()
    counter = iter(range(MAX_POSTS_PER_ROUND))
    in_flight = 0

    def stream() -> None:
        nonlocal in_flight
        with server.client(timeout=60) as client:
            while not stop.is_set():
                with lock:
                    number = next(counter, None)
                    if number is None:
                        return
                    in_flight += 1
                name = f"{prefix}-{number:03d}"
                try:
                    response = client.post("/api/v1/jobs", json=job_body(name=name))
                except httpx.ConnectError:
                    with lock:
                        seen.not_sent.add(name)
                    return
                except httpx.TransportError:
                    with lock:
                        seen.unanswered.add(name)
                    return
                finally:
                    with lock:
                        in_flight -= 1
                with lock:
                    if response.status_code == 202:
                        seen.acked.add(name)
                        if len(seen.acked) >= kill_after:
                            reached.set()
                    else:
                        seen.other.append((name, response.status_code, response.text))

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(STREAMS)]
    for thread in threads:
        thread.start()
    try:
        assert reached.wait(timeout=90), f"only {len(seen.acked)} acks: {seen.other[:3]}"
        with lock:
            seen.in_flight_at_kill = in_flight
        server.kill()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
    assert not any(thread.is_alive() for thread in threads)
    return seen


def check_after_crash(server: UvicornServer, rounds: list[Round]) -> set[str]:
    """The store on disk as the kill left it, then as the restarted server lists it;
    returns the names of the jobs there."""
    report = check_home(server.home)  # before the restart: no start-up repair helps
    on_disk = set(report.jobs)
    staged = {name for name, _ in report.staged}
    for seen in rounds:
        assert not seen.other, seen.other[:3]
        assert seen.acked <= on_disk, sorted(seen.acked - on_disk)
        assert not (seen.not_sent & on_disk), sorted(seen.not_sent & on_disk)
        # A job that was staged when the kill came did not become a job.
        assert not (staged & seen.acked)
    assert not (staged & on_disk)

    server.start()
    with server.client() as client:
        listed = list_all(client)
        assert {job["name"] for job in listed} == on_disk
        assert {job["status"] for job in listed} == {"PENDING"}
        for seen in rounds:
            for name in sorted(seen.unanswered | seen.not_sent):
                expected = 200 if name in on_disk else 404
                assert client.get(f"/api/v1/jobs/{name}").status_code == expected
    # Start-up re-derived a marker for every unfinished job, and only for those.
    assert set(os.listdir(server.home / "active")) == on_disk
    return on_disk


def plant_staged_leftover(home: Path, name: str, age_seconds: float) -> Path:
    """A staged job as a crash mid-create leaves it: a torn record and a temp file."""
    staged = home / "staging" / f"{name}.{os.urandom(16).hex()}"
    staged.mkdir(parents=True)
    (staged / "job.json").write_text('{"name": "' + name + '", "sta')
    (staged / f".events.jsonl.{os.urandom(16).hex()}.tmp").write_text('{"type": "cre')
    moment = time.time() - age_seconds
    for path in (*staged.iterdir(), staged):
        os.utime(path, (moment, moment))
    return staged


@pytest.fixture
def server(tmp_path: Path) -> Iterator[UvicornServer]:
    running = UvicornServer(tmp_path / "home", workers=WORKERS)
    try:
        yield running
    finally:
        running.stop()


def test_sigkill_mid_stream_loses_no_acknowledged_job(server: UvicornServer) -> None:
    rounds: list[Round] = []
    server.start()
    for number, kill_after in enumerate(KILL_AFTER_ACKS):
        started = time.monotonic()
        seen = stream_and_kill(server, f"crash{number}", kill_after)
        rounds.append(seen)
        on_disk = check_after_crash(server, rounds)
        ghosts = seen.unanswered & on_disk
        print(
            f"\nkill after {kill_after} acks: {len(seen.acked)} acked, "
            f"{seen.in_flight_at_kill} in flight, {len(seen.unanswered)} unanswered "
            f"({len(ghosts)} of them created), {len(seen.not_sent)} refused; "
            f"{len(on_disk)} jobs; {time.monotonic() - started:.1f} s"
        )
    # The kills came mid-stream: some requests were cut off without an answer.
    assert sum(len(seen.unanswered) for seen in rounds) > 0

    # Staging: whatever the kills left there, plus one torn job of each age.
    home = server.home
    old = plant_staged_leftover(home, "torn-old", _STALE_STAGING_SECONDS + 60)
    young = plant_staged_leftover(home, "torn-young", 5)
    crash_leftovers = [p for p in (home / "staging").iterdir() if p not in (old, young)]
    for path in crash_leftovers:
        os.utime(path, (time.time() - _STALE_STAGING_SECONDS - 60,) * 2)
    server.restart()
    assert sorted((home / "staging").iterdir()) == [young]
    with server.client() as client:
        names = {job["name"] for job in list_all(client)}
        assert client.get("/api/v1/jobs/torn-young").status_code == 404
    assert names == set(check_home(home).jobs)
    assert "torn-old" not in names and "torn-young" not in names
    print(f"swept {len(crash_leftovers)} staging leftovers of the kills and the planted one")
