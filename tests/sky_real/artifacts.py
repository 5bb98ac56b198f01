"""What the offline cluster needs from package indexes, built once and cached on this machine.

Built in the normal network namespace (PyPI is reachable there), before the loopback-only
namespace goes up; nothing inside the namespace downloads anything:

- `runtime-wheels`: SkyPilot's node runtime (`skypilot[slurm,remote]`) for CPython 3.10,
  which SkyPilot's runtime venv insists on (`uv venv --python 3.10`), plus pip, setuptools
  and wheel (uv's `--seed`, and the API server's `pip wheel` build of SkyPilot itself);
- `node-wheels`: what a node's `setup:` installs beside ainfinity's own wheel - ainfinity's
  dependencies, for the node's Python (Debian's python3), torch pinned to this machine's
  CPU build - the node's "package index";
- `uv`: the binary SkyPilot installs on every node, taken from PyPI's `uv` wheel;
- `python3.10`: a relocatable copy of a CPython 3.10 the Slurm user can read.

The cache lives under `$AINFINITY_SKY_REAL_CACHE` (default `~/.cache/ainfinity/sky-real`);
each entry is keyed by what it was built from, built in a temporary directory and renamed
into place when complete. `stage()` hard-links the entries into the world-readable scratch
directory of a run (the cache sits under root's home, which other users cannot enter).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ainfinity.executors.sky_wheel import build_wheel
from tests.sky_real.namespace import run_bounded

SKYPILOT_VERSION = importlib.metadata.version("skypilot")
UV_VERSION = "0.13.9"
NODE_PYTHON = "/usr/bin/python3"  # what SkyPilot's user env on the node is made from
# The stdlib parts a runtime venv never imports: 80 % of a CPython's size.
_PYTHON_SKIPPED = (
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "site-packages",
    "config-3.10-*",
    "__pycache__",
)


def cache_root() -> Path:
    configured = os.environ.get("AINFINITY_SKY_REAL_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "ainfinity" / "sky-real"


@dataclass(frozen=True)
class Artifacts:
    runtime_wheels: Path
    node_wheels: Path
    uv: Path  # the directory holding the `uv` binary
    python310: Path  # the prefix of the relocatable copy (bin/python3.10 inside)
    # SkyPilot's API server, as a platform team would install it: `skypilot[slurm]` (its
    # controller needs grpcio, which plain `skypilot` lacks). Used in place, by root.
    api_server_venv: Path

    def stage(self, into: Path) -> Artifacts:
        """Hard-link (or copy, across file systems) what the node reads into `into`."""
        staged = {}
        for name in ("runtime_wheels", "node_wheels", "uv", "python310"):
            source: Path = getattr(self, name)
            target = into / name.replace("_", "-")
            _link_tree(source, target)
            staged[name] = target
        return Artifacts(**staged, api_server_venv=self.api_server_venv)


def build_artifacts(timings: dict[str, float] | None = None) -> Artifacts:
    """Every cached entry, building the missing ones (minutes the first time on a machine)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    uv_dir = _cached(root / f"uv-{UV_VERSION}", _build_uv)
    uv = uv_dir / "uv"
    python310_source = find_python310()
    python310 = _cached(
        root / f"python-{_python_version(python310_source)}",
        lambda target: _copy_python(python310_source, target),
    )
    runtime_wheels = _cached(
        root / f"runtime-wheels-skypilot-{SKYPILOT_VERSION}-py310",
        lambda target: _build_runtime_wheels(uv, python310_source, target),
    )
    node_key = _node_wheels_key()
    node_wheels = _cached(
        root / f"node-wheels-{node_key}",
        lambda target: _build_node_wheels(uv, target),
    )
    api_server_venv = _cached(
        root / f"api-server-venv-skypilot-{SKYPILOT_VERSION}",
        lambda target: _build_api_server_venv(uv, python310_source, runtime_wheels, target),
    )
    return Artifacts(runtime_wheels, node_wheels, uv_dir, python310, api_server_venv)


def find_python310() -> str | None:
    """The real executable of a CPython 3.10 on this machine (pyenv shims resolved), if any."""
    candidates = [shutil.which("python3.10")]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))
    for candidate in filter(None, candidates):
        try:
            found = subprocess.run(
                [candidate, "-c", "import sys; print(sys.executable)"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if found:
            return str(Path(found).resolve())
    return None


def _cached(target: Path, build: Callable[[Path], None]) -> Path:
    if target.is_dir():
        return target
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.build-"))
    try:
        build(work)
        work.chmod(0o755)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def _pip_env() -> dict[str, str]:
    # Only the pip options of this machine's config apply (its local mirrors, its torch
    # build), never a caller's constraint file meant for another install.
    env = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return env


def _build_uv(target: Path) -> None:
    download = target / "download"
    run_bounded(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--dest", str(download), f"uv=={UV_VERSION}"],
        timeout=300, env=_pip_env(),
    )  # fmt: skip
    (wheel,) = download.glob("uv-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith(".data/scripts/uv")]
        (target / "uv").write_bytes(archive.read(member))
    (target / "uv").chmod(0o755)
    shutil.rmtree(download)


def _bootstrap_venv(uv: Path, python: str, target: Path) -> Path:
    """A throwaway venv of `python` with a current pip (old pips resolve these sets for minutes)."""
    venv = target / ".bootstrap"
    run_bounded([str(uv), "venv", "--quiet", "--seed", "--python", python, str(venv)],
                timeout=300, env=_pip_env())  # fmt: skip
    run_bounded([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-U", "pip"],
                timeout=300, env=_pip_env())  # fmt: skip
    return venv / "bin" / "python"


def _build_runtime_wheels(uv: Path, python310: str | None, target: Path) -> None:
    if python310 is None:
        raise RuntimeError("no CPython 3.10 found (SkyPilot's node runtime needs one)")
    python = _bootstrap_venv(uv, python310, target)
    run_bounded(
        [str(python), "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(target),
         f"skypilot[slurm,remote]=={SKYPILOT_VERSION}", "pip", "setuptools", "wheel"],
        timeout=900, env=_pip_env(),
    )  # fmt: skip
    shutil.rmtree(python.parent.parent)


def _build_api_server_venv(uv: Path, python310: str | None, wheels: Path, target: Path) -> None:
    """A venv with `skypilot[slurm]`, offline from the runtime wheelhouse (a superset).

    Relocatable (relative paths in its scripts), since `_cached` renames it into place."""
    assert python310 is not None
    run_bounded(
        [str(uv), "venv", "--quiet", "--relocatable", "--python", python310, str(target)],
        timeout=300,
    )
    run_bounded(
        [str(uv), "pip", "install", "--quiet", "--offline", "--no-index", "--find-links",
         str(wheels), "--python", str(target / "bin" / "python"),
         f"skypilot[slurm]=={SKYPILOT_VERSION}", "pip", "setuptools", "wheel"],
        timeout=600,
    )  # fmt: skip


def _build_node_wheels(uv: Path, target: Path) -> None:
    python = _bootstrap_venv(uv, NODE_PYTHON, target)
    with tempfile.TemporaryDirectory() as scratch:
        # ainfinity's wheel only names the dependencies: the node gets ainfinity itself from
        # the server, through file_mounts, never from its index.
        wheel = build_wheel(Path(scratch))
        run_bounded(
            [str(python), "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(target),
             str(wheel), f"torch=={importlib.metadata.version('torch')}", "pip"],
            timeout=900, env=_pip_env(),
        )  # fmt: skip
    for stray in target.glob("ainfinity-*.whl"):
        stray.unlink()
    shutil.rmtree(python.parent.parent)


def _node_wheels_key() -> str:
    requires = importlib.metadata.distribution("ainfinity").requires or []
    node_python = subprocess.run(
        [NODE_PYTHON, "-c", "import sys; print(sys.version)"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    key = "\n".join([*sorted(requires), importlib.metadata.version("torch"), node_python])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _python_version(executable: str | None) -> str:
    if executable is None:
        raise RuntimeError("no CPython 3.10 found (SkyPilot's node runtime needs one)")
    prefix = Path(executable).parent.parent
    return f"{prefix.name}-{hashlib.sha256(str(prefix).encode()).hexdigest()[:8]}"


def _copy_python(executable: str | None, target: Path) -> None:
    """Copy a CPython 3.10 so that any user can run it from anywhere.

    The interpreter finds its stdlib relative to itself; its libpython is found through an
    rpath that pyenv sets to its own (root-only) prefix, so it is pointed at `$ORIGIN/../lib`.
    """
    assert executable is not None
    prefix = Path(executable).parent.parent
    (target / "bin").mkdir(parents=True)
    shutil.copy2(executable, target / "bin" / "python3.10")
    (target / "lib").mkdir()
    for library in prefix.glob("lib/libpython3.10*.so*"):
        shutil.copy2(library, target / "lib" / library.name, follow_symlinks=True)
    shutil.copytree(
        prefix / "lib" / "python3.10",
        target / "lib" / "python3.10",
        ignore=shutil.ignore_patterns(*_PYTHON_SKIPPED),
        symlinks=True,
    )
    (target / "lib" / "python3.10" / "site-packages").mkdir()
    run_bounded(
        ["patchelf", "--set-rpath", "$ORIGIN/../lib", str(target / "bin" / "python3.10")],
        timeout=60,
    )
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)


def _link_tree(source: Path, target: Path) -> None:
    try:
        shutil.copytree(source, target, copy_function=os.link, symlinks=True)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, symlinks=True)
