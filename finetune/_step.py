"""One test-time training step: the optimizer and a timed forward, backward and update.

Kept apart from :mod:`._tuner` (the adapter's life cycle: build, tune in order, reset, answer) so
that what a single step costs, and how it is timed, is read in one place.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from qdrant_sift.errors import TuningError

from ._config import StepReport, TuneConfig

__all__ = ["adam_optimizer", "train_step"]


def adam_optimizer(params: list[torch.nn.Parameter], cfg: TuneConfig) -> torch.optim.Optimizer:
    """Adam, fused into one kernel where torch supports it (hundreds of small LoRA tensors:
    the per-tensor loop costs 3-70x more on a busy CPU); same update rule otherwise."""
    kwargs: dict[str, Any] = {
        "lr": cfg.learning_rate,
        "betas": cfg.adam_betas,
        "eps": cfg.adam_eps,
        "weight_decay": cfg.weight_decay,
    }
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, **kwargs)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    ids: torch.Tensor,
    index: int,
    text_index: int,
    device: torch.device,
) -> StepReport:
    """One step of next-token loss on ``ids`` (1, T); each phase is timed, CUDA synchronised on
    ``device`` (the trainable weights') so the times are the work's, not the launches'."""
    t0 = time.perf_counter()
    logits = model(input_ids=ids, use_cache=False).logits[0, :-1]
    loss = torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:])
    _sync(device)
    t1 = time.perf_counter()
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TuningError(f"loss is {value} at step {index}; lower the learning rate")
    loss.backward()
    _sync(device)
    t2 = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _sync(device)
    t3 = time.perf_counter()
    return StepReport(
        index=index,
        text_index=text_index,
        loss=value,
        tokens=int(ids.shape[1]),
        seconds=t3 - t0,
        forward_seconds=t1 - t0,
        backward_seconds=t2 - t1,
        optimizer_seconds=t3 - t2,
    )
