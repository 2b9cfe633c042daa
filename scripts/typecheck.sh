#!/usr/bin/env bash
# mypy --strict over the public API and the evaluation write-up's scripts (docs/eval/scripts/*.py)
# (config: [tool.mypy] in pyproject.toml). Given arguments, mypy gets those alone (the config's
# `packages` where none of them names a target).
# The repository maps top-level folders into one namespace (client/ -> qdrant_sift.client, ...);
# mypy cannot follow setuptools' editable finder, so we lay the namespace out as symlinks under
# build/typecheck and check it there (cheap; the cache makes a re-run take seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
TREE=build/typecheck
PKG=$TREE/qdrant_sift
mkdir -p "$PKG"
find "$PKG" -maxdepth 1 -xtype l -delete  # links to files since removed
for f in qdrant_sift/*.py qdrant_sift/py.typed; do ln -sfn "$ROOT/$f" "$PKG/$(basename "$f")"; done
ln -sfn "$ROOT/client" "$PKG/client"
ln -sfn "$ROOT/reranker" "$PKG/reranker"
ln -sfn "$ROOT/finetune" "$PKG/finetune"
ln -sfn "$ROOT/evaluation" "$PKG/eval"
ln -sfn "$ROOT/reranker/proto/qdrant_sift/v1" "$PKG/v1"
cd "$TREE"
if [ $# -eq 0 ]; then
  # mypy takes packages or files, not both: the package goes as its folder (the same modules
  # as the config's `packages`), beside the scripts, which import it
  set -- qdrant_sift "$ROOT"/docs/eval/scripts/*.py
fi
exec "$ROOT/$VENV/bin/python" -m mypy --config-file "$ROOT/pyproject.toml" --cache-dir "$ROOT/build/mypy-cache" "$@"
