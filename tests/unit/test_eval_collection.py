"""``eval --collection``: held-out sources of a user's own collection, through the real CLI."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from qdrant_sift.client.ingest import ingest
from qdrant_sift.client.stores import EdgeStore
from qdrant_sift.errors import ConfigError, DimensionMismatchError
from qdrant_sift.eval import ResultStore
from qdrant_sift.eval._collection import evaluate_collection, hold_out_sources
from qdrant_sift.eval._setup import PRESETS, hashing_embedder, with_overrides

torch.set_num_threads(1)
WORDS = str.split("ship wave harbour sail anchor storm tide captain deck rope court statute the a")


def _corpus(folder: Path, n_files: int = 10) -> Path:
    folder.mkdir(parents=True)
    for i in range(n_files):
        rng = random.Random(i)
        text = " ".join(rng.choice(WORDS) for _ in range(400))
        (folder / f"doc{i}.txt").write_text(text)
    return folder


@pytest.fixture
def edge(tmp_path: Path) -> Path:
    path = tmp_path / "edge"
    with EdgeStore(path, "mine") as store:
        report = ingest(_corpus(tmp_path / "docs"), store, hashing_embedder(), tokenizer="regex",
                        chunk_tokens=60, overlap=10, progress=False)  # fmt: skip
        assert report.chunks > 40
    return path


def test_held_out_sources_never_come_back(edge: Path) -> None:
    with EdgeStore(edge, "mine") as store:
        prompts, held = hold_out_sources(store, 3, 10, seed=1)
        assert len({p.doc_id for p in prompts}) == 3
        q = hashing_embedder().embed_query(prompts[0].text)
        cands = held.recall(q, 40)
        assert len(cands) == 40
        assert not {c["source"] for c in cands.payloads} & {p.doc_id for p in prompts}
        full = store.recall(q, 40)  # without the hold-out the prompt's own source ranks first
        assert full.payloads[0]["source"] == prompts[0].doc_id


def test_too_small_or_mismatched_fails_before_the_model_loads(
    edge: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qdrant_sift.eval import _setup

    def no_model(*_: object) -> None:
        raise AssertionError("the model was loaded before the checks")

    monkeypatch.setattr(_setup, "_load_tuner", no_model)
    quick = PRESETS["quick"]
    with EdgeStore(edge, "mine") as store:
        with pytest.raises(ConfigError, match="sources"):
            evaluate_collection(store, tmp_path / "o", quick, n_prompts=50)
        with pytest.raises(ConfigError, match="fewer than k"):
            big_k = with_overrides(quick, eval_k=10_000)
            evaluate_collection(store, tmp_path / "o", big_k, n_prompts=2)
        with pytest.raises(ConfigError, match="text"):
            evaluate_collection(store, tmp_path / "o", quick, n_prompts=2, text_key="body")
        with pytest.raises(DimensionMismatchError):
            evaluate_collection(store, tmp_path / "o", with_overrides(quick, embedder="minilm"),
                                n_prompts=2)  # fmt: skip


def test_cli_eval_on_a_collection(
    edge: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qdrant_sift.client.cli import main

    out = tmp_path / "out"
    argv = ["eval", "--quick", "--collection", "mine", "--path", str(edge), "--holdout", "3",
            "--out", str(out), "--no-progress", "--no-plots", "--threads", "1",
            "--arms", "nearest;sift:lam=1", "--n-grid", "1,3"]  # fmt: skip
    assert main(argv) == 0
    assert "| sift:lam=1 |" in capsys.readouterr().out
    rows = ResultStore(out / "results.jsonl").rows
    assert len(rows) == 3 * (1 + 2 * 2)
    assert all(r["steps"] == r["n"] for r in rows.values() if r["arm"] != "base")
    # Resuming is a no-op; another hold-out in the same folder is refused.
    assert main(argv) == 0
    assert len(ResultStore(out / "results.jsonl").rows) == len(rows)
    assert main([*argv[:8], "--seed", "5", *argv[8:]]) == 1
