"""TEST ONLY: loaded by the harness's SkyPilot processes (PYTHONPATH), nowhere else.

SkyPilot's managed-jobs controller checks the network with HEAD requests to
https://8.8.8.8 and https://1.1.1.1 (`_TEST_IP_LIST` in sky/backends/backend_utils.py)
and, while they fail, logs "Network is not available" and never finishes a job. In the
harness's loopback-only namespace they always fail, so when SKY_TEST_NETWORK_PROBE_URL
is set, that list is pointed at a loopback responder instead. This is the only change
the harness makes to SkyPilot's behaviour.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType

_TARGET = "sky.backends.backend_utils"
_PROBE_URL = os.environ.get("SKY_TEST_NETWORK_PROBE_URL")


class _RedirectNetworkProbe(importlib.abc.MetaPathFinder):
    def find_spec(
        self, name: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original(module)
            module._TEST_IP_LIST = [_PROBE_URL]  # type: ignore[attr-defined]

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if _PROBE_URL:
    sys.meta_path.insert(0, _RedirectNetworkProbe())
