"""Render `skylaunch/serve.yaml` into one deployment's SkyServe task, and check it with
SkyPilot's own code.

The template is filled as data, as the jobs' is: the deployment's values go into the task's
fields (`resources`, `envs`, `file_mounts`, the service's replica counts) and its scripts
stay as written. The token is a secret: the stored task names it without a value, and only
the copy handed to SkyPilot (`with_token`) carries it.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Literal

from ainfinity import __version__
from ainfinity.exceptions import InvalidSpec
from ainfinity.executors.sky_catalog import plain_error, validate_task
from ainfinity.jobs.task_render import (
    NODE_INPUTS_DIR,
    fill_resources,
    find_template,
    load_template,
)
from ainfinity.schema.deployment import DeploymentSpec
from ainfinity.serving.model_source import ModelSource

from .model_files import ReplicaModel

SERVE_TEMPLATE = "serve.yaml"
TOKEN_SECRET = "AINFINITY_API_KEY"
Engine = Literal["transformers", "vllm"]


def load_serve_template() -> dict[str, Any]:
    template = load_template(find_template(SERVE_TEMPLATE))
    if not isinstance(template.get("service"), dict):
        raise ValueError(f"skylaunch/{SERVE_TEMPLATE} has no service: section")
    return template


def choose_engine(spec: DeploymentSpec) -> Engine:
    """`auto`: vLLM on GPU replicas, ainfinity's transformers worker on CPU ones and locally."""
    gpu = spec.resources.accelerators is not None
    if spec.engine == "vllm":
        if spec.executor == "local":
            raise InvalidSpec("vLLM runs on SkyPilot replicas; local deployments use transformers.")
        if not gpu:
            raise InvalidSpec("vLLM needs a GPU: give resources.accelerators (e.g. 'L4:1').")
        return "vllm"
    if spec.engine == "transformers" or spec.executor == "local" or not gpu:
        return "transformers"
    return "vllm"


def render_service(
    template: dict[str, Any],
    spec: DeploymentSpec,
    model: ReplicaModel,
    *,
    engine: Engine,
    pip_spec: str | None,
    wheel: Path | None = None,
) -> dict[str, Any]:
    """The SkyServe task of one deployment (a dict), its token left out.

    A transformers replica installs `pip_spec` when given, else `wheel` (this server's own
    ainfinity, uploaded beside the model as jobs upload it to their nodes)."""
    resources = fill_resources(template.get("resources"), spec.resources)
    envs: dict[str, Any] = dict(template.get("envs") or {})
    source = ModelSource(
        id=model.id, load=model.load, adapter=model.adapter, tokenizer=model.tokenizer
    )
    envs.update(
        AINFINITY_ENGINE=engine,
        AINFINITY_MODEL_ID=model.id,
        AINFINITY_MODEL_PATH=model.load,
        AINFINITY_SERVED_NAME=model.served_name,
        AINFINITY_LORA_PATH=model.adapter or "",
        AINFINITY_MODEL_SOURCE=source.to_json(),
        # The client's labels, as data: no script reads them, `sky serve status` shows them.
        AINFINITY_METADATA=json.dumps(spec.metadata, sort_keys=True, ensure_ascii=False),
    )
    if "ports" in resources:
        envs["AINFINITY_PORT"] = str(resources["ports"])
    file_mounts = dict(model.file_mounts)
    # An unpinned spec in the template means "the version this server runs", as for jobs.
    if pip_spec is not None:
        envs["AINFINITY_PIP_SPEC"] = pip_spec
    elif wheel is not None and engine == "transformers":
        # Relative: under the replica's workdir, where `setup:` runs; no sudo needed.
        node_wheel = f"{NODE_INPUTS_DIR}/{wheel.name}"
        file_mounts[node_wheel] = str(wheel)
        envs["AINFINITY_PIP_SPEC"] = f"./{node_wheel}"
    elif envs.get("AINFINITY_PIP_SPEC") == "ainfinity":
        envs["AINFINITY_PIP_SPEC"] = f"ainfinity=={__version__}"
    service = copy.deepcopy(template["service"])
    service.pop("replicas", None)
    service.pop("replica_policy", None)
    if spec.autoscaling is not None:
        service["replica_policy"] = spec.autoscaling.model_dump()
    else:
        service["replicas"] = spec.replicas or 1
    task: dict[str, Any] = {}
    for key, value in template.items():
        task[key] = copy.deepcopy(value)
        if key == "envs" and file_mounts:
            # Beside the envs: where a reader looks for what the scripts get.
            task["file_mounts"] = {**(template.get("file_mounts") or {}), **file_mounts}
    task.update(
        name=spec.name,
        resources=resources,
        envs={key: str(value) for key, value in envs.items()},
        service=service,
    )
    return task


def with_token(task: dict[str, Any], token: str) -> dict[str, Any]:
    """The task as SkyPilot gets it: the secret filled in (the probe's header uses it)."""
    filled = copy.deepcopy(task)
    filled["secrets"] = {**(filled.get("secrets") or {}), TOKEN_SECRET: token}
    return filled


def validate_service(task: dict[str, Any]) -> None:
    """Raise InvalidSpec (422) with SkyPilot's reason when SkyServe would refuse `task`.

    Offline: the service name against SkyPilot's pattern, the task and its service spec
    through `sky.Task.from_yaml_config`, `sky.serve.validate_service_task` (replica port,
    spot settings, probe), then the task's own checks. Opening the replica port is checked
    against the named cloud; with none named, SkyPilot would ask its enabled clouds (which
    only its API server knows), so the task is checked without the port there.
    """
    import sky
    from sky import exceptions as sky_exceptions
    from sky import serve
    from sky.skylet import constants

    name = str(task.get("name", ""))
    if re.fullmatch(constants.CLUSTER_NAME_VALID_REGEX, name) is None:
        raise InvalidSpec(
            f"SkyServe refuses the service name {name!r}: it must match "
            f"{constants.CLUSTER_NAME_VALID_REGEX} (no '-' at the end)."
        )
    try:
        parsed = sky.Task.from_yaml_config(copy.deepcopy(task))
        serve.validate_service_task(parsed, pool=False)
        resources = task.get("resources") or {}
        if resources.get("cloud") is not None:
            validate_task(task)
        else:
            validate_task(
                {**task, "resources": {k: v for k, v in resources.items() if k != "ports"}}
            )
    except (
        ValueError,
        RuntimeError,
        ImportError,  # a cloud whose extra this server lacks (skypilot[kubernetes])
        sky_exceptions.NotSupportedError,
        sky_exceptions.NoCloudAccessError,
    ) as exc:
        raise InvalidSpec(f"SkyPilot rejects the service: {plain_error(exc)}") from None
