#!/usr/bin/env bash
# Fetch (here, where PyPI is reachable) the wheels bench/gpu_check.sh needs on a GPU machine
# that has PyTorch, transformers, accelerate and peft but not the server's own stack, for its
# Python (3.12, x86-64). They land in .whl/, which git ignores (.git/info/exclude) and the
# device tool carries (`carry: [".whl"]`).
#   bash bench/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
# The versions this checkout is tested with (`make` installs them into .venv).
pinned() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
binary=(pydantic_core httptools)
pure=(
  fastapi starlette pydantic pydantic-settings python-dotenv annotated-types typing-inspection
  uvicorn slowapi limits Deprecated sse-starlette fastapi-offline redis hjson python-multipart
  sniffio opentelemetry-api typing-extensions anyio
)
for name in "${binary[@]}" "${pure[@]}"; do
  spec="$name==$(pinned "$name")"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl "$spec"
done
# DeepSpeed is published as a source archive; its wheel is pure Python (no ops compiled).
.venv/bin/pip wheel -q --no-deps -w .whl "deepspeed==$(pinned deepspeed)"
ls .whl && du -sh .whl
