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
from ainfinity.train.job_config import JobConfigError, load_job_config, parse_job_config

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
        config = parse_job_config(config_data(), base_dir=tmp_path)

        assert config.dataset == tmp_path / "data" / "train.jsonl"
        assert config.output_dir == tmp_path / "out"
        assert config.hyperparameters.epochs == 1.0

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
