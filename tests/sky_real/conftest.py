"""Fixtures of the real-engine tests: the offline world, and ainfinity servers inside it.

Without root, `unshare` or the packages `.ci/run` installs, the module skips and names what is
missing; under `CI=true` it fails instead, so CI can never pass without running it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builders import SAMPLE_SFT
from tests.sky_real.artifacts import NODE_PYTHON, find_python310
from tests.sky_real.control_plane import ControlPlane
from tests.sky_real.slurm_cluster import NODE_USER
from tests.sky_real.world import SkyWorld, sky_world

_TOOLS = (
    "unshare", "nsenter", "ip", "munged", "sshd", "slurmctld", "slurmd", "sinfo", "squeue",
    "sbatch", "srun", "rsync", "patchelf", "ssh", "ssh-keygen", "useradd", "usermod",
)  # fmt: skip
# What each run measured, printed at the end of the session (seconds).
TIMINGS: dict[str, float] = {}


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run the module, in words."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (it creates a network namespace, a user and daemons)")
    missing += [f"`{tool}`" for tool in _TOOLS if shutil.which(tool) is None]
    if not os.access(NODE_PYTHON, os.X_OK):
        missing.append(NODE_PYTHON)
    if find_python310() is None:
        missing.append("a CPython 3.10 (SkyPilot's node runtime venv needs one)")
    try:
        subprocess.run(["getent", "passwd", "munge"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        missing.append("the `munge` user (Debian's munge package)")
    if not missing:
        probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            missing.append(f"`unshare --net` permission ({probe.stderr.strip()})")
    return missing


@pytest.fixture(scope="module")
def world() -> Iterator[SkyWorld]:
    missing = missing_prerequisites()
    if missing:
        why = (
            "the real-engine tests need " + ", ".join(missing) + "; .ci/run installs the "
            "packages (apt-get install slurm-wlm munge openssh-server rsync patchelf)"
        )
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    with sky_world(TIMINGS) as built:
        yield built


@pytest.fixture(scope="module")
def data_dir(world: SkyWorld) -> Path:
    """Datasets the servers may read (AINFINITY_DATA_DIRS); beside it, `outputs/`, a
    directory of the cluster's shared filesystem that the node's user may write."""
    data = world.root / "data"
    data.mkdir()
    shutil.copyfile(SAMPLE_SFT, data / "train.jsonl")
    outputs = world.root / "outputs"
    outputs.mkdir()
    node_user = pwd.getpwnam(NODE_USER)
    os.chown(outputs, node_user.pw_uid, node_user.pw_gid)
    return data


@pytest.fixture(scope="module")
def control_plane(world: SkyWorld, data_dir: Path) -> Iterator[ControlPlane]:
    """The ainfinity server in the namespace, with the skypilot executor (restartable)."""
    server = ControlPlane(
        world.root, name="server", namespace=world.namespace, sky=world.sky, data_dir=data_dir
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("real SkyPilot engine: wall time of each stage (s)")
        for stage, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{stage:<48} {seconds:7.1f}")
