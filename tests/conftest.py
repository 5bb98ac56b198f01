"""Fixtures: real apps over HTTP, each with its own store on `tmp_path`."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Before anything imports sky: SkyPilot reads these when it is imported. Its state and
# catalogs go to a copy of tests/fixtures/sky_runtime (a small catalog, so nothing is
# downloaded), it never starts an API server, and it reports no usage.
os.environ["SKY_RUNTIME_DIR"] = shutil.copytree(
    Path(__file__).parent / "fixtures" / "sky_runtime",
    tempfile.mkdtemp(prefix="ainfinity-sky-runtime-"),
    dirs_exist_ok=True,
    # Fresh modification times: SkyPilot re-downloads a catalog file it finds too old.
    copy_function=shutil.copyfile,
)
os.environ["SKYPILOT_DISABLE_LOCAL_API_SERVER"] = "1"
os.environ["SKYPILOT_DISABLE_USAGE_COLLECTION"] = "1"

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ainfinity.api.main import create_app
from ainfinity.core.config import Settings
from tests.builders import API_KEY, OTHER_KEY, ROOT

atexit.register(shutil.rmtree, os.environ["SKY_RUNTIME_DIR"], ignore_errors=True)

# Jobs started by tests must not reach any hub, and one thread per job keeps two cores usable.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path) -> MakeSettings:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "home": tmp_path / "home",
            # Tests write their datasets under tmp_path; the samples come with the repo.
            "data_dirs": [tmp_path, ROOT / "samples"],
            "api_keys": SecretStr(f"tester:{API_KEY},other:{OTHER_KEY}"),
            "rate_limit": "100000/minute",
            "reconcile_interval_seconds": 0.2,
            "local_cancel_grace_seconds": 5.0,
            # Most API tests need no training: jobs stay queued unless a test asks for room.
            "local_max_jobs": 0,
            "local_gpus": 0,
            # Measuring token lengths starts the inference worker: only the tests about it.
            "token_stats": False,
            # Webhooks go to the tests' own loopback receivers, named as an operator would.
            "webhook_hosts": ["127.0.0.1", "localhost"],
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as test_client:
        yield test_client


@pytest.fixture
def runner_settings(make_settings: MakeSettings) -> Settings:
    """Settings under which jobs really run (two at a time)."""
    return make_settings(local_max_jobs=2)


@pytest.fixture
def runner(runner_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(runner_settings), headers={"X-API-Key": API_KEY}) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in smollm2-135m-instruct, unpacked once per session (about a minute: the
    GGUF file is read and de-quantized), for every test that uses the real model."""
    from ainfinity.train.builtin_models import SMOLLM2_NAME, builtin_directory

    return builtin_directory(SMOLLM2_NAME, tmp_path_factory.mktemp("model-cache"))


def share_model_cache(home: Path, directory: Path) -> None:
    """Put an unpacked built-in in a server's model cache ($AINFINITY_HOME/models), so that
    its jobs and its inference worker find it there instead of unpacking it again."""
    cache = home / "models"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / directory.name).symlink_to(directory, target_is_directory=True)
