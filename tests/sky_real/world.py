"""The whole offline setup: namespace, Slurm cluster, SkyPilot API server; up and down.

    with sky_world() as world:          # minutes the first time on a machine, ~30 s after
        world.sky.sky("check", "slurm", timeout=120)
        world.cluster.queue()

`python -m tests.sky_real.world` (as root) brings it up and keeps it until Ctrl-C, printing
how to run `sky` and ainfinity inside it: a way to try ainfinity's SkyPilot path on a laptop.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.sky_real.artifacts import build_artifacts
from tests.sky_real.namespace import LoopbackNamespace
from tests.sky_real.sky_server import SHIMS, SkyApiServer
from tests.sky_real.slurm_cluster import SlurmCluster

# The namespace of an earlier run that could not tear down (its process was SIGKILLed):
# the next run ends what is left of it, by PID, before it starts.
STALE_RECORD = Path(tempfile.gettempdir()) / "ainfinity-sky-real.json"


@dataclass
class SkyWorld:
    root: Path
    namespace: LoopbackNamespace
    cluster: SlurmCluster
    sky: SkyApiServer
    timings: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def sky_world(timings: dict[str, float] | None = None) -> Iterator[SkyWorld]:
    """Build everything, yield it, and tear it all down by PID whatever happened."""
    timings = {} if timings is None else timings
    started = time.monotonic()
    artifacts = build_artifacts()
    timings["artifacts"] = time.monotonic() - started
    end_stale_namespace()
    root = Path(tempfile.mkdtemp(prefix="ainfinity-sky-real-"))
    root.chmod(0o755)  # the Slurm user reads its runtime and wheels from here
    namespace = LoopbackNamespace()
    cluster: SlurmCluster | None = None
    sky: SkyApiServer | None = None
    try:
        mark = time.monotonic()
        staged = artifacts.stage(root / "cache")
        namespace.start()
        STALE_RECORD.write_text(
            json.dumps({"netns": namespace.netns_id, "root": str(root)}, indent=None)
        )
        cluster = SlurmCluster(root, staged, namespace)
        cluster.prepare(SHIMS)
        cluster.start()
        timings["slurm_up"] = time.monotonic() - mark
        mark = time.monotonic()
        sky = SkyApiServer(root, cluster, namespace)
        sky.prepare()
        sky.start()
        # Its own check at start-up may still be running: a launch before it is done could
        # find no cloud enabled.
        sky.sky("check", "slurm", timeout=180)
        timings["sky_api_server_up"] = time.monotonic() - mark
        yield SkyWorld(root, namespace, cluster, sky, timings)
    finally:
        mark = time.monotonic()
        # Everything in the namespace, by PID: SkyPilot's server, controllers and clusters'
        # daemons, Slurm and its jobs' processes. Nothing needs a clean stop: whatever they
        # wrote is under `root`.
        namespace.stop()
        timings["teardown"] = time.monotonic() - mark
        for part in (sky, cluster):
            if part is not None:
                part.reap()
        STALE_RECORD.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)


def end_stale_namespace() -> None:
    """Kill, by PID, what an earlier run left behind, and remove its scratch directory.

    The recorded namespace is taken for the old run's only while a process in it is
    verifiably the old run's (it names the old scratch directory, or is the anchor): once a
    namespace is gone, the kernel may give its id to another one. While one of ours lives,
    the namespace is ours, and so is everything in it."""
    try:
        record = json.loads(STALE_RECORD.read_text())
    except (FileNotFoundError, ValueError):
        return
    for _ in range(20):
        inside = _pids_in(record["netns"])
        if not any(_names_root(pid, record["root"]) for pid in inside):
            break
        for pid in inside:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    shutil.rmtree(record["root"], ignore_errors=True)
    STALE_RECORD.unlink(missing_ok=True)


def _pids_in(netns_id: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if entry.isdigit() and os.readlink(f"/proc/{entry}/ns/net") == netns_id:
                found.append(int(entry))
    return found


def _names_root(pid: int, root: str) -> bool:
    """The process is the harness's: it names `root`, or is an anchor (`sleep infinity`)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read()
    except OSError:
        return False
    return root.encode() in cmdline + environ or cmdline == b"sleep\0infinity\0"


def main() -> None:
    # A background process starts with SIGINT ignored; either signal must tear down.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with sky_world() as world:
        env = " ".join(f"{k}={v}" for k, v in world.sky.environment().items())
        print(f"up in {sum(world.timings.values()):.0f} s: {world.timings}")
        print(f"scratch: {world.root}")
        print(f"run sky inside:  env -i {env} {world.namespace.wrap(['sky', 'status'])}")
        print("Ctrl-C tears everything down.")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    sys.exit(main())
