"""The evaluation harness with a tiny random Llama and real LoRA steps (no downloads)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from qdrant_sift.errors import ConfigError, TuningError
from qdrant_sift.finetune import TestTimeTuner, TuneConfig, bits_per_byte
from qdrant_sift.finetune._corpus import Corpus, build_corpus, token_chunker
from qdrant_sift.finetune._corpus_sources import Document
from qdrant_sift.finetune._eval_report import correlation, write_reports
from qdrant_sift.finetune._eval_setup import hashing_embedder, tiny_model
from qdrant_sift.finetune._evaluate import EvalConfig, ResultStore, run_evaluation
from qdrant_sift.finetune._plots import write_plots

torch.set_num_threads(1)

VOCAB = {
    "law": str.split("court statute section party contract clause shall hereby liable damages"),
    "code": str.split("def return self import class lambda yield None value args kwargs"),
    "sea": str.split("ship wave harbour sail anchor storm tide captain deck rope"),
}
CFG = EvalConfig(strategies=("nearest", "sift", "random", "sift-adaptive"), n_grid=(1, 3), k=8)


def _doc(domain: str, i: int) -> Document:
    rng = random.Random(f"{domain}{i}")
    words = VOCAB[domain] + ["the", "a", "of", "and"]
    return Document(f"{domain}-{i}", domain, " ".join(rng.choice(words) for _ in range(60)))


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    docs = [_doc(d, i) for d in VOCAB for i in range(6)]
    _, tok = tiny_model()
    return build_corpus(docs, token_chunker(tok, 48), prompts_per_domain=1, seed=0)


def _tuner(seed: int = 0) -> TestTimeTuner:
    model, tok = tiny_model(seed)
    return TestTimeTuner(model, tok, TuneConfig(lora_rank=4, learning_rate=5e-3))


def _run(corpus: Corpus, out: Path, cfg: EvalConfig = CFG, **kw: Any) -> ResultStore:
    return run_evaluation(corpus, _tuner(), hashing_embedder(), out, cfg, progress=False, **kw)


@pytest.fixture(scope="module")
def finished(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> ResultStore:
    return _run(corpus, tmp_path_factory.mktemp("eval"))


def test_every_row_is_there(corpus: Corpus, finished: ResultStore) -> None:
    expected = {(p.id, "base", 0) for p in corpus.prompts} | {
        (p.id, s, n) for p in corpus.prompts for s in CFG.strategies for n in CFG.n_grid
    }
    assert set(finished.rows) == expected


def test_base_equals_bits_per_byte_of_the_untouched_model(
    corpus: Corpus, finished: ResultStore
) -> None:
    model, tok = tiny_model()
    for p in corpus.prompts:
        want = bits_per_byte(model, tok, p.text).bits_per_byte
        assert finished.rows[(p.id, "base", 0)]["bpb"] == pytest.approx(want, rel=1e-6)


def test_same_candidates_for_every_strategy(corpus: Corpus, finished: ResultStore) -> None:
    for p in corpus.prompts:
        hashes = {r["candidates"] for k, r in finished.rows.items() if k[0] == p.id}
        assert len(hashes) == 1
    picks = {r["strategy"]: r["picks"] for r in finished.rows.values() if r["n"] == 3}
    assert picks["nearest"] != picks["random"] or picks["nearest"] != picks["sift"]


def test_checkpoints_equal_tuning_from_scratch(corpus: Corpus, finished: ResultStore) -> None:
    """The bpb at N=3, measured on the way to the largest N, is what 3 steps alone give."""
    tuner = _tuner()
    p = corpus.prompts[0]
    changed = False
    for strategy in ("nearest", "sift", "random"):
        row = finished.rows[(p.id, strategy, 3)]
        assert row["steps"] == 3 and len(row["picks"]) == 3
        with tuner.session():
            tuner.tune([corpus.chunks[i].text for i in row["picks"]])
            got = tuner.bits_per_byte(p.text).bits_per_byte
        assert row["bpb"] == pytest.approx(got, rel=1e-5)
        changed |= abs(row["bpb"] - row["base_bpb"]) > 1e-6
    assert changed  # the steps really moved the model


def test_adaptive_is_a_prefix_of_sift(corpus: Corpus, finished: ResultStore) -> None:
    for p in corpus.prompts:
        for n in CFG.n_grid:
            ada = finished.rows[(p.id, "sift-adaptive", n)]
            sift = finished.rows[(p.id, "sift", n)]
            assert ada["steps"] <= n
            assert ada["picks"] == sift["picks"][: ada["steps"]]
            if ada["steps"] == n:
                assert ada["bpb"] == pytest.approx(sift["bpb"], rel=1e-6)


class Stop(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted(
    corpus: Corpus, finished: ResultStore, tmp_path: Path
) -> None:
    seen: list[dict[str, Any]] = []

    def bomb(row: dict[str, Any]) -> None:
        seen.append(row)
        if len(seen) == 7:
            raise Stop("killed")

    with pytest.raises((Stop, TuningError)):
        _run(corpus, tmp_path, on_row=bomb)
    partial = ResultStore(tmp_path / "results.jsonl")
    assert 0 < len(partial.rows) < len(finished.rows)
    with (tmp_path / "results.jsonl").open("a") as fh:
        fh.write('{"prompt_id": "torn')  # a write cut by a kill
    resumed = _run(corpus, tmp_path)
    assert set(resumed.rows) == set(finished.rows)
    for key, row in finished.rows.items():
        assert resumed.rows[key]["bpb"] == pytest.approx(row["bpb"], rel=1e-5)


def test_other_config_in_same_folder_is_refused(corpus: Corpus, tmp_path: Path) -> None:
    cfg = EvalConfig(strategies=("nearest",), n_grid=(1,), k=4)
    _run(corpus, tmp_path, cfg)
    with pytest.raises(ConfigError, match="different run"):
        _run(corpus, tmp_path, EvalConfig(strategies=("nearest",), n_grid=(1,), k=5))
    with pytest.raises(ConfigError):
        EvalConfig(strategies=("bogus",))
    with pytest.raises(ConfigError):
        EvalConfig(n_grid=(0,))


def test_reports_and_plots(finished: ResultStore, tmp_path: Path) -> None:
    rows = list(finished.rows.values())
    paths = write_reports(rows, tmp_path, CFG.n_grid, preamble="setup line")
    table = paths["table"].read_text()
    assert "## overall (3 prompts)" in table and "## law (1 prompts)" in table
    assert "| sift |" in table and "setup line" in table and "Pearson" in table
    summary = json.loads(paths["json"].read_text())
    assert summary["groups"]["overall"]["table"]["sift"]["3"]["prompts"] == 3
    assert paths["csv"].read_text().count("\n") == len(rows) + 1
    for png in write_plots(rows, tmp_path, list(CFG.n_grid)):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A prompt with a missing row is left out of every mean, not averaged over fewer strategies.
    gone = ("law", "sift", 3)
    cut = [r for r in rows if (r["domain"], r["strategy"], r["n"]) != gone]
    table = write_reports(cut, tmp_path, CFG.n_grid)["table"].read_text()
    assert "## overall (2 prompts; 1 unfinished prompts left out)" in table


def test_correlation() -> None:
    c = correlation([1, 2, 3, 4], [2, 4, 6, 9])
    assert c["pearson"] > 0.98 and c["spearman"] == pytest.approx(1.0)
    assert (
        correlation([1, 1, 1], [1, 2, 3])["pearson"] != correlation([1, 1, 1], [1, 2, 3])["pearson"]
    )  # NaN: no spread


def test_quick_through_the_real_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qdrant_sift.client.cli import main

    out = tmp_path / "quick"
    assert main(["eval", "--quick", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    assert "## overall" in capsys.readouterr().out
    for name in ("table.md", "results.csv", "summary.json", "bpb_vs_n.png", "run.json"):
        assert (out / name).stat().st_size > 0
    corpus = Corpus.load(out / "corpus.json")
    data_docs = {c.doc_id for c in corpus.chunks}
    assert all(p.doc_id not in data_docs for p in corpus.prompts)


def test_killed_process_resumes(tmp_path: Path) -> None:
    """A real SIGKILL mid-run, then the same command finishes the remaining rows only."""
    out = tmp_path / "killed"
    entry = "from qdrant_sift.client.cli import main; raise SystemExit(main())"
    cmd = [sys.executable, "-c", entry,
           "eval", "--quick", "--out", str(out), "--no-progress", "--no-plots", "--threads", "1",
           "--n-grid", "1,2,4,8"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    before = len(ResultStore(results).rows)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = ResultStore(results).rows
    assert len(rows) == 6 * (1 + 5 * 4) > before
    lines = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
    keys = [(r["prompt_id"], r["strategy"], r["n"]) for r in lines]
    assert len(keys) - len(set(keys)) <= before  # at most the half-done strategy was redone


def test_cli_subset_of_prompts_and_strategies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qdrant_sift.client.cli import main

    out = tmp_path / "subset"

    def args(strategies: str, *extra: str) -> list[str]:
        return ["eval", "--quick", "--out", str(out), "--no-progress", "--no-plots",
                "--threads", "1", "--strategies", strategies, "--n-grid", "2",
                "--prompt-ids", "bible/0", *extra]  # fmt: skip

    assert main(args("nearest")) == 0
    rows = ResultStore(out / "results.jsonl").rows
    assert set(rows) == {("bible/0", "base", 0), ("bible/0", "nearest", 2)}
    # Adding a strategy later resumes into the same folder; changing λ does not.
    assert main(args("nearest,sift")) == 0
    assert ("bible/0", "sift", 2) in ResultStore(out / "results.jsonl").rows
    assert main(args("sift", "--lam", "0.5")) == 1
    assert "different run" in capsys.readouterr().err
