"""A finished job's record as a model: registered when it SUCCEEDED, listed as `Model`.

The reconciler calls `register_model` under the job's lock, so the model's id and the facts
taken then go into the same write as the job's status.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ainfinity.jobs.run_output import latest_metrics
from ainfinity.jobs.transitions import utcnow
from ainfinity.schema.activity import Event, EventType
from ainfinity.schema.job import JobRecord, JobStatus, RegisteredModel, TrainingModel
from ainfinity.schema.model import Model, ModelLineage, ModelMetrics
from ainfinity.serving.base_models import BaseModel
from ainfinity.serving.model_ids import checkpoint_id, fine_tuned_id
from ainfinity.train.checkpoints import list_checkpoints


def register_model(record: JobRecord, *, metrics_path: Path) -> Event:
    """Make a job that just SUCCEEDED a model: its id and facts go into the same write."""
    trained_from = record.training_model or legacy_training_model(record)
    model_id = fine_tuned_id(trained_from.base_model, record.name, record.spec.suffix)
    output = Path(record.output_dir)
    train, evaluation = latest_metrics(metrics_path)
    record.fine_tuned_model = model_id
    record.registered_model = RegisteredModel(
        registered_at=utcnow(),
        size_bytes=files_size(output) if output.is_dir() else 0,
        train_loss=train.loss if train else None,
        eval_loss=evaluation.eval_loss if evaluation else None,
    )
    return Event(
        time=record.registered_model.registered_at,
        type=EventType.MODEL_REGISTERED,
        status=JobStatus.SUCCEEDED,
        message=f"model registered as {model_id}",
        actor="system",
    )


def legacy_training_model(record: JobRecord) -> TrainingModel:
    """For a record written before jobs kept their `training_model`."""
    model = record.spec.model
    return TrainingModel(load=model, tokenizer=model, base_model=model)


def model_of(record: JobRecord) -> Model:
    """The fine-tuned model of a record that has one."""
    assert record.fine_tuned_model is not None
    facts = record.registered_model
    spec = record.spec
    output = Path(record.output_dir)
    checkpoints = (
        [
            checkpoint_id(record.fine_tuned_model, found.step)
            for found in list_checkpoints(output)
            if found.complete
        ]
        if record.executor == "local"
        else []
    )
    return Model(
        id=record.fine_tuned_model,
        base_model=spec.model,
        job=record.name,
        method=spec.method,
        created_at=facts.registered_at if facts else (record.finished_at or record.updated_at),
        owner=record.owner,
        path=record.output_dir,
        size_bytes=facts.size_bytes if facts else None,
        metrics=ModelMetrics(
            train_loss=facts.train_loss if facts else None,
            eval_loss=facts.eval_loss if facts else None,
            eval_loss_before=record.eval_loss_before,
            eval_gain=record.eval_gain,
        ),
        lineage=ModelLineage(
            dataset=spec.dataset,
            dataset_sha256=record.dataset_sha256,
            validation_dataset=spec.validation_dataset,
            validation_dataset_sha256=record.validation_dataset_sha256,
            hyperparameters=spec.hyperparameters.model_dump(mode="json"),
            lora=spec.lora.model_dump(mode="json") if spec.lora else None,
        ),
        checkpoints=checkpoints,
    )


def public_base(base: BaseModel) -> Model:
    """A base model (built-in or model directory) as the registry lists it."""
    return Model(
        id=base.id,
        created_at=base.created_at,
        path=str(base.path) if base.path else None,
        size_bytes=files_size(base.path) if base.path else None,
    )


def files_size(directory: Path) -> int:
    """The regular files directly in `directory` (checkpoints and merged copies excluded)."""
    total = 0
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            with contextlib.suppress(OSError):
                if entry.is_file():
                    total += entry.stat().st_size
    return total
