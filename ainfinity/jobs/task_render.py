"""Render `skylaunch/deepspeed.yaml` into one job's SkyPilot task.

The template is filled as a data structure, never by text substitution: user values go
into the job config file (JSON) and the task's own fields, and the scripts stay as written.
"""

from __future__ import annotations

import copy
import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from ainfinity import __version__
from ainfinity.exceptions import InvalidDataset, InvalidSpec
from ainfinity.schema.job import JobSpec, TrainingModel
from ainfinity.schema.training_options import DpoOptions, LoraOptions
from ainfinity.store.job_files import JobPaths

TEMPLATE_NAME = "deepspeed.yaml"

# Where a SkyPilot node finds the job's datasets and ainfinity's wheel (copied there before
# `setup:` runs). Relative: SkyPilot puts a relative file-mount destination under the
# workdir (~/sky_workdir), where `setup:` and `run:` start. An absolute one (/ainfinity/...)
# needs `sudo mkdir` on the node, which a Slurm cluster's users do not have: SkyPilot then
# retries the launch forever.
NODE_INPUTS_DIR = "ainfinity-inputs"
# Where a model or adapter directory of this server is uploaded to (under the inputs).
NODE_MODEL_DIR = f"{NODE_INPUTS_DIR}/model"
NODE_ADAPTER_DIR = f"{NODE_INPUTS_DIR}/adapter"
# Where an `output_uri` bucket is mounted on every node; the output dir is a folder inside it.
NODE_BUCKETS_DIR = "/ainfinity/buckets"
# Without a bucket the output stays on the head node's disk: relative to the workdir `run:`
# starts in (SkyPilot's ~/sky_workdir), so no root-owned path is needed.
NODE_LOCAL_OUTPUT = "output"
NODE_LOCAL_OUTPUT_SHOWN = "~/sky_workdir/output"
# MOUNT writes each file through to the bucket when it is closed: a checkpoint whose
# completion marker is there has all its files there too, so a recovered run can resume.
OUTPUT_MOUNT_MODE = "MOUNT"
# SkyPilot's default strategy, named so the stored task says what it does.
RECOVERY_STRATEGY = "EAGER_NEXT_REGION"
DATASET_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class RenderedJob:
    """One job ready to store: its SkyPilot task, the trainer's config, and its output dir.

    `output_dir` is what the job record shows: a server path (local executor), the
    `output_uri` bucket, or the node path when the output stays on the node's disk.
    """

    task: dict[str, Any]
    job_config: dict[str, Any]
    output_dir: str


def find_template(name: str = TEMPLATE_NAME) -> Path:
    """A template: inside the installed wheel, else at the top of the source tree."""
    packaged = Path(__file__).resolve().parent.parent / "skylaunch" / name
    if packaged.is_file():
        return packaged
    source_tree = Path(__file__).resolve().parents[2] / "skylaunch" / name
    if source_tree.is_file():
        return source_tree
    raise FileNotFoundError(f"skylaunch/{name} is neither packaged nor in the source tree")


def load_template(path: Path | None = None) -> dict[str, Any]:
    with open(path or find_template(), encoding="utf-8") as fh:
        template = yaml.safe_load(fh)
    if not isinstance(template, dict) or "run" not in template:
        raise ValueError(f"{path or find_template()} is not a SkyPilot task with a run: section")
    return template


def job_config(spec: JobSpec, trained_from: TrainingModel, *, output_dir: str) -> dict[str, Any]:
    """What `ainfinity.train.finetune` reads: every user value of the job, as data."""
    return {
        "name": spec.name,
        "model": trained_from.load,
        "adapter": trained_from.adapter,
        "model_seed": trained_from.model_seed,
        "dataset": spec.dataset,
        "validation_dataset": spec.validation_dataset,
        "output_dir": output_dir,
        "method": spec.method,
        "lora": (spec.lora or LoraOptions()).model_dump(),
        "use_lora": spec.adapts,
        "dpo": (spec.dpo or DpoOptions()).model_dump(),
        "hyperparameters": spec.hyperparameters.model_dump(),
        "deepspeed": spec.deepspeed.model_dump(),
        "metadata": spec.metadata,
    }


class RequestedResources(Protocol):
    """What a job or a deployment asks SkyPilot for."""

    accelerators: str | None
    cloud: str | None
    region: str | None
    use_spot: bool


def fill_resources(
    template: dict[str, Any] | None, requested: RequestedResources
) -> dict[str, Any]:
    """The template's `resources:` with what was asked for set over it."""
    resources: dict[str, Any] = dict(template or {})
    for key, value in (
        ("accelerators", requested.accelerators),
        ("cloud", requested.cloud),
        ("region", requested.region),
    ):
        if value is not None:
            resources[key] = value
    if requested.use_spot:
        resources["use_spot"] = True
    return resources


def render_task(template: dict[str, Any], spec: JobSpec, *, workdir: Path) -> dict[str, Any]:
    """Fill the template for one job; the result is a SkyPilot task config (a dict)."""
    task = copy.deepcopy(template)
    task["name"] = spec.name
    task["workdir"] = str(workdir)
    task["num_nodes"] = spec.resources.num_nodes
    task["resources"] = fill_resources(task.get("resources"), spec.resources)
    envs: dict[str, Any] = dict(task.get("envs") or {})
    # An unpinned spec in the template means "the version this server runs".
    if envs.get("AINFINITY_PIP_SPEC") == "ainfinity":
        envs["AINFINITY_PIP_SPEC"] = f"ainfinity=={__version__}"
    task["envs"] = {key: str(value) for key, value in envs.items()}
    return task


def render_job(
    template: dict[str, Any],
    spec: JobSpec,
    paths: JobPaths,
    trained_from: TrainingModel,
    *,
    pip_spec: str | None,
    wheel: Path | None = None,
) -> RenderedJob:
    """The task and job config of one job, for either executor.

    Local: the task as `render_task` makes it, the job's files on this server. SkyPilot:
    datasets travel through `file_mounts`, the output goes to the `output_uri` bucket or
    shared directory (or the node's disk), a model or adapter directory of this server is
    uploaded, `job_recovery` carries `max_restarts_on_errors`. A node installs `pip_spec`
    when given, else `wheel` (this server's own ainfinity, uploaded with the datasets).
    Raises InvalidSpec/InvalidDataset for what cannot be mounted as written.
    """
    task = render_task(template, spec, workdir=paths.workdir)
    if spec.executor == "local":
        output_dir = str(paths.output)
        return RenderedJob(task, job_config(spec, trained_from, output_dir=output_dir), output_dir)

    file_mounts: dict[str, Any] = dict(task.get("file_mounts") or {})
    if pip_spec is not None:
        task["envs"]["AINFINITY_PIP_SPEC"] = pip_spec
    elif wheel is not None:
        node_wheel = f"{NODE_INPUTS_DIR}/{wheel.name}"
        file_mounts[node_wheel] = str(wheel)
        # A path, so pip installs this file (and its dependencies from the node's index).
        task["envs"]["AINFINITY_PIP_SPEC"] = f"./{node_wheel}"
    task["resources"]["job_recovery"] = {
        "strategy": RECOVERY_STRATEGY,
        "max_restarts_on_errors": spec.resources.max_restarts_on_errors,
    }
    dataset = _mount_dataset(file_mounts, spec.dataset, node_name="train")
    validation = (
        _mount_dataset(file_mounts, spec.validation_dataset, node_name="validation")
        if spec.validation_dataset is not None
        else None
    )
    if spec.output_uri is not None:
        node_output = _mount_output(file_mounts, spec.output_uri)
        # A shared directory is shown as the path it is on the cluster (and, when this
        # server mounts the same filesystem, GET /checkpoints reads it).
        shared = spec.output_uri.startswith("file://")
        shown_output = node_output if shared else spec.output_uri.rstrip("/")
    else:
        node_output, shown_output = NODE_LOCAL_OUTPUT, NODE_LOCAL_OUTPUT_SHOWN
    config = {
        **job_config(spec, trained_from, output_dir=node_output),
        "dataset": dataset,
        "validation_dataset": validation,
    }
    # Directories on this server (a model dir, a fine-tuned model) travel to the node too.
    if trained_from.load.startswith("/"):
        file_mounts[NODE_MODEL_DIR] = trained_from.load
        # "./": a path to transformers, never a hub id.
        config["model"] = f"./{NODE_MODEL_DIR}"
    if trained_from.adapter is not None:
        file_mounts[NODE_ADAPTER_DIR] = trained_from.adapter
        config["adapter"] = f"./{NODE_ADAPTER_DIR}"
    return RenderedJob(_with_file_mounts(task, file_mounts), config, shown_output)


def _mount_dataset(file_mounts: dict[str, Any], source: str, *, node_name: str) -> str:
    """Copy one dataset file onto every node; returns its path there.

    A local path is uploaded by SkyPilot; a bucket URI is copied by the node itself
    (SkyPilot looks at the object: a file is copied as a file, a prefix as a folder, so the
    URI must name the JSONL object - the trainer reads one file).
    """
    what = "Dataset" if node_name == "train" else "Validation dataset"
    # SkyPilot expands $VARS in file-mount paths: such a path would not be the one asked for.
    if "$" in source:
        raise InvalidDataset(f"{what} {source!r} contains '$', which SkyPilot would expand.")
    suffix = posixpath.splitext(source.rstrip("/"))[1].lower()
    if suffix not in DATASET_SUFFIXES:
        raise InvalidDataset(f"{what} {source!r} must name one JSONL file (.jsonl).")
    node_path = f"{NODE_INPUTS_DIR}/{node_name}{suffix}"
    file_mounts[node_path] = source
    return node_path


def _mount_output(file_mounts: dict[str, Any], output_uri: str) -> str:
    """Mount the output bucket on every node; returns the output dir there.

    SkyPilot mounts whole buckets only (a MOUNT source with a path inside the bucket is
    refused when the job launches), so the bucket is mounted and the path is a folder in it.
    A `file:///dir` needs no mount: it names a directory of a filesystem every node shares
    (a Slurm cluster's), written in place, which outlives the job's cluster.
    """
    scheme, _, rest = output_uri.rstrip("/").partition("://")
    if scheme == "file":
        parts = rest.split("/")
        if parts[0] != "" or any(part in ("", ".", "..") for part in parts[1:]):
            raise InvalidSpec(f"output_uri {output_uri!r} is not a plain absolute path.")
        return rest
    parts = rest.split("/")
    # cos://<region>/<bucket>/...: the bucket is the second part.
    root_parts = 2 if scheme == "cos" else 1
    bucket, inside = parts[:root_parts], parts[root_parts:]
    if not all(bucket) or any(part in ("", ".", "..") for part in inside):
        raise InvalidSpec(f"output_uri {output_uri!r} is not a bucket path like s3://bucket/dir.")
    mount_point = f"{NODE_BUCKETS_DIR}/{bucket[-1]}"
    file_mounts[mount_point] = {
        "source": f"{scheme}://{'/'.join(bucket)}",
        "mode": OUTPUT_MOUNT_MODE,
    }
    return "/".join([mount_point, *inside])


def _with_file_mounts(task: dict[str, Any], file_mounts: dict[str, Any]) -> dict[str, Any]:
    """The task with `file_mounts` placed after `workdir`, where a reader looks for inputs."""
    ordered: dict[str, Any] = {}
    for key, value in task.items():
        if key != "file_mounts":
            ordered[key] = value
        if key == "workdir":
            ordered["file_mounts"] = file_mounts
    ordered.setdefault("file_mounts", file_mounts)
    return ordered


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
