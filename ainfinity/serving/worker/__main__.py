"""Run the inference worker: `python -m ainfinity.serving.worker --socket PATH ...`.

It exits when its parent (the API process that supervises it) is gone, so a server killed
with SIGKILL leaves no model in memory behind.

A deployment's worker pins one model (`--pin-model`, loaded before it answers its first
health check) and, as a SkyServe replica, listens on TCP (`--host`, `--port`) and asks every
request for the deployment's token, read from the environment variable `--api-key-env`
names (a key on the command line would show in `ps`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from typing import Any

import uvicorn

from ainfinity.serving.model_source import ModelSource
from ainfinity.serving.worker.app import WorkerConfig, create_worker_app


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ainfinity.serving.worker")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="Unix socket to serve on.")
    where.add_argument("--port", type=int, help="TCP port to serve on (with --host).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--api-key-env",
        default=None,
        help="Name of the environment variable holding the Bearer token every request needs.",
    )
    parser.add_argument(
        "--pin-model", default=None, help="A model source (JSON) loaded at start and only served."
    )
    parser.add_argument("--max-models", type=int, default=2)
    parser.add_argument("--default-max-tokens", type=int, default=512)
    parser.add_argument("--token-timeout", type=float, default=60.0)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s", stream=sys.stderr
    )
    # Before serving: the first request then pays no import, and no two threads race
    # through transformers' lazy imports.
    import peft  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    if args.parent_pid is not None:
        threading.Thread(
            target=_exit_with_parent, args=(args.parent_pid,), name="parent-watch", daemon=True
        ).start()
    api_key = None
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            parser.error(f"--api-key-env names {args.api_key_env}, which is not set")
    app = create_worker_app(
        WorkerConfig(
            max_models=args.max_models,
            default_max_tokens=args.default_max_tokens,
            token_timeout=args.token_timeout,
            pinned=ModelSource.from_json(args.pin_model) if args.pin_model else None,
            api_key=api_key,
        )
    )
    listen: dict[str, Any] = (
        {"uds": args.socket} if args.socket else {"host": args.host, "port": args.port}
    )
    config = uvicorn.Config(
        app,
        **listen,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
