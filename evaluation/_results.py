"""An evaluation's output folder: ``results.jsonl``, the rows appended as they are measured and
read back to resume (:class:`ResultStore`), and ``run.json``, the settings a run may only resume
under (:func:`check_meta`; arms and N may grow).

Split from :mod:`._harness` so that the harness is about running arms, not about the files a
run leaves behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qdrant_sift.errors import ConfigError

__all__ = ["ResultStore", "RowKey", "check_meta"]

#: A row's key: (prompt id, arm, N).
RowKey = tuple[str, str, int]


class ResultStore:
    """Append-only JSONL of result rows; a torn last line (a kill mid-write) is ignored."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: dict[RowKey, dict[str, Any]] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.rows[(row["prompt_id"], row["arm"], int(row["n"]))] = row

    def __contains__(self, key: RowKey) -> bool:
        return key in self.rows

    def add(self, row: dict[str, Any]) -> None:
        key = (row["prompt_id"], row["arm"], int(row["n"]))
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
        self.rows[key] = row


def _comparable(meta: dict[str, Any]) -> dict[str, Any]:
    """Settings that must match to resume; arms and N may grow (rows are keyed by them)."""
    data: dict[str, Any] = json.loads(json.dumps(meta))
    for key in ("arms", "n_grid"):
        data.get("config", {}).pop(key, None)
    data.pop("prompts", None)
    return data


def check_meta(out: Path, meta: dict[str, Any]) -> None:
    """Refuse to resume into a folder written with other settings (arms and N may grow).

    A run that adds arms or N, or runs a subset of them, keeps the folder's earlier ones in
    ``run.json``: reports list the arms and N it names, so none of the earlier rows disappear.
    """
    path = out / "run.json"
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        old, new = _comparable(stored), _comparable(meta)
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(
                f"{out} holds results of a different run (differs in {diff}); "
                "use another output folder or delete it"
            )
        meta = json.loads(json.dumps(meta))
        before, now = stored.get("config", {}), meta.setdefault("config", {})
        now["arms"] = list(dict.fromkeys([*before.get("arms", []), *now.get("arms", [])]))
        now["n_grid"] = sorted({*before.get("n_grid", []), *now.get("n_grid", [])})
    path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
