"""prometheus-client's multiprocess mode, for `ainfinity serve` with several workers.

Each uvicorn worker keeps its own counters; in multiprocess mode every worker writes them
to memory-mapped files in one directory and a scrape, whichever worker answers it, sums
them all. The mode is chosen when `prometheus_client` is first imported, from
`PROMETHEUS_MULTIPROC_DIR`: `ainfinity serve` sets it in the supervising process before
any worker (a fresh interpreter that inherits it) imports anything.

Counters and histograms of a worker that died stay in the sum (a total never goes back);
the in-progress gauge of a dead worker is dropped (`mark_process_dead`) at the next
scrape, since a crashed or restarted worker never says goodbye.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
DIR_NAME = "prometheus"
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]*_(\d+)\.db$")

logger = logging.getLogger("ainfinity.metrics")


def multiprocess_dir() -> Path | None:
    """The directory of this process's metric files, or None in single-process mode."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def enable(home: Path) -> Path:
    """Turn multiprocess mode on for the workers this process is about to start.

    A directory the operator set in `PROMETHEUS_MULTIPROC_DIR` is used as it is; else
    `$home/prometheus/` is emptied first, so that no earlier run's counts leak into this one.
    """
    if "prometheus_client" in sys.modules:
        # Too late for this process (its mode is fixed); its workers still start right.
        logger.warning("prometheus_client was imported before multiprocess mode was set")
    existing = multiprocess_dir()
    if existing is not None:
        existing.mkdir(parents=True, exist_ok=True)
        return existing
    directory = home / DIR_NAME
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[ENV] = str(directory)
    return directory


def sweep_dead_processes(directory: Path) -> None:
    """Drop the live gauges of worker processes that no longer exist."""
    from prometheus_client.multiprocess import mark_process_dead

    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            match = _LIVE_GAUGE_FILE.match(entry.name)
            if match and not _alive(int(match.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    mark_process_dead(int(match.group(1)), str(directory))


def forget_this_process(directory: Path) -> None:
    """On a clean worker shutdown: its in-progress gauge leaves the sum at once."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(os.getpid(), str(directory))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
