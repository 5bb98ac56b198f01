"""A one-node Slurm cluster on this machine, with its login node reachable over ssh.

munged, sshd, slurmctld and slurmd run in the foreground inside the loopback-only namespace,
configured from files under the run's scratch directory. SkyPilot reaches the cluster as a
site's users do: ssh to the login node (here `127.0.0.1:22` inside the namespace) as an
unprivileged user, then `sbatch`/`srun`. That user is `NODE_USER`, whose home is in the
scratch directory; its shells find the offline node runtime through the environment below.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.sky_real.artifacts import Artifacts
from tests.sky_real.namespace import LoopbackNamespace, run_bounded

NODE_USER = "ainfinity-node"
CLUSTER_NAME = "ainfinity-test"
# The node is declared larger than this machine (SlurmdParameters=config_overrides) so that
# several jobs' clusters fit side by side; DefMemPerCPU stops a job that asks for no memory
# from asking for the whole node.
NODE_CPUS = 16
NODE_MEMORY_MB = 32000


@dataclass
class SlurmCluster:
    """Files and daemons of the cluster; `root` is the run's scratch directory."""

    root: Path
    artifacts: Artifacts
    namespace: LoopbackNamespace
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def slurm_conf(self) -> Path:
        return self.root / "slurm" / "slurm.conf"

    @property
    def client_key(self) -> Path:
        return self.root / "ssh" / "client_key"

    @property
    def node_home(self) -> Path:
        return self.root / "nodehome"

    def node_environment(self) -> dict[str, str]:
        """What every shell of the Slurm user gets: the cluster's config and the offline
        package sources (uv: SkyPilot's runtime; pip: the node's index for `setup:`)."""
        return {
            "SLURM_CONF": str(self.slurm_conf),
            "UV_OFFLINE": "1",
            "UV_NO_INDEX": "1",
            "UV_FIND_LINKS": str(self.artifacts.runtime_wheels),
            "UV_PYTHON_DOWNLOADS": "never",
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(self.artifacts.node_wheels),
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            # Every "node" of this cluster shares the machine's two cores.
            "OMP_NUM_THREADS": "1",
        }

    # -- files, in the normal namespace ----------------------------------------------------

    def prepare(self, shims: Path) -> None:
        """Write every config file, the keys and the node user's home."""
        hostname = socket.gethostname().split(".")[0]
        for sub in ("slurm/state", "slurm/spool", "ssh", "nodebin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._node_user()
        self._munge_key()
        for key in ("host_key", "client_key"):
            run_bounded(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.root / "ssh" / key)],
                timeout=30,
            )
        self.slurm_conf.write_text(_slurm_conf(self.root, hostname))
        env_line = " ".join(f"{k}={v}" for k, v in self.node_environment().items())
        (self.root / "ssh" / "sshd_config").write_text(_sshd_config(self.root, env_line))
        # The node's PATH: the curl shim (SkyPilot's uv installer, served offline) and the
        # CPython 3.10 copy SkyPilot's runtime venv is made from.
        shutil.copy2(shims / "curl", self.root / "nodebin" / "curl")
        (self.root / "nodebin" / "curl").chmod(0o755)
        (self.root / "nodebin" / "python3.10").symlink_to(
            self.artifacts.python310 / "bin" / "python3.10"
        )
        (self.root / "nodebin" / "uv").symlink_to(self.artifacts.uv / "uv")
        exports = "".join(f"export {k}={v}\n" for k, v in self.node_environment().items())
        profile = f"export PATH={self.root / 'nodebin'}:$PATH\n{exports}"
        ssh_dir = self.node_home / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.client_key.with_suffix(".pub"), ssh_dir / "authorized_keys")
        (self.node_home / ".bash_profile").write_text(profile)
        user = pwd.getpwnam(NODE_USER)
        for path in [self.node_home, *self.node_home.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        ssh_dir.chmod(0o700)
        (ssh_dir / "authorized_keys").chmod(0o600)

    def _node_user(self) -> None:
        try:
            pwd.getpwnam(NODE_USER)
            run_bounded(["usermod", "-d", str(self.node_home), NODE_USER], timeout=30)
        except KeyError:
            run_bounded(
                ["useradd", "--system", "--shell", "/bin/bash", "--home-dir",
                 str(self.node_home), NODE_USER],
                timeout=30,
            )  # fmt: skip
        # sshd refuses a locked account even for key logins; '*' unlocks it, no password.
        run_bounded(["usermod", "-p", "*", NODE_USER], timeout=30)
        self.node_home.mkdir(parents=True, exist_ok=True)

    def _munge_key(self) -> None:
        munge = self.root / "munge"
        # Readable by all: every Slurm client (the node user's srun too) talks to the socket.
        munge.mkdir(mode=0o755, exist_ok=True)
        key = munge / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        uid, gid = pwd.getpwnam("munge").pw_uid, grp.getgrnam("munge").gr_gid
        for path in (munge, key):
            os.chown(path, uid, gid)

    # -- daemons, in the namespace ---------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        munge = self.root / "munge"
        uid, gid = pwd.getpwnam("munge").pw_uid, grp.getgrnam("munge").gr_gid
        self._daemon(
            "munged",
            ["nsenter", f"--net={self.namespace.netns_path}", f"--setuid={uid}",
             f"--setgid={gid}", "--", "munged", "--foreground", f"--key-file={munge}/munge.key",
             f"--socket={munge}/munge.socket", f"--pid-file={munge}/munged.pid",
             f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"],
        )  # fmt: skip
        _wait_for(lambda: (munge / "munge.socket").exists(), timeout, "munged's socket")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        self._daemon(
            "sshd",
            self.namespace.wrap(["/usr/sbin/sshd", "-D", "-f", str(self.root / "ssh/sshd_config"),
                                 "-E", str(self.root / "ssh/sshd.log")]),
        )  # fmt: skip
        conf = str(self.slurm_conf)
        self._daemon("slurmctld", self.namespace.wrap(["slurmctld", "-D", "-f", conf]))
        self._daemon("slurmd", self.namespace.wrap(["slurmd", "-D", "-f", conf]))
        _wait_for(lambda: "idle" in self.sinfo(), timeout, "an idle Slurm node")

    def _daemon(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.out", "ab")  # noqa: SIM115 - the daemon keeps it
        self.daemons[name] = subprocess.Popen(
            argv,
            env={**os.environ, "SLURM_CONF": str(self.slurm_conf)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        time.sleep(0.2)
        if self.daemons[name].poll() is not None:
            out = (self.root / f"{name}.out").read_text(errors="replace")[-2000:]
            raise RuntimeError(
                f"{name} exited at once with {self.daemons[name].returncode}:\n{out}"
            )

    def reap(self) -> None:
        """Collect the daemons' exit statuses once the namespace teardown has killed them."""
        for process in self.daemons.values():
            process.wait(timeout=30)

    def slurm(self, *argv: str, timeout: float = 30.0) -> str:
        """A Slurm client command (sinfo, squeue, scontrol) in the namespace; its stdout."""
        env = {**os.environ, "SLURM_CONF": str(self.slurm_conf)}
        result = self.namespace.run(list(argv), timeout=timeout, env=env, check=False)
        return result.stdout.decode(errors="replace")

    def sinfo(self) -> str:
        return self.slurm("sinfo", "--noheader", "--format=%T")

    def queue(self) -> list[str]:
        """Slurm's job queue: one `<job id> <name> <state>` line per job."""
        lines = self.slurm("squeue", "--noheader", "--format=%i %j %T").splitlines()
        return [line.strip() for line in lines if line.strip()]


def _wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise RuntimeError(f"no {what} after {timeout:.0f} s")


def _slurm_conf(root: Path, hostname: str) -> str:
    slurm = root / "slurm"
    munge_socket = root / "munge" / "munge.socket"
    return f"""\
ClusterName={CLUSTER_NAME}
SlurmctldHost={hostname}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={slurm}/state
SlurmdSpoolDir={slurm}/spool
SlurmctldPidFile={slurm}/slurmctld.pid
SlurmdPidFile={slurm}/slurmd.pid
SlurmctldLogFile={slurm}/slurmctld.log
SlurmdLogFile={slurm}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
KillWait=5
DefMemPerCPU=512
InactiveLimit=0
MinJobAge=60
NodeName={hostname} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} State=UNKNOWN
PartitionName=debug Nodes={hostname} Default=YES MaxTime=INFINITE State=UP
"""


def _sshd_config(root: Path, env_line: str) -> str:
    ssh = root / "ssh"
    # SkyPilot's rsync-over-srun runs ssh without a login shell, which never reads
    # ~/.bash_profile: SetEnv gives every session the cluster's config and package sources.
    return f"""\
ListenAddress 127.0.0.1
Port 22
HostKey {ssh}/host_key
PidFile {ssh}/sshd.pid
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowUsers {NODE_USER}
UsePAM no
StrictModes no
MaxSessions 100
MaxStartups 100:30:200
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel INFO
SetEnv {env_line}
"""
