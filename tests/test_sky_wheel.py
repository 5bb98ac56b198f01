"""The server's own ainfinity as a wheel, the way SkyPilot nodes get it by default."""

from __future__ import annotations

import email
import subprocess
import sys
import zipfile
from pathlib import Path

from ainfinity import __version__
from ainfinity.executors.sky_wheel import build_wheel, server_wheel
from tests.builders import ROOT


def test_the_wheel_installs_and_carries_the_trainer_and_its_dependencies(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "wheels")

    assert wheel.name == f"ainfinity-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.message_from_bytes(
            archive.read(f"ainfinity-{__version__}.dist-info/METADATA")
        )
        template = archive.read("ainfinity/skylaunch/deepspeed.yaml")
    assert "ainfinity/train/finetune.py" in names
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
    assert template == (ROOT / "skylaunch" / "deepspeed.yaml").read_bytes()
    # The node's pip installs the dependencies the server's own distribution declares.
    requires = metadata.get_all("Requires-Dist") or []
    assert any(r.startswith("torch") for r in requires)
    assert any(r.startswith("transformers") for r in requires)

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    found = subprocess.run(
        [sys.executable, "-c", "import ainfinity.train.finetune as f; print(f.__file__)"],
        check=True, capture_output=True, text=True, cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    ).stdout.strip()  # fmt: skip
    assert Path(found).is_relative_to(target)


def test_it_is_built_once_per_content_and_the_same_bytes_each_time(tmp_path: Path) -> None:
    first = server_wheel(tmp_path / "home")
    built_at = first.stat().st_mtime_ns

    assert server_wheel(tmp_path / "home") == first
    assert first.stat().st_mtime_ns == built_at
    # Deterministic, so workers that build at once write the same file.
    assert build_wheel(tmp_path / "elsewhere").read_bytes() == first.read_bytes()
    # Named by version and content: a changed tree gets a wheel of its own.
    assert first.parent.parent == tmp_path / "home" / "wheels"
    assert first.parent.name.startswith(f"{__version__}-")
