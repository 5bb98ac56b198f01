"""SkyPilot's API server in consolidation mode, inside the namespace, and bounded `sky` calls.

The server runs from the project's own environment (`skypilot` is a dependency of
ainfinity) with a home of its own in the scratch directory: `~/.sky/config.yaml` enables
only Slurm and runs the managed-jobs controller inside the API server (consolidation mode),
because Slurm cannot host a separate controller in SkyPilot 0.14 ("Running controllers is not
well tested with Slurm", retried every 30 s without end). `~/.slurm/config` says how to reach
the login node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.sky_real.namespace import CommandTimeout, LoopbackNamespace
from tests.sky_real.slurm_cluster import CLUSTER_NAME, NODE_USER, SlurmCluster

SHIMS = Path(__file__).resolve().parent / "shims"
CATALOG_FIXTURE = SHIMS.parent.parent / "fixtures" / "sky_runtime" / ".sky" / "catalogs"
API_PORT = 46580
PROBE_PORT = 18080
API_URL = f"http://127.0.0.1:{API_PORT}"
# The controller's network check goes here (see shims/sitecustomize.py).
PROBE_URL = f"http://127.0.0.1:{PROBE_PORT}/"


def sky_config(node_tmp: Path) -> str:
    """`~/.sky/config.yaml`: Slurm only, the controller inside the API server, and the
    node-local runtime (`/tmp/<cluster>` by default) under the run's scratch directory, so
    that a run cut short leaves nothing a later run could mistake for its own."""
    return f"""\
allowed_clouds:
  - slurm
jobs:
  controller:
    consolidation_mode: true
slurm:
  cluster_configs:
    {CLUSTER_NAME}:
      tmpdir: {node_tmp}
"""


class SkyApiServer:
    """The API server process and everything a `sky` command needs to reach it."""

    def __init__(self, root: Path, cluster: SlurmCluster, namespace: LoopbackNamespace) -> None:
        self.root = root
        self.home = root / "clienthome"
        self.cluster = cluster
        self.namespace = namespace
        self.process: subprocess.Popen[bytes] | None = None
        self.probe: subprocess.Popen[bytes] | None = None
        self.bin = cluster.artifacts.api_server_venv / "bin"
        self.log_path = root / "sky-api-server.log"
        self.tmp = root / "tmp"  # SkyPilot's own temporary files, gone with the scratch dir

    def environment(self) -> dict[str, str]:
        """The environment of every SkyPilot process the harness starts (server and CLI)."""
        keep = ("LANG", "LC_ALL", "TERM", "TZ", "USER", "LOGNAME")
        env = {key: os.environ[key] for key in keep if key in os.environ}
        env.update(
            HOME=str(self.home),
            TMPDIR=str(self.tmp),
            PATH=f"{self.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            SKYPILOT_DISABLE_USAGE_COLLECTION="1",
            # The server builds SkyPilot's own wheel with `pip wheel` for the node; its build
            # isolation wants setuptools, served from the runtime wheelhouse.
            PIP_NO_INDEX="1",
            PIP_FIND_LINKS=str(self.cluster.artifacts.runtime_wheels),
            PIP_CONFIG_FILE=os.devnull,
            PYTHONPATH=str(SHIMS),
            SKY_TEST_NETWORK_PROBE_URL=PROBE_URL,
            SKYPILOT_API_SERVER_ENDPOINT=API_URL,
        )
        return env

    def prepare(self) -> None:
        (self.home / ".sky").mkdir(parents=True, exist_ok=True)
        # SkyPilot reads its accelerator catalog to place a job that asks for a GPU, and
        # downloads it when missing; an offline server needs it in place, fresh enough that
        # it is not refreshed. The suite's small fixture catalog is enough.
        shutil.copytree(
            CATALOG_FIXTURE, self.home / ".sky" / "catalogs", copy_function=shutil.copyfile
        )
        node_tmp = self.root / "nodetmp"
        node_tmp.mkdir(exist_ok=True)
        shutil.chown(node_tmp, NODE_USER, NODE_USER)
        (self.home / ".sky" / "config.yaml").write_text(sky_config(node_tmp))
        self.tmp.mkdir(exist_ok=True)
        (self.home / ".slurm").mkdir(exist_ok=True)
        (self.home / ".slurm" / "config").write_text(
            f"Host {CLUSTER_NAME}\n"
            "    HostName 127.0.0.1\n"
            "    Port 22\n"
            f"    User {NODE_USER}\n"
            f"    IdentityFile {self.cluster.client_key}\n"
            "    IdentitiesOnly yes\n"
        )
        (self.root / "probe").mkdir(exist_ok=True)
        (self.root / "probe" / "index.html").write_text("ok\n")

    def start(self, timeout: float = 120.0) -> None:
        # The loopback stand-in for the internet the controller's network check looks for.
        self.probe = self.namespace.popen(
            [sys.executable, "-m", "http.server", str(PROBE_PORT), "--bind", "127.0.0.1",
             "--directory", str(self.root / "probe")],
        )  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = self.namespace.popen(
                [str(self.bin / "sky"), "api", "start", "--foreground", "--host", "127.0.0.1",
                 "--port", str(API_PORT)],
                env=self.environment(),
                log=log,
                cwd=self.home,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the SkyPilot API server exited with {self.process.returncode}:\n"
                    + self.log_path.read_text(errors="replace")[-3000:]
                )
            if self.healthy():
                return
            time.sleep(1)
        raise RuntimeError(
            f"the SkyPilot API server did not answer in {timeout:.0f} s:\n"
            + self.log_path.read_text(errors="replace")[-3000:]
        )

    def healthy(self) -> bool:
        check = (
            "import urllib.request, sys; "
            f"sys.exit(urllib.request.urlopen('{API_URL}/api/health', timeout=3).status != 200)"
        )
        try:
            result = self.namespace.run([sys.executable, "-c", check], timeout=10, check=False)
        except CommandTimeout:
            return False
        return result.returncode == 0

    def sky(self, *argv: str, timeout: float, check: bool = True) -> str:
        """A `sky` CLI command in the namespace, killed after `timeout` s; its output."""
        result = self.namespace.run(
            [str(self.bin / "sky"), *argv],
            timeout=timeout,
            env=self.environment(),
            check=check,
            cwd=self.home,
        )
        return (result.stdout + result.stderr).decode(errors="replace")

    def sdk_call(self, expression: str, timeout: float = 60.0) -> Any:
        """Evaluate a Python expression using `sky` in the namespace; its value, via JSON.

        For looking at SkyPilot's own view of things (its queue, its requests) directly."""
        script = f"import json, sky; print(json.dumps({expression}))"
        result = self.namespace.run(
            [sys.executable, "-c", script], timeout=timeout, env=self.environment(), cwd=self.home
        )
        return json.loads(result.stdout.decode().strip().splitlines()[-1])

    def reap(self) -> None:
        """Collect the exit statuses once the namespace teardown has killed them."""
        for process in (self.process, self.probe):
            if process is not None:
                process.wait(timeout=30)
