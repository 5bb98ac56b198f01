"""The wheel carries the task template, and an installed server finds it there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.builders import ROOT


def test_wheel_carries_the_template_and_finds_it_when_installed(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("ainfinity-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        packaged = archive.read("ainfinity/skylaunch/deepspeed.yaml")
    assert packaged == (ROOT / "skylaunch" / "deepspeed.yaml").read_bytes()
    assert "ainfinity/train/config/ds_config/zero3.json" in names
    # The dashboard's page and every asset it serves (tests/test_dashboard.py) ship too.
    dashboard = ROOT / "ainfinity" / "dashboard"
    shipped = {p.relative_to(ROOT).as_posix() for p in dashboard.rglob("*") if p.is_file()}
    assert "ainfinity/dashboard/assets/app.js" in shipped and shipped <= names

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ainfinity.jobs.task_render import find_template; print(find_template())",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    assert Path(found) == target / "ainfinity" / "skylaunch" / "deepspeed.yaml"
