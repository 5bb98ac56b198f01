"""Settings: one pydantic-settings class, read from `AINFINITY_*` variables and `.env`."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ExecutorName = Literal["local", "skypilot"]

_KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ApiKey(BaseModel):
    """A named API key; only its SHA-256 digest is kept in memory."""

    name: str
    digest: bytes
    role: Literal["admin", "user"] = "admin"

    @classmethod
    def from_plain(cls, name: str, key: str, role: Literal["admin", "user"] = "admin") -> ApiKey:
        return cls(name=name, digest=hashlib.sha256(key.encode()).digest(), role=role)


def parse_api_keys(raw: str) -> list[ApiKey]:
    """Parse `name:key[:role]` pairs separated by commas; `key` may be `sha256:<hex>`."""
    keys: list[ApiKey] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, sep, rest = item.partition(":")
        if not sep or not _KEY_NAME.match(name) or not rest:
            raise ValueError("AINFINITY_API_KEYS entries must look like name:key[:role]")
        role: Literal["admin", "user"] = "admin"
        if rest.endswith((":admin", ":user")):
            rest, _, role_text = rest.rpartition(":")
            role = "admin" if role_text == "admin" else "user"
        if rest.startswith("sha256:"):
            hex_digest = rest.removeprefix("sha256:")
            if not re.fullmatch(r"[0-9a-fA-F]{64}", hex_digest):
                raise ValueError(f"API key {name!r}: sha256: must be followed by 64 hex digits")
            keys.append(ApiKey(name=name, digest=bytes.fromhex(hex_digest), role=role))
        else:
            if len(rest) < 16:
                raise ValueError(f"API key {name!r} is shorter than 16 characters")
            keys.append(ApiKey.from_plain(name, rest, role))
    if len({key.name for key in keys}) != len(keys):
        raise ValueError("AINFINITY_API_KEYS has two keys with the same name")
    return keys


# The sample datasets of a source checkout (absent from an installed wheel).
SOURCE_SAMPLES = Path(__file__).resolve().parents[2] / "samples"


class Settings(BaseSettings):
    """Every knob of the server. `.env.example` lists each one with its default."""

    model_config = SettingsConfigDict(env_prefix="AINFINITY_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    home: Path = Path(".ainfinity")

    # Kept as a SecretStr so the keys never show up in a repr or a log line.
    api_keys: SecretStr = SecretStr("")
    rate_limit: str = "120/minute"
    rate_limit_storage: str = "memory://"
    # Job bodies are a few kB; the limit stops a client from making the server buffer megabytes.
    max_body_bytes: int = Field(1_048_576, ge=1024, le=1_073_741_824)
    # Files uploaded to /v1/files (training data), streamed to disk as they arrive.
    max_upload_bytes: int = Field(536_870_912, ge=1024, le=107_374_182_400)
    cors_origins: Annotated[list[str], NoDecode] = []
    log_format: Literal["json", "text"] = "text"
    log_level: str = "INFO"
    # Prometheus scrapers usually hold no API key; set this where /metrics is reachable by others.
    metrics_require_key: bool = False

    # Directories datasets may be read from (comma-separated); empty: the home's `data/` and,
    # in a source checkout, its `samples/`. Paths are resolved, so links cannot lead out.
    data_dirs: Annotated[list[Path], NoDecode] = []
    # Directories of base models (comma-separated): each subdirectory holding a `config.json`
    # is a model that jobs may train from and `/v1` may serve, by its directory name or path.
    # Empty: the home's `models/`. Resolved like `data_dirs`.
    model_dirs: Annotated[list[Path], NoDecode] = []
    # Measure a new job's token lengths (in the inference worker, after the 202).
    token_stats: bool = True

    # Serving (`/v1`): models loaded at once in the inference worker (least recently used is
    # evicted); requests generating at once per API process, and how many may wait for a
    # slot before the rest get 429.
    serve_max_models: int = Field(2, ge=1, le=64)
    serve_max_concurrency: int = Field(16, ge=1, le=1024)
    serve_max_queue: int = Field(64, ge=0, le=100_000)
    # The most tokens one request may ask for (`max_tokens`), and what it gets when it does
    # not ask (still cut at the model's context length).
    serve_max_tokens: int = Field(4096, ge=1, le=1_000_000)
    serve_default_max_tokens: int = Field(512, ge=1, le=1_000_000)
    # A generation that produces no token for this long is stopped with an error.
    serve_token_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    # How long a request waits for the worker to start (its first start imports torch).
    serve_start_timeout_seconds: float = Field(120.0, gt=0, le=3600)
    # Restarts of a crashed worker in a row (back-off 0.5 s doubling, at most 30 s) before it
    # is left down; the next request starts it again.
    serve_max_restarts: int = Field(5, ge=0, le=100)
    serve_health_interval_seconds: float = Field(2.0, gt=0, le=60)

    executor: ExecutorName = "local"
    local_max_jobs: int = Field(1, ge=0, le=64)
    local_gpus: int | None = Field(None, ge=0, le=64)
    local_cancel_grace_seconds: float = Field(10.0, ge=0, le=600)
    reconcile_interval_seconds: float = Field(1.0, gt=0, le=60)

    # SkyPilot executor. Unset: the SDK's own local API server (started on first use).
    skypilot_api_server: str | None = Field(
        None, pattern=r"^https?://[^\s]+$", examples=["http://sky.internal:46580"]
    )
    # What a node pip-installs to get the trainer; unset: this server's own ainfinity as a
    # wheel, uploaded with each job. A version spec, wheel URL or `git+https://...` works too.
    skypilot_pip_spec: str | None = Field(None, min_length=1, max_length=1024)
    # How often the managed-jobs queue is read (one batched call for all active jobs).
    skypilot_poll_seconds: float = Field(10.0, gt=0, le=600)

    # Deployments (`/api/v1/deployments`): how often SkyServe's status is read (one batched
    # call for every deployment), requests one deployment generates at once per API process
    # (its own slots, apart from the on-demand workers'), and how many local deployments (a
    # pinned worker each, holding its model in memory) may run at once.
    deploy_poll_seconds: float = Field(10.0, gt=0, le=600)
    deploy_max_concurrency: int = Field(16, ge=1, le=1024)
    local_max_deployments: int = Field(2, ge=0, le=64)

    # Streams (log follow, Server-Sent Events): how often an open stream looks for new
    # lines, and how often an idle SSE stream sends a keep-alive comment.
    stream_poll_seconds: float = Field(0.25, ge=0.01, le=10)
    stream_ping_seconds: float = Field(15.0, gt=0, le=300)

    # Webhooks: the HMAC-SHA256 key of `X-Ainfinity-Signature` (empty: deliveries are sent
    # unsigned, without that header), and the retry schedule: attempt n+1 waits
    # backoff * 2**(n-1) seconds after attempt n fails.
    webhook_secret: SecretStr = SecretStr("")
    webhook_max_attempts: int = Field(5, ge=1, le=20)
    webhook_backoff_seconds: float = Field(2.0, ge=0, le=3600)
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120)
    # Hosts a webhook_url may name, comma-separated: `hooks.example.com`, or `*.example.com`
    # for its subdomains. Empty: any host (the server then POSTs wherever a key holder asks).
    webhook_hosts: Annotated[list[str], NoDecode] = []

    @field_validator("cors_origins", "data_dirs", "model_dirs", "webhook_hosts", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, value: SecretStr) -> SecretStr:
        parse_api_keys(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _absolute_home(self) -> Settings:
        # Jobs run with their own working directory, so every path handed to them is absolute.
        self.home = self.home.expanduser().resolve()
        if not self.data_dirs:
            self.data_dirs = [self.home / "data"]
            if SOURCE_SAMPLES.is_dir():
                self.data_dirs.append(SOURCE_SAMPLES)
        self.data_dirs = [path.expanduser().resolve() for path in self.data_dirs]
        if not self.model_dirs:
            self.model_dirs = [self.home / "models"]
        self.model_dirs = [path.expanduser().resolve() for path in self.model_dirs]
        return self

    def parsed_api_keys(self) -> list[ApiKey]:
        return parse_api_keys(self.api_keys.get_secret_value())


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return Settings()
