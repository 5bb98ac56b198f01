"""Hostile strings for the injection tests (`test_injection_body.py`,
`test_injection_params.py`): each probe tries to create its own marker file (named after
where it was sent and the probe) when a shell or a YAML loader ever interprets it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.builders import SAMPLE_SFT, write_jsonl

MB = 1_048_576
# Replaced in each probe by the absolute path of its marker file.
MARKER = "@MARKER@"
# Replaced by an existing JSONL file outside every data dir.
OUTSIDE = "@OUTSIDE@"
# A closed port on loopback: a stored webhook can never reach anything.
DEAD_WEBHOOK = "http://127.0.0.1:9/"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}

PROBES: dict[str, str] = {
    # Shell metacharacters, with and without spaces (patterns that forbid whitespace
    # still let `;{touch,x};` and `${IFS}` through).
    "dollar-paren": f"$(touch {MARKER})",
    "backticks": f"`touch {MARKER}`",
    "semicolon": f"; touch {MARKER}",
    "pipe": f"| touch {MARKER}",
    "and": f"x && touch {MARKER}",
    "or": f"false || touch {MARKER}",
    "quote-break": f"'; touch {MARKER}; echo '",
    "double-quote-break": f'"; touch {MARKER}; echo "',
    "newline": f"x\ntouch {MARKER}\n",
    "brace-no-space": f";{{touch,{MARKER}}};",
    "ifs-no-space": f"$(touch${{IFS}}{MARKER})",
    "backtick-brace": f"`{{touch,{MARKER}}}`",
    "redirect": f">{MARKER}",
    "process-substitution": f"<(touch {MARKER})",
    # YAML: tags, a second document, anchors and aliases, flow and block styles.
    "yaml-python-tag": f"--- !!python/object/apply:os.system ['touch {MARKER}']",
    "yaml-second-document": f"key: v\n---\nrun: touch {MARKER}",
    "yaml-anchor-alias": f"&a touch {MARKER}\nrun: *a",
    "yaml-flow-mapping": f"{{run: touch {MARKER}, setup: touch {MARKER}}}",
    "yaml-block-scalar": f"|\n  touch {MARKER}",
    # Paths out of the data dirs.
    "dotdot": "../../../../../../../../etc/passwd",
    "absolute-outside": OUTSIDE,
    "climb-out-of-samples": "@CLIMB@",
    "home-dir": "~/.ssh/id_rsa",
    "file-url": "file:///etc/passwd",
    "proc": "/proc/self/environ",
    # NUL bytes.
    "nul": "a\x00b",
    "nul-truncation": f"{SAMPLE_SFT}\x00.txt",
    # Unicode: direction override, zero-width, emoji, lone surrogates (sent as JSON
    # escapes), a BOM, YAML's other line breaks (U+2028, NEL), full-width lookalikes.
    "rtl-override": "\u202elnosj.exe",
    "zero-width": "tiny\u200b-random\u200d-llama",
    "emoji": "\U0001f600\U0001f525",
    "lone-surrogate": "\ud800",
    "lone-low-surrogate": "x\udfffx",
    "bom": "\ufefftiny-random-llama",
    "line-separator": f"a\u2028run: touch {MARKER}",
    "next-line": f"a\x85run: touch {MARKER}",
    "fullwidth": "\uff1b\uff54\uff4f\uff55\uff43\uff48",
    # CR/LF: header splitting, raw and percent-encoded.
    "crlf": "x\r\nX-Injected: 1",
    "crlf-encoded": "x%0d%0aX-Injected:%201",
}
# Kept apart: near the default 1 MiB body limit a 413 is a valid answer (see below).
ONE_MB = "A" * MB
# httpx (like every HTTP server's request-line limit) refuses URLs over 64 kB: the
# biggest a path or query probe can be.
LONG_URL_PART = "A" * 60_000


@dataclass(frozen=True)
class Probes:
    """Where markers go, and the probes with their placeholders filled in."""

    markers: Path
    outside: Path

    def marker(self, where: str, probe: str) -> Path:
        return self.markers / f"{where}.{probe}"

    def value(self, where: str, probe: str) -> str:
        climb = os.path.relpath(self.outside, SAMPLE_SFT.parent)
        return (
            PROBES[probe]
            .replace(MARKER, str(self.marker(where, probe)))
            .replace(OUTSIDE, str(self.outside))
            .replace("@CLIMB@", f"{SAMPLE_SFT.parent}/{climb}")
        )

    def fired(self) -> list[str]:
        return sorted(path.name for path in self.markers.iterdir())


def marker_probes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probes]:
    """For a module-scoped `probes` fixture: fails the module if any probe ever fired."""
    # Outside the data dirs: each test's data dir is its own tmp_path, a sibling of this.
    root = tmp_path_factory.mktemp("injection")
    markers = root / "markers"
    markers.mkdir()
    outside = write_jsonl(root / "outside.jsonl", [{"text": "secret"}] * 4)
    found = Probes(markers=markers, outside=outside)
    yield found
    assert not found.fired(), f"probes executed: {found.fired()}"


def post_json(client: TestClient, url: str, body: Any, **headers: str | bytes) -> Any:
    # json.dumps escapes lone surrogates as \ud800 (valid JSON text); httpx's json= would
    # fail to encode them before sending.
    return client.post(
        url, content=json.dumps(body), headers={"Content-Type": "application/json", **headers}
    )
