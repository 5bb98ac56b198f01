"""The job config parser and the packaged DeepSpeed and accelerate config files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ainfinity.train.deepspeed_configs import (
    DEEPSPEED_CONFIG_DIR,
    accelerate_config_path,
    deepspeed_config_path,
)
from ainfinity.train.job_config import (
    JobConfigError,
    LoraSettings,
    load_job_config,
    parse_job_config,
)

from .builders import REPO_ROOT, write_job_config

SETTINGS = [(0, False), (1, False), (2, False), (3, False), (2, True), (3, True)]


def config_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "j",
        "model": "tiny-random-llama",
        "dataset": "data/train.jsonl",
        "output_dir": "out",
    }
    return {**data, **overrides}


class TestJobConfig:
    def test_reads_the_file_the_control_plane_writes(self, tmp_path: Path) -> None:
        path = write_job_config(tmp_path, dataset=tmp_path / "d.jsonl", max_steps=30)

        config = load_job_config(path)

        assert config.dataset == tmp_path / "d.jsonl"
        assert config.output_dir == tmp_path / "output"
        assert config.hyperparameters.max_steps == 30
        assert config.hyperparameters.learning_rate == 0.005
        assert (config.deepspeed.zero_stage, config.deepspeed.offload) == (2, False)

    def test_resolves_relative_paths_against_the_base_dir(self, tmp_path: Path) -> None:
        data = config_data(validation_dataset="data/val.jsonl")

        config = parse_job_config(data, base_dir=tmp_path)

        assert config.dataset == tmp_path / "data" / "train.jsonl"
        assert config.validation_dataset == tmp_path / "data" / "val.jsonl"
        assert config.output_dir == tmp_path / "out"

    def test_fills_every_optional_key_with_the_contract_default(self) -> None:
        config = parse_job_config(config_data())

        assert config.validation_dataset is None
        assert config.method == "full"
        assert config.lora == LoraSettings(
            r=16, alpha=32, dropout=0.05, target_modules="auto", merge=False
        )
        hp = config.hyperparameters
        assert (hp.epochs, hp.packing, hp.completion_only_loss) == (1.0, False, True)
        assert (hp.gradient_checkpointing, hp.attn_implementation) == (False, "auto")
        assert (hp.save_steps, hp.save_total_limit, hp.eval_steps) == (500, 2, None)
        assert (hp.weight_decay, hp.lr_scheduler_type) == (0.0, "linear")

    def test_reads_every_new_field(self) -> None:
        data = config_data(
            validation_dataset=None,
            method="lora",
            lora={"r": 4, "alpha": 8, "dropout": 0, "target_modules": ["q_proj"], "merge": True},
            hyperparameters={
                "packing": True,
                "completion_only_loss": False,
                "gradient_checkpointing": True,
                "attn_implementation": "eager",
                "save_steps": None,
                "save_total_limit": None,
                "eval_steps": 7,
                "weight_decay": 0.1,
                "lr_scheduler_type": "cosine",
            },
        )

        config = parse_job_config(data)

        assert config.method == "lora"
        assert config.lora == LoraSettings(
            r=4, alpha=8, dropout=0.0, target_modules=["q_proj"], merge=True
        )
        hp = config.hyperparameters
        assert (hp.packing, hp.completion_only_loss, hp.gradient_checkpointing) == (
            True,
            False,
            True,
        )
        assert (hp.attn_implementation, hp.save_steps, hp.save_total_limit) == ("eager", None, None)
        assert (hp.eval_steps, hp.weight_decay, hp.lr_scheduler_type) == (7, 0.1, "cosine")

    def test_accepts_null_lora_as_the_defaults(self) -> None:
        config = parse_job_config(config_data(lora=None))

        assert config.lora == LoraSettings()

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            ({"model": 3}, "model must be str"),
            ({"dataset": ""}, "dataset must be str"),
            ({"surprise": 1}, "unknown field"),
            ({"hyperparameters": {"batch_size": True}}, "batch_size must be int"),
            ({"hyperparameters": {"batch_size": 0}}, "batch_size must be >= 1"),
            ({"hyperparameters": {"learning_rate": "1e-3"}}, "learning_rate must be float"),
            ({"hyperparameters": {"epochs": None}}, "epochs may not be null"),
            ({"hyperparameters": {"warmup_ratio": 1.0}}, "warmup_ratio must be in"),
            ({"deepspeed": {"zero_stage": 1, "offload": True}}, "offload needs zero_stage"),
            ({"deepspeed": []}, "deepspeed must be a JSON object"),
            ({"validation_dataset": 3}, "validation_dataset must be str"),
            ({"method": "qlora"}, "method must be one of 'full', 'lora'"),
            ({"method": None}, "method may not be null"),
            ({"lora": {"r": 0}}, r"lora.r must be >= 1"),
            ({"lora": {"dropout": 1.0}}, r"lora.dropout must be in \[0, 1\)"),
            ({"lora": {"target_modules": []}}, "target_modules must be a non-empty list"),
            ({"lora": {"target_modules": ["q_proj", ""]}}, "target_modules must be a non-empty"),
            ({"lora": {"target_modules": "q_proj"}}, "target_modules must be a non-empty list"),
            ({"lora": {"rank": 8}}, "unknown field.*in lora: rank"),
            ({"lora": []}, "lora must be a JSON object"),
            ({"hyperparameters": {"packing": 1}}, "packing must be bool"),
            (
                {"hyperparameters": {"attn_implementation": "flash"}},
                "attn_implementation must be one",
            ),
            ({"hyperparameters": {"lr_scheduler_type": "step"}}, "lr_scheduler_type must be one"),
            ({"hyperparameters": {"save_steps": 0}}, "save_steps must be >= 1"),
            ({"hyperparameters": {"save_total_limit": 0}}, "save_total_limit must be >= 1"),
            ({"hyperparameters": {"eval_steps": 1.5}}, "eval_steps must be int"),
            ({"hyperparameters": {"weight_decay": -0.1}}, "weight_decay must be in"),
        ],
    )
    def test_rejects_bad_values(self, overrides: dict[str, Any], message: str) -> None:
        with pytest.raises(JobConfigError, match=message):
            parse_job_config(config_data(**overrides))

    def test_reports_a_file_that_is_not_json(self, tmp_path: Path) -> None:
        path = tmp_path / "job.json"
        path.write_text("{", encoding="utf-8")

        with pytest.raises(JobConfigError, match="not valid JSON"):
            load_job_config(path)


class TestDeepSpeedConfigs:
    @pytest.mark.parametrize(("stage", "offload"), SETTINGS)
    def test_every_setting_has_a_config_the_trainer_fills_in(
        self, stage: int, offload: bool
    ) -> None:
        config = json.loads(deepspeed_config_path(stage, offload).read_text())

        assert config["zero_optimization"]["stage"] == stage
        for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
            assert config[key] == "auto"
        assert config["gradient_clipping"] == "auto"
        assert config["bf16"] == {"enabled": "auto"}

    @pytest.mark.parametrize(("stage", "offload"), [(3, False), (3, True)])
    def test_zero3_saves_a_reloadable_model(self, stage: int, offload: bool) -> None:
        config = json.loads(deepspeed_config_path(stage, offload).read_text())

        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True

    @pytest.mark.parametrize("stage", [2, 3])
    def test_offload_configs_use_deepspeeds_own_cpu_optimizer(self, stage: int) -> None:
        # A client (torch) optimizer with ZeRO-Offload is refused by DeepSpeed by default
        # (zero_force_ds_cpu_optimizer); an optimizer block makes it build DeepSpeedCPUAdam.
        config = json.loads(deepspeed_config_path(stage, offload=True).read_text())

        assert config["optimizer"]["type"] == "AdamW"
        assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"

    @pytest.mark.parametrize(("stage", "offload"), [(0, True), (1, True), (4, False)])
    def test_rejects_invalid_settings(self, stage: int, offload: bool) -> None:
        with pytest.raises(ValueError):
            deepspeed_config_path(stage, offload)

    def test_ships_no_stray_config(self) -> None:
        shipped = {path.name for path in DEEPSPEED_CONFIG_DIR.glob("*.json")}

        assert shipped == {deepspeed_config_path(*setting).name for setting in SETTINGS}

    @pytest.mark.parametrize(("stage", "offload"), [(2, False), (3, False), (3, True)])
    def test_accelerate_configs_point_at_the_matching_deepspeed_config(
        self, stage: int, offload: bool
    ) -> None:
        config = yaml.safe_load(accelerate_config_path(stage, offload).read_text())

        assert config["distributed_type"] == "DEEPSPEED"
        ds_file = REPO_ROOT / config["deepspeed_config"]["deepspeed_config_file"]
        assert ds_file.resolve() == deepspeed_config_path(stage, offload).resolve()

    def test_has_no_accelerate_config_for_zero0(self) -> None:
        with pytest.raises(ValueError, match="no accelerate config"):
            accelerate_config_path(0)
