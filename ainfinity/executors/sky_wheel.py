"""This server's own ainfinity as a wheel, for SkyPilot nodes to install.

A node needs the trainer that matches the server; no package index has to carry it. As
SkyPilot ships its own runtime to a cluster, the server packs the ainfinity it runs (the
`ainfinity` package directory and the metadata of its installed distribution, so the wheel
declares the same dependencies) into `$AINFINITY_HOME/wheels/`, once per version and
content, and each task uploads it with `file_mounts`. The node's `setup:` installs it, with
its dependencies from the node's own package index.

The build is deterministic (sorted entries, fixed timestamps), so several workers building
at once write the same bytes, and the last atomic rename wins harmlessly.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import tempfile
import threading
import zipfile
from pathlib import Path

import ainfinity
from ainfinity.jobs.task_render import find_template

DISTRIBUTION = "ainfinity"
WHEEL_TAG = "py3-none-any"
_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can hold: same bytes on every build
_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")

_lock = threading.Lock()
_built: dict[Path, Path] = {}


class ServerWheelUnavailable(RuntimeError):
    """ainfinity is not installed as a distribution, so there is no metadata to ship."""


def server_wheel(home: Path) -> Path:
    """The wheel of the running ainfinity under `home`, built on first use in this process."""
    with _lock:
        wheel = _built.get(home)
        if wheel is None or not wheel.is_file():
            wheel = _built[home] = build_wheel(home / "wheels")
        return wheel


def build_wheel(directory: Path) -> Path:
    """Write the wheel into `directory/<version>-<digest>/` unless it is there already."""
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ServerWheelUnavailable(
            "ainfinity is not installed (pip install -e . or a wheel), so it cannot ship "
            "itself to SkyPilot nodes; set AINFINITY_SKYPILOT_PIP_SPEC instead"
        ) from None
    metadata = distribution.read_text("METADATA") or ""
    version = distribution.version
    entry_points = distribution.read_text("entry_points.txt")
    files = _package_files()
    digest = hashlib.sha256(metadata.encode())
    for arcname, path in files:
        digest.update(arcname.encode() + b"\0" + path.read_bytes())
    target = directory / f"{version}-{digest.hexdigest()[:16]}"
    wheel = target / f"{DISTRIBUTION}-{version}-{WHEEL_TAG}.whl"
    if wheel.is_file():
        return wheel
    target.mkdir(parents=True, exist_ok=True)
    dist_info = f"{DISTRIBUTION}-{version}.dist-info"
    contents = [(arcname, path.read_bytes()) for arcname, path in files]
    contents.append((f"{dist_info}/METADATA", metadata.encode()))
    wheel_info = (
        f"Wheel-Version: 1.0\nGenerator: ainfinity\nRoot-Is-Purelib: true\nTag: {WHEEL_TAG}\n"
    )
    contents.append((f"{dist_info}/WHEEL", wheel_info.encode()))
    if entry_points:
        contents.append((f"{dist_info}/entry_points.txt", entry_points.encode()))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in contents)
    contents.append((f"{dist_info}/RECORD", (record + f"{dist_info}/RECORD,,\n").encode()))
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".build-", suffix=".whl")
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in contents:
                info = zipfile.ZipInfo(name, date_time=_TIMESTAMP)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, wheel)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return wheel


def _package_files() -> list[tuple[str, Path]]:
    """(name in the wheel, file) for the package, with the task template where wheels have it."""
    package_dir = Path(ainfinity.__file__).resolve().parent
    files: dict[str, Path] = {}
    for root, dirs, names in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in names:
            if name.endswith(_SKIPPED_SUFFIXES):
                continue
            path = Path(root) / name
            files[f"ainfinity/{path.relative_to(package_dir).as_posix()}"] = path
    # A source checkout keeps the template at the top of the tree; a wheel carries it inside.
    files.setdefault("ainfinity/skylaunch/deepspeed.yaml", find_template())
    return sorted(files.items())


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"
