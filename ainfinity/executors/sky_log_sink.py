"""Where a SkyPilot job's streamed log lands: the job's own log file, and its metrics file.

The trainer prints each metric as an `ainfinity-metric {json}` line; picking those out of the
stream gives cloud jobs the same `metrics.jsonl`, `/metrics` and `progress` as local ones.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import TracebackType

from ainfinity.train.protocol import METRIC_PREFIX, parse_event


class JobLogSink(io.TextIOBase):
    """A text stream that rewrites a job's log and metrics files from the start of the run."""

    def __init__(self, log: Path, metrics: Path) -> None:
        super().__init__()
        # Truncated on purpose: a stream restarted from the beginning replaces the old copy.
        self._log = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._metrics = open(metrics, "w", encoding="utf-8")  # noqa: SIM115
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._log.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._take_metric(line)
        return len(text)

    def _take_metric(self, line: str) -> None:
        event = parse_event(line)
        if event is not None and event.kind == METRIC_PREFIX:
            self._metrics.write(json.dumps(event.payload) + "\n")

    def flush(self) -> None:
        self._log.flush()
        self._metrics.flush()

    def close(self) -> None:
        if not self.closed:
            if self._partial:
                self._take_metric(self._partial)
            # The base class flushes on close, so it goes first, while the files are open.
            super().close()
            self._log.close()
            self._metrics.close()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
