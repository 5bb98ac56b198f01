"""Run the inference worker: `python -m ainfinity.serving.worker --socket PATH ...`.

It exits when its parent (the API process that supervises it) is gone, so a server killed
with SIGKILL leaves no model in memory behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

import uvicorn

from ainfinity.serving.worker.app import WorkerConfig, create_worker_app


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ainfinity.serving.worker")
    parser.add_argument("--socket", required=True, help="Unix socket to serve on.")
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
    app = create_worker_app(
        WorkerConfig(
            max_models=args.max_models,
            default_max_tokens=args.default_max_tokens,
            token_timeout=args.token_timeout,
        )
    )
    config = uvicorn.Config(
        app,
        uds=args.socket,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
