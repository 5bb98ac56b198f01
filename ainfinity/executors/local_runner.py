"""Supervisor of one local job: `python -m ainfinity.executors.local_runner RUN_SCRIPT EXIT_FILE`.

The local executor starts this in a new session, so the job survives a server restart.
It runs the task's `run:` script with bash, waits, and records the exit status in
EXIT_FILE (atomically), which is how a server that did not start the job - or restarted
since - learns how it ended.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType


def main(argv: list[str]) -> int:
    run_script, exit_file = Path(argv[0]), Path(argv[1])
    child = subprocess.Popen(["bash", str(run_script)])

    def forward(signum: int, frame: FrameType | None) -> None:
        # A cancel signals the whole process group; a signal sent to this process alone
        # (say, `kill <pid>` by an operator) must still reach the job.
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    returncode = child.wait()
    status = {
        "returncode": returncode,
        "signal": signal.Signals(-returncode).name if returncode < 0 else None,
        "finished_at": time.time(),
    }
    tmp = exit_file.with_name(f".{exit_file.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(status, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, exit_file)
    return 0 if returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
