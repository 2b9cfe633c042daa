"""Where the time of one test-time fine-tuning step goes, and how fast the adapter resets.

For each chunk length: a warm-up step, then ``--steps`` steps of ``TestTimeTuner.tune`` split into
forward, backward, optimizer and everything else (tokenising, optimizer set-up, bookkeeping:
``tune``'s wall time minus the three phases), alternating with a bare forward/backward/Adam step
on the same model and input (the baseline, same run, same load). Then ``reset()`` timings.
Prints markdown tables.

    .venv/bin/python bench/bench_tune.py --quick            # SmolLM2, 256 and 1024 tokens
    .venv/bin/python bench/bench_tune.py --device cuda      # on a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from qdrant_sift.finetune import TestTimeTuner, TuneConfig, load_model, prefix_token_id

__all__ = ["main"]


def _corpus() -> str:
    """Real text: Python standard library sources (several thousand tokens)."""
    import argparse as a
    import dataclasses as d
    import inspect as i

    return "\n".join(inspect.getsource(m) for m in (i, a, d))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _bare_step(tuner: TestTimeTuner, text: str) -> float:
    """Seconds of one bare forward/backward/Adam step on the same adapter and tokens."""
    # the tuner's input: the prefix token, then the text's tokens, cut to its window
    tokens = tuner.tokenizer(text, add_special_tokens=False)["input_ids"]
    row = [prefix_token_id(tuner.tokenizer), *tokens][: tuner.max_length]
    ids = torch.tensor([row], dtype=torch.long, device=tuner.device)
    params = [p for p in tuner.model.parameters() if p.requires_grad]
    cfg = tuner.config
    settings: dict[str, Any] = {"lr": cfg.learning_rate, "betas": cfg.adam_betas}
    settings.update(eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    try:  # the tuner's Adam: fused where torch supports it, so only the bookkeeping differs
        opt = torch.optim.Adam(params, fused=True, **settings)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.Adam(params, **settings)

    def step() -> None:
        loss = tuner.model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    seconds = _timed(step, tuner.device)
    tuner.reset()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="HF id or path (default: offline SmolLM2)")
    parser.add_argument("--lengths", type=int, nargs="*", default=[256, 1024])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 steps per length")
    parser.add_argument("--resets", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--rank", type=int, default=64)
    args = parser.parse_args(argv)
    steps = 3 if args.quick else args.steps
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model, tokenizer = load_model(args.model, device=args.device)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tuner = TestTimeTuner(model, tokenizer, TuneConfig(lora_rank=args.rank))
    init_s = time.perf_counter() - t0
    device = tuner.device
    n_adapter = sum(p.numel() for p in model.parameters() if p.requires_grad)
    text = _corpus()
    print(
        f"model {args.model or 'SmolLM2-135M-Instruct'} on {device}, {args.threads} threads, "
        f"LoRA rank {args.rank} ({n_adapter / 1e6:.1f}M adapter params); "
        f"load {load_s:.2f} s, tuner init {init_s:.2f} s\n"
    )
    print(
        "| tokens | steps | step s | forward s | backward s | optimizer s | else s | else % "
        "| bare loop s | step / bare | peak RSS MiB | peak GPU MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for length in args.lengths:
        tuner.config = dataclasses.replace(tuner.config, max_length=length)
        # A chunk a bit longer than the window (truncated by the tuner), as a store would hold.
        chunk = text[: 8 * length]
        tuner.tune([chunk])  # warm-up
        tuner.reset()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # Tuner and bare steps alternate, so both see the same load on a shared machine; each
        # tune() call is one prompt (fresh optimizer, tokenising, report) of one step.
        reports, bare = [], []
        for i in range(steps):
            reports.append(tuner.tune([chunk[i:]]))  # distinct chunks: no reused tokenisation
            tuner.reset()
            bare.append(_bare_step(tuner, chunk[i:]))
        gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
        all_steps = [r.steps[0] for r in reports]
        n = len(all_steps)
        fwd = sum(s.forward_seconds for s in all_steps) / n
        bwd = sum(s.backward_seconds for s in all_steps) / n
        opt = sum(s.optimizer_seconds for s in all_steps) / n
        step = sum(r.seconds for r in reports) / n
        other = step - fwd - bwd - opt
        bare_s = sum(bare) / n
        report = reports[0]
        print(
            f"| {report.steps[0].tokens} | {n} | {step:.3f} | {fwd:.3f} | {bwd:.3f} | {opt:.3f} "
            f"| {other:.4f} | {100 * other / step:.2f}% | {bare_s:.3f} | {step / bare_s:.3f} "
            f"| {_peak_rss_mib():.0f} | {gpu:.0f} |"
        )

    tuner.config = dataclasses.replace(tuner.config, max_length=64)
    resets, reset_cpu = [], []
    for _ in range(args.resets):
        tuner.tune([text[:1024]])
        cpu0 = time.process_time()
        resets.append(_timed(tuner.reset, device) * 1000)
        reset_cpu.append((time.process_time() - cpu0) * 1000)
    t0 = time.perf_counter()
    unchanged = tuner.base_unchanged()
    fp_s = time.perf_counter() - t0
    print(
        "\n| reset ms (median) | reset ms (min) | reset ms (max) | reset CPU ms (median) "
        "| target | base fingerprint check s | base ok |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|")
    print(
        f"| {statistics.median(resets):.2f} | {min(resets):.2f} | {max(resets):.2f} "
        f"| {statistics.median(reset_cpu):.2f} | ≤ 50 | {fp_s:.2f} | {unchanged} |"
    )
    load = os.getloadavg()[0]
    print(f"\nload average at the end: {load:.1f} (1 min) on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
