"""The ainfinity server, run inside the namespace with the skypilot executor.

It serves on a Unix socket: the namespace has no route to the test process's loopback, but a
socket file is reachable from both sides, so the tests talk HTTP to it without any TCP port
being opened outside the namespace. Restartable on the same home (`restart()`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.builders import API_KEY, ROOT
from tests.sky_real.namespace import LoopbackNamespace
from tests.sky_real.sky_server import API_URL, SkyApiServer

FIXTURE_RUNTIME = ROOT / "tests" / "fixtures" / "sky_runtime"


class ControlPlane:
    """`uvicorn ainfinity.api.main:app --uds <socket>` in the namespace, on `home`."""

    def __init__(
        self,
        root: Path,
        *,
        name: str,
        namespace: LoopbackNamespace,
        sky: SkyApiServer,
        data_dir: Path,
    ) -> None:
        self.home = root / name / "home"
        self.socket = root / name / "ainfinity.sock"
        self.log_path = root / name / "server.log"
        self.namespace = namespace
        self.sky = sky
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None
        # SkyPilot's catalog for the server's own task checks (`validate_task` at POST):
        # a copy of the suite's small fixture, as nothing can be downloaded in here.
        self.sky_runtime = root / name / "sky-runtime"
        if not self.sky_runtime.exists():
            shutil.copytree(FIXTURE_RUNTIME, self.sky_runtime, copy_function=shutil.copyfile)

    def environment(self) -> dict[str, str]:
        env = self.sky.environment()
        # Not the probe shim: the control plane is SkyPilot's client, never its controller.
        env.pop("PYTHONPATH", None)
        env.pop("SKY_TEST_NETWORK_PROBE_URL", None)
        env.update(
            PATH=f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            SKY_RUNTIME_DIR=str(self.sky_runtime),
            HF_HUB_OFFLINE="1",
            AINFINITY_HOME=str(self.home),
            AINFINITY_API_KEYS=f"tester:{API_KEY}",
            AINFINITY_EXECUTOR="skypilot",
            AINFINITY_SKYPILOT_API_SERVER=API_URL,
            AINFINITY_RECONCILE_INTERVAL_SECONDS="0.5",
            AINFINITY_DATA_DIRS=str(self.data_dir),
            AINFINITY_RATE_LIMIT="100000/minute",
            AINFINITY_LOG_FORMAT="text",
        )
        return env

    def start(self, timeout: float = 90.0) -> None:
        assert self.process is None, "already started"
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = self.namespace.popen(
                [sys.executable, "-m", "uvicorn", "ainfinity.api.main:app",
                 "--uds", str(self.socket)],
                env=self.environment(),
                log=log,
                cwd=ROOT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"ainfinity exited with {code}:\n{self.log()}")
            if self.socket.exists():
                try:
                    with self.client() as client:
                        if client.get("/health").status_code == 200:
                            return
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"ainfinity did not answer in {timeout:.0f} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a graceful shutdown, as an operator's restart), SIGKILL if it hangs."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.socket))
        return httpx.Client(
            transport=transport,
            base_url="http://ainfinity",
            headers={"X-API-Key": API_KEY},
            timeout=60,
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""
