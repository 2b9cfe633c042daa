"""Settings of test-time fine-tuning (defaults follow the SIFT paper) and the records it returns."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from qdrant_sift.errors import ConfigError

__all__ = [
    "BUILD_FIELDS",
    "FULL_LEARNING_RATE",
    "LORA_LEARNING_RATE",
    "AdaptOutcome",
    "StepReport",
    "TuneConfig",
    "TuneReport",
    "build_fields_changed",
    "resolve_dtype",
]

#: The paper's learning rates: Adam at 5e-4 for LoRA (rank 64, alpha 16), 5e-5 for all weights.
LORA_LEARNING_RATE = 5e-4
FULL_LEARNING_RATE = 5e-5

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """Turn ``"bfloat16"``/``torch.bfloat16``/``None`` into a floating torch dtype (or None)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating point type, got {dtype}")
        return dtype
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key in _DTYPES:
            return _DTYPES[key]
    raise ConfigError(f"unknown dtype {dtype!r}; use one of float32, float16, bfloat16")


@dataclass(frozen=True)
class TuneConfig:
    """How one prompt's adapter is trained.

    One Adam step per selected chunk (``steps_per_chunk`` per occurrence, in selection order),
    a fresh optimizer per prompt, the adapter reset afterwards.

    ``target_modules=None`` picks every linear projection of the transformer blocks, i.e. all
    ``nn.Linear`` / GPT-2 ``Conv1D`` modules except the output embedding (``lm_head``): for
    Llama-style models ``q_proj k_proj v_proj o_proj gate_proj up_proj down_proj``, for GPT-2
    ``c_attn c_proj c_fc``. ``learning_rate=None`` means the paper's rate for the mode:
    5e-4 for LoRA, 5e-5 with ``full_finetune=True`` (resolved at construction).
    ``max_length=None`` truncates chunks to the model's context window.
    ``device``/``dtype`` are applied to the model when the tuner is built (``None``: leave it).
    """

    lora_rank: int = 64
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    bias: str = "none"
    target_modules: tuple[str, ...] | None = None
    learning_rate: float | None = None
    adam_eps: float = 1e-8
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    steps_per_chunk: int = 1
    max_length: int | None = None
    full_finetune: bool = False
    seed: int = 0
    device: str | None = None
    dtype: Any = field(default=None)

    def __post_init__(self) -> None:
        def _int(name: str, value: Any, low: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")

        def _real(value: Any) -> bool:
            return (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
            )

        _int("lora_rank", self.lora_rank, 1)
        _int("steps_per_chunk", self.steps_per_chunk, 1)
        _int("seed", self.seed, 0)
        if not _real(self.lora_alpha) or self.lora_alpha <= 0:
            raise ConfigError(f"lora_alpha must be > 0, got {self.lora_alpha!r}")
        if not _real(self.lora_dropout) or not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.bias not in ("none", "all", "lora_only"):
            raise ConfigError(f"bias must be 'none', 'all' or 'lora_only', got {self.bias!r}")
        if self.target_modules is not None:
            mods = self.target_modules
            if isinstance(mods, str) or not isinstance(mods, Sequence) or not mods:
                raise ConfigError("target_modules must be None or a non-empty list of names")
            if not all(isinstance(m, str) and m for m in mods):
                raise ConfigError(f"target_modules must hold module names, got {mods!r}")
            object.__setattr__(self, "target_modules", tuple(mods))
        lr = self.learning_rate
        if lr is None:
            lr = FULL_LEARNING_RATE if self.full_finetune else LORA_LEARNING_RATE
            object.__setattr__(self, "learning_rate", lr)
        if not _real(lr) or lr <= 0:
            raise ConfigError(f"learning_rate must be a finite number > 0, got {lr!r}")
        if not _real(self.adam_eps) or self.adam_eps <= 0:
            raise ConfigError(f"adam_eps must be > 0, got {self.adam_eps!r}")
        betas = tuple(self.adam_betas)
        if len(betas) != 2 or not all(_real(b) and 0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")
        object.__setattr__(self, "adam_betas", (float(betas[0]), float(betas[1])))
        if not _real(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.max_length is not None:
            _int("max_length", self.max_length, 2)
        if not isinstance(self.full_finetune, bool):
            raise ConfigError(f"full_finetune must be a bool, got {self.full_finetune!r}")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as exc:
                raise ConfigError(f"invalid device {self.device!r}: {exc}") from exc
        object.__setattr__(self, "dtype", resolve_dtype(self.dtype))


#: TuneConfig fields applied when the tuner is built (the adapter's shape, the mode, placement);
#: a tuner refuses a new config that changes one.
BUILD_FIELDS: tuple[str, ...] = (
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "bias",
    "target_modules",
    "full_finetune",
    "device",
    "dtype",
)


def build_fields_changed(built: TuneConfig, new: TuneConfig) -> list[str]:
    """The :data:`BUILD_FIELDS` on which ``new`` differs from the config a tuner was built with."""
    return [name for name in BUILD_FIELDS if getattr(new, name) != getattr(built, name)]


@dataclass(frozen=True)
class StepReport:
    """One gradient step: which chunk, its loss before the update, and where the time went."""

    index: int
    text_index: int
    loss: float
    tokens: int
    seconds: float
    forward_seconds: float
    backward_seconds: float
    optimizer_seconds: float


@dataclass(frozen=True)
class TuneReport:
    """All steps of one prompt, in order, and the wall time of the whole ``tune`` call."""

    steps: tuple[StepReport, ...]
    seconds: float

    @property
    def losses(self) -> list[float]:
        return [s.loss for s in self.steps]

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.steps)


@dataclass(frozen=True)
class AdaptOutcome:
    """The adapted model's answer and the tuning that produced it."""

    text: str
    report: TuneReport
    generate_seconds: float
