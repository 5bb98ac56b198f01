"""Render `skylaunch/deepspeed.yaml` into one job's SkyPilot task.

The template is filled as a data structure, never by text substitution: user values go
into the job config file (JSON) and the task's own fields, and the scripts stay as written.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from ainfinity import __version__
from ainfinity.schema.job import JobSpec, LoraOptions

TEMPLATE_NAME = "deepspeed.yaml"


def find_template() -> Path:
    """The template: inside the installed wheel, else at the top of the source tree."""
    packaged = Path(__file__).resolve().parent.parent / "skylaunch" / TEMPLATE_NAME
    if packaged.is_file():
        return packaged
    source_tree = Path(__file__).resolve().parents[2] / "skylaunch" / TEMPLATE_NAME
    if source_tree.is_file():
        return source_tree
    raise FileNotFoundError(f"skylaunch/{TEMPLATE_NAME} is neither packaged nor in the source tree")


def load_template(path: Path | None = None) -> dict[str, Any]:
    with open(path or find_template(), encoding="utf-8") as fh:
        template = yaml.safe_load(fh)
    if not isinstance(template, dict) or "run" not in template:
        raise ValueError(f"{path or find_template()} is not a SkyPilot task with a run: section")
    return template


def job_config(spec: JobSpec, *, output_dir: str) -> dict[str, Any]:
    """What `ainfinity.train.finetune` reads: every user value of the job, as data."""
    return {
        "name": spec.name,
        "model": spec.model,
        "dataset": spec.dataset,
        "validation_dataset": spec.validation_dataset,
        "output_dir": output_dir,
        "method": spec.method,
        "lora": (spec.lora or LoraOptions()).model_dump(),
        "hyperparameters": spec.hyperparameters.model_dump(),
        "deepspeed": spec.deepspeed.model_dump(),
        "metadata": spec.metadata,
    }


def render_task(template: dict[str, Any], spec: JobSpec, *, workdir: Path) -> dict[str, Any]:
    """Fill the template for one job; the result is a SkyPilot task config (a dict)."""
    task = copy.deepcopy(template)
    task["name"] = spec.name
    task["workdir"] = str(workdir)
    task["num_nodes"] = spec.resources.num_nodes
    resources: dict[str, Any] = dict(task.get("resources") or {})
    requested = spec.resources
    for key, value in (
        ("accelerators", requested.accelerators),
        ("cloud", requested.cloud),
        ("region", requested.region),
    ):
        if value is not None:
            resources[key] = value
    if requested.use_spot:
        resources["use_spot"] = True
    task["resources"] = resources
    envs: dict[str, Any] = dict(task.get("envs") or {})
    # An unpinned spec in the template means "the version this server runs".
    if envs.get("AINFINITY_PIP_SPEC") == "ainfinity":
        envs["AINFINITY_PIP_SPEC"] = f"ainfinity=={__version__}"
    task["envs"] = {key: str(value) for key, value in envs.items()}
    return task


def dump_task(task: dict[str, Any]) -> str:
    # Block style for the scripts keeps the stored task readable and runnable by hand.
    return yaml.dump(task, Dumper=_TaskDumper, sort_keys=False, allow_unicode=True)


def dump_job_config(config: dict[str, Any]) -> bytes:
    return json.dumps(config, indent=2, ensure_ascii=False).encode()


class _TaskDumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_TaskDumper.add_representer(str, _represent_str)
