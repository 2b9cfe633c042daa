"""The evaluation harness: a real Edge store, the reranker interface, a tiny Llama, LoRA steps."""

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

import numpy as np
import pytest
import torch

from qdrant_sift.errors import ConfigError, TuningError
from qdrant_sift.eval import Arm, EvalConfig, ResultStore, paired_comparison, run_evaluation
from qdrant_sift.eval._corpus import Corpus, build_corpus, token_chunker
from qdrant_sift.eval._corpus_sources import SourceDocument
from qdrant_sift.eval._plots import write_plots
from qdrant_sift.eval._report import correlation, write_reports
from qdrant_sift.eval._setup import hashing_embedder, tiny_model
from qdrant_sift.eval._vectors import corpus_store, embed_corpus
from qdrant_sift.finetune import ModelEmbedder, TestTimeTuner, TuneConfig, bits_per_byte

torch.set_num_threads(1)

VOCAB = {
    "law": str.split("court statute section party contract clause shall hereby liable damages"),
    "code": str.split("def return self import class lambda yield None value args kwargs"),
    "sea": str.split("ship wave harbour sail anchor storm tide captain deck rope"),
}
ARMS = ("nearest", "sift", "sift:lam=1,alpha=2", "sift:lam=1", "random", "qdrant-mmr")
CFG = EvalConfig(arms=ARMS, n_grid=(1, 3), k=8)


def _doc(domain: str, i: int) -> SourceDocument:
    rng = random.Random(f"{domain}{i}")
    words = VOCAB[domain] + ["the", "a", "of", "and"]
    return SourceDocument(f"{domain}-{i}", domain, " ".join(rng.choice(words) for _ in range(60)))


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    docs = [_doc(d, i) for d in VOCAB for i in range(6)]
    _, tok = tiny_model()
    return build_corpus(docs, token_chunker(tok, 48), prompts_per_domain=1, seed=0)


def _tuner(seed: int = 0) -> TestTimeTuner:
    model, tok = tiny_model(seed)
    return TestTimeTuner(model, tok, TuneConfig(lora_rank=4, learning_rate=5e-3))


def _run(corpus: Corpus, out: Path, cfg: EvalConfig = CFG, **kw: Any) -> ResultStore:
    emb = hashing_embedder()
    store = corpus_store(corpus, embed_corpus(corpus, emb), out / "store")
    try:
        return run_evaluation(corpus.prompts, kw.pop("tuner", None) or _tuner(), store, emb, out,
                              cfg, progress=False, **kw)  # fmt: skip
    finally:
        store.close()


@pytest.fixture(scope="module")
def finished(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> ResultStore:
    return _run(corpus, tmp_path_factory.mktemp("eval"))


def test_every_row_is_there(corpus: Corpus, finished: ResultStore) -> None:
    expected = {(p.id, "base", 0) for p in corpus.prompts} | {
        (p.id, a, n) for p in corpus.prompts for a in CFG.arms for n in CFG.n_grid
    }
    assert set(finished.rows) == expected


def test_base_equals_bits_per_byte_of_the_untouched_model(
    corpus: Corpus, finished: ResultStore
) -> None:
    model, tok = tiny_model()
    for p in corpus.prompts:
        want = bits_per_byte(model, tok, p.text).bits_per_byte
        assert finished.rows[(p.id, "base", 0)]["bpb"] == pytest.approx(want, rel=1e-6)


def test_nearest_is_a_plain_store_search(corpus: Corpus, finished: ResultStore) -> None:
    emb = hashing_embedder()
    data = embed_corpus(corpus, emb)
    for p in corpus.prompts:
        q = np.asarray(emb.embed_query(p.text))
        scores = data @ (q / np.linalg.norm(q))
        top = [int(i) for i in np.argsort(-scores, kind="stable")[:3]]
        got = finished.rows[(p.id, "nearest", 3)]["picks"]
        assert [round(float(scores[i]), 5) for i in got] == [
            round(float(scores[i]), 5) for i in top
        ]


def test_sift_picks_are_the_rerankers(corpus: Corpus, finished: ResultStore) -> None:
    from qdrant_sift.reranker import select

    emb = hashing_embedder()
    data = embed_corpus(corpus, emb)
    p = corpus.prompts[0]
    q = np.asarray(emb.embed_query(p.text))
    scores = np.abs(data @ (q / np.linalg.norm(q)))
    cand = np.argsort(-scores, kind="stable")[: CFG.k]
    sel = select(q, data[cand], 3, strategy="sift", lam=1.0)
    assert finished.rows[(p.id, "sift:lam=1", 3)]["picks"] == [int(cand[i]) for i in sel.indices]


def test_checkpoints_equal_tuning_from_scratch(corpus: Corpus, finished: ResultStore) -> None:
    """The bpb at N=3, measured on the way to the largest N, is what 3 steps alone give."""
    tuner = _tuner()
    p = corpus.prompts[0]
    changed = False
    for arm in ("nearest", "sift", "random"):
        row = finished.rows[(p.id, arm, 3)]
        assert row["steps"] == 3 and len(row["picks"]) == 3
        with tuner.session():
            tuner.tune([corpus.chunks[i].text for i in row["picks"]])
            got = tuner.bits_per_byte(p.text).bits_per_byte
        assert row["bpb"] == pytest.approx(got, rel=1e-5)
        changed |= abs(row["bpb"] - row["base_bpb"]) > 1e-6
    assert changed  # the steps really moved the model


def test_adaptive_is_a_prefix_of_its_host(corpus: Corpus, finished: ResultStore) -> None:
    for p in corpus.prompts:
        for n in CFG.n_grid:
            ada = finished.rows[(p.id, "sift:lam=1,alpha=2", n)]
            host = finished.rows[(p.id, "sift:lam=1", n)]
            assert ada["steps"] <= n
            assert ada["picks"] == host["picks"][: ada["steps"]]
            if ada["steps"] == n:
                assert ada["bpb"] == pytest.approx(host["bpb"], rel=1e-6)


def test_qdrant_mmr_without_diversity_is_relevance_order(corpus: Corpus, tmp_path: Path) -> None:
    cfg = EvalConfig(arms=("nearest", "qdrant-mmr:diversity=0"), n_grid=(3,), k=8)
    rows = _run(corpus, tmp_path, cfg).rows
    for p in corpus.prompts:
        assert (
            rows[(p.id, "qdrant-mmr:diversity=0", 3)]["picks"]
            == rows[(p.id, "nearest", 3)]["picks"]
        )


def test_model_kernel_arm_uses_the_models_embedding(corpus: Corpus, tmp_path: Path) -> None:
    tuner = _tuner()
    kernel = ModelEmbedder(tuner.model, tuner.tokenizer, pooling="mean")
    cfg = EvalConfig(
        arms=("sift:lam=1,kernel=model-mean", "sift:lam=1", "nearest:kernel=model-mean"),
        n_grid=(2,),
        k=8,
    )
    with pytest.raises(ConfigError, match="kernels"):
        _run(corpus, tmp_path / "a", cfg, tuner=tuner)
    rows = _run(corpus, tmp_path / "b", cfg, tuner=tuner, kernels={"model-mean": kernel}).rows
    assert (tmp_path / "b" / "kernel-model-mean.f32").stat().st_size > 0
    assert all(r["steps"] == 2 for r in rows.values() if r["arm"] != "base")
    # The control re-ranks the recalled candidates by kernel similarity: distinct, in the K.
    for p in corpus.prompts:
        picks = rows[(p.id, "nearest:kernel=model-mean", 2)]["picks"]
        sift = rows[(p.id, "sift:lam=1,kernel=model-mean", 2)]["picks"]
        assert len(set(picks)) == 2 and picks[0] == sift[0]  # SIFT's first pick is the nearest


def test_arms_parse_and_refuse_nonsense() -> None:
    arm = Arm.parse(" sift: unique, lam=1 ,k=50,kernel=model-last")
    assert arm.name == "sift:lam=1,unique,k=50,kernel=model-last"
    assert Arm.parse(arm.name) == arm
    assert arm.select_options() == {"strategy": "sift", "lam": 1.0, "unique": True}
    assert Arm.parse("sift:lam=1,alpha=0.5").host == Arm.parse("sift:lam=1")
    for bad in ("bogus", "sift:lam=-1", "nearest:lam=1", "sift:kernel=x", "sift:foo=1",
                "mmr:diversity=2", "random:alpha=1", "", "sift:k=0",
                "random:kernel=model-mean", "nearest:unique"):  # fmt: skip
        with pytest.raises(ConfigError):
            Arm.parse(bad)
    with pytest.raises(ConfigError, match="more candidates"):
        EvalConfig(arms=("sift:k=50",), k=10)


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
    _run(corpus, tmp_path, EvalConfig(arms=("nearest",), n_grid=(1,), k=4))
    # Arms and N may grow ...
    grown = _run(corpus, tmp_path, EvalConfig(arms=("nearest", "sift:lam=2"), n_grid=(1, 2), k=4))
    assert (corpus.prompts[0].id, "sift:lam=2", 2) in grown.rows
    # ... and a later run of a subset keeps the folder's arms and N in run.json (the reports)
    _run(corpus, tmp_path, EvalConfig(arms=("random",), n_grid=(3,), k=4))
    config = json.loads((tmp_path / "run.json").read_text())["config"]
    assert config["arms"] == ["nearest", "sift:lam=2", "random"]
    assert config["n_grid"] == [1, 2, 3]
    # ... but the candidates may not change under the rows already written.
    with pytest.raises(ConfigError, match="different run"):
        _run(corpus, tmp_path, EvalConfig(arms=("nearest",), n_grid=(1,), k=5))
    with pytest.raises(ConfigError):
        EvalConfig(n_grid=(0,))


def test_paired_comparison_bootstrap() -> None:
    rows = []
    for i in range(20):
        base = 1.0 + i / 100
        rows.append({"prompt_id": str(i), "arm": "nearest", "n": 5, "bpb": base})
        rows.append({"prompt_id": str(i), "arm": "sift", "n": 5, "bpb": base * (0.97 + i / 1000)})
    c = paired_comparison(rows, "sift", "nearest", 5)
    assert c is not None and c["prompts"] == 20 and c["better"] == 20 and c["worse"] == 0
    assert c["mean_rel"] == pytest.approx(-0.03 + 0.0095, abs=1e-9)
    lo, hi = c["ci95"]
    assert lo < c["mean_rel"] < hi < 0
    assert paired_comparison(rows, "sift", "nearest", 7) is None
    # A prompt the arm has not reached yet is left out of the pairs.
    c2 = paired_comparison([*rows, {"prompt_id": "x", "arm": "nearest", "n": 5, "bpb": 9}],
                           "sift", "nearest", 5)  # fmt: skip
    assert c2 is not None and c2["prompts"] == 20


def test_reports_and_plots(finished: ResultStore, tmp_path: Path) -> None:
    rows = list(finished.rows.values())
    paths = write_reports(rows, tmp_path, CFG.n_grid, preamble="setup line")
    table = paths["table"].read_text()
    assert "## overall (3 prompts)" in table and "## law (1 prompts)" in table
    assert "| sift:lam=1 |" in table and "setup line" in table and "Pearson" in table
    summary = json.loads(paths["summary"].read_text())
    assert summary["overall"]["table"]["sift"]["3"]["prompts"] == 3
    assert summary["overall"]["vs_nearest"]["sift"]["3"]["prompts"] == 3
    assert paths["csv"].read_text().count("\n") == len(rows) + 1
    for png in write_plots(rows, tmp_path, list(CFG.n_grid)):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # An arm missing a prompt at N averages the prompts it has and says so; the complete arms
    # keep all their prompts (a partial arm does not shrink everyone's mean to its subset).
    cut = [r for r in rows if (r["domain"], r["arm"], r["n"]) != ("law", "sift", 3)]
    paths = write_reports(cut, tmp_path, CFG.n_grid)
    summary = json.loads(paths["summary"].read_text())
    assert summary["overall"]["table"]["nearest"]["3"]["prompts"] == 3
    assert not summary["overall"]["table"]["nearest"]["3"]["partial"]
    assert summary["overall"]["table"]["sift"]["3"] | {"bpb": 0} == {
        **summary["overall"]["table"]["sift"]["3"],
        "bpb": 0,
        "prompts": 2,
        "partial": True,
    }
    assert "[2 prompts]" in paths["table"].read_text()
    # A prompt that a complete arm lacks is left out of every mean at that N.
    cut2 = [r for r in rows if (r["domain"], r["n"]) != ("law", 3) or r["arm"] == "base"]
    summary = json.loads(write_reports(cut2, tmp_path, CFG.n_grid)["summary"].read_text())
    assert summary["overall"]["table"]["base"]["3"]["prompts"] == 2


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
           "--n-grid", "1,2,4,8", "--arms", "nearest;sift;random"]  # fmt: skip
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
    assert len(rows) == 6 * (1 + 3 * 4) > before
    lines = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
    keys = [(r["prompt_id"], r["arm"], r["n"]) for r in lines]
    assert len(keys) - len(set(keys)) <= before  # at most the half-done arm was redone


def test_cli_subset_of_prompts_and_arms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qdrant_sift.client.cli import main

    out = tmp_path / "subset"

    def args(arms: str, *extra: str) -> list[str]:
        return ["eval", "--quick", "--out", str(out), "--no-progress", "--no-plots",
                "--threads", "1", "--arms", arms, "--n-grid", "2",
                "--prompt-ids", "bible/0", *extra]  # fmt: skip

    assert main(args("nearest")) == 0
    rows = ResultStore(out / "results.jsonl").rows
    assert set(rows) == {("bible/0", "base", 0), ("bible/0", "nearest", 2)}
    # Adding an arm later resumes into the same folder; changing K does not.
    assert main(args("nearest;sift:lam=1")) == 0
    assert ("bible/0", "sift:lam=1", 2) in ResultStore(out / "results.jsonl").rows
    assert main(args("sift", "-k", "20")) == 1
    assert "different run" in capsys.readouterr().err


def test_remote_reranker_gives_the_same_rows(
    corpus: Corpus, finished: ResultStore, tmp_path: Path
) -> None:
    """Selection through the gRPC service (real server on loopback) changes no pick or number."""
    from qdrant_sift.reranker import RemoteReranker
    from qdrant_sift.reranker._server import serve

    cfg = EvalConfig(arms=("sift", "sift:lam=1", "random"), n_grid=(1, 3), k=8)
    with (
        serve(port=0, device="cpu", max_workers=2) as handle,
        RemoteReranker(f"grpc://127.0.0.1:{handle.port}", timeout=30) as remote,
    ):
        rows = _run(corpus, tmp_path, cfg, reranker=remote).rows
    for key, row in rows.items():
        want = finished.rows[key]
        assert row["picks"] == want["picks"]
        assert row["bpb"] == pytest.approx(want["bpb"], rel=1e-5)


def test_report_only_reads_a_run_without_a_model(
    finished: ResultStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qdrant_sift.client.cli import main

    out = finished.path.parent
    assert main(["eval", "--report-only", "--out", str(out)]) == 0
    assert "| sift:lam=1 |" in capsys.readouterr().out
    assert (out / "vs_nearest.png").exists()
    assert main(["eval", "--report-only", "--out", str(tmp_path / "none")]) == 1


def test_redundancy_plot_from_runs(finished: ResultStore, tmp_path: Path) -> None:
    from qdrant_sift.client.cli import main

    run = str(finished.path.parent)
    assert main(["eval", "--report-only", "--out", str(tmp_path), "--redundancy-runs",
                 f"0={run}", f"3={run}"]) == 0  # fmt: skip
    assert (tmp_path / "redundancy.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "redundancy.md").read_text()
    assert "r=0, N=3" in table and "r=3, N=1" in table and "| sift |" in table
    assert main(["eval", "--report-only", "--out", str(tmp_path), "--redundancy-runs", "x"]) == 1

    # A run with fewer prompts and arms: every r is compared on what all runs share.
    part = tmp_path / "part"
    part.mkdir()
    (part / "run.json").write_text((finished.path.parent / "run.json").read_text())
    lines = [json.loads(x) for x in finished.path.read_text().splitlines() if x.strip()]
    first = lines[0]["prompt_id"]
    keep = [x for x in lines if x["prompt_id"] == first and x["arm"] in ("base", "nearest", "sift")]
    (part / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in keep))
    assert main(["eval", "--report-only", "--out", str(tmp_path), "--redundancy-runs",
                 f"0={run}", f"1={part}"]) == 0  # fmt: skip
    table = (tmp_path / "redundancy.md").read_text()
    assert f"1 prompts, the same under every r: {first}." in table
    assert "| sift |" in table and "random" not in table


def test_injected_copies() -> None:
    from qdrant_sift.errors import InvalidInputError
    from qdrant_sift.eval import inject_redundancy
    from qdrant_sift.eval._corpus import CorpusChunk

    texts = [
        f"chunk {i} starts here.\nThe second line has several more words in it" for i in range(5)
    ]
    base = Corpus(chunks=[CorpusChunk(i, f"d{i}", "x", t) for i, t in enumerate(texts)], prompts=[])
    red = inject_redundancy(base, 3, seed=1)
    assert len(red.chunks) == 20 and [c.id for c in red.chunks] == list(range(20))
    exact, rewrap, edit = red.chunks[5:10], red.chunks[10:15], red.chunks[15:20]
    assert [c.text for c in exact] == texts
    for copy, text in zip(rewrap, texts, strict=True):  # same words, other whitespace
        assert copy.text != text and copy.text.split() == text.split()
    for copy, text in zip(edit, texts, strict=True):  # a few words edited
        assert copy.text != text and copy.text.split() != text.split()
        assert len(set(copy.text.split()) & set(text.split())) >= len(text.split()) - 3
    assert [c.doc_id for c in red.chunks[5:]] == [f"d{i}" for i in range(5)] * 3
    assert red.stats["redundancy"] == {"copies": 3, "added": {"exact": 5, "rewrap": 5, "edit": 5}}
    with pytest.raises(InvalidInputError, match="copies"):
        inject_redundancy(base, -1)


def test_too_small_corpus_fails_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """K beyond the data space: a ConfigError (exit 1) with no model loaded and nothing kept."""
    from qdrant_sift.client.cli import main
    from qdrant_sift.eval import _setup

    def no_model(*_: Any, **__: Any) -> Any:
        raise AssertionError("the model was loaded before the corpus was checked")

    monkeypatch.setattr(_setup, "_load_tuner", no_model)
    out = tmp_path / "small"
    args = ["eval", "--quick", "--out", str(out), "--no-progress", "--no-plots", "-k", "100000"]
    assert main(args) == 1
    assert "fewer than k" in capsys.readouterr().err
    assert not (out / "corpus.json").exists()
