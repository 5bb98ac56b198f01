"""Where a SkyPilot job's streamed log lands: the job's own log file, and its metrics file.

The trainer prints each metric as an `ainfinity-metric {json}` line; picking those out of the
stream gives cloud jobs the same `metrics.jsonl`, `/metrics` and `progress` as local ones.

SkyPilot streams for a terminal: every line the node prints comes coloured, with its source in
front (`\\x1b[36m(setup pid=812)\\x1b[0m ...`, `\\x1b[36m(my-job, pid=901)\\x1b[0m ...`), among
SkyPilot's own status lines. The colour codes are dropped, so `GET /logs` reads as plain text;
the sources stay, since they tell `setup:` from `run:` and one node from another.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import TracebackType

from ainfinity.train.protocol import METRIC_PREFIX, parse_event

# CSI sequences: colours and styles (`\x1b[2m`, `\x1b[36m`, `\x1b[0m`), cursor moves.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI_ESCAPE.sub("", text)


class JobLogSink(io.TextIOBase):
    """A text stream that rewrites a job's log and metrics files from the start of the run.

    Whole lines are written (an escape sequence may be split across two writes), so the log
    file is at most one partial line behind the stream."""

    def __init__(self, log: Path, metrics: Path) -> None:
        super().__init__()
        # Truncated on purpose: a stream restarted from the beginning replaces the old copy.
        self._log = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._metrics = open(metrics, "w", encoding="utf-8")  # noqa: SIM115
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._take_line(line, end="\n")
        if lines:
            self.flush()  # `GET /logs` and the reconciler read the files while the job runs
        return len(text)

    def _take_line(self, raw: str, *, end: str) -> None:
        line = strip_ansi(raw)
        self._log.write(line + end)
        event = parse_event(line)
        if event is not None and event.kind == METRIC_PREFIX:
            self._metrics.write(json.dumps(event.payload) + "\n")

    def flush(self) -> None:
        self._log.flush()
        self._metrics.flush()

    def close(self) -> None:
        if not self.closed:
            if self._partial:
                self._take_line(self._partial, end="")
                self._partial = ""
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
