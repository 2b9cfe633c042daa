"""TuneConfig: the paper's defaults and a typed error for every bad value."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from qdrant_sift.errors import ConfigError
from qdrant_sift.finetune import TuneConfig


def test_defaults_follow_the_paper() -> None:
    cfg = TuneConfig()
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.bias) == (64, 16, 0.0, "none")
    assert cfg.learning_rate == 5e-4
    assert cfg.adam_eps == 1e-8
    assert cfg.weight_decay == 0.0
    assert cfg.steps_per_chunk == 1
    assert cfg.max_length is None
    assert cfg.target_modules is None
    assert not cfg.full_finetune


def test_learning_rate_depends_on_the_mode_unless_given() -> None:
    assert TuneConfig(full_finetune=True).learning_rate == 5e-5
    assert TuneConfig(full_finetune=True, learning_rate=1e-3).learning_rate == 1e-3


def test_normalises_sequences_and_dtypes() -> None:
    cfg = TuneConfig(target_modules=["q_proj", "v_proj"], adam_betas=[0.8, 0.9], dtype="bf16")
    assert cfg.target_modules == ("q_proj", "v_proj")
    assert cfg.adam_betas == (0.8, 0.9)
    assert cfg.dtype is torch.bfloat16


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lora_rank": 0},
        {"lora_rank": 2.5},
        {"lora_rank": True},
        {"lora_alpha": 0},
        {"lora_alpha": float("nan")},
        {"lora_dropout": 1.0},
        {"lora_dropout": -0.1},
        {"bias": "some"},
        {"target_modules": []},
        {"target_modules": "q_proj"},
        {"target_modules": ["q_proj", ""]},
        {"learning_rate": 0},
        {"learning_rate": float("inf")},
        {"adam_eps": 0},
        {"adam_betas": (0.9,)},
        {"adam_betas": (0.9, 1.0)},
        {"weight_decay": -1},
        {"steps_per_chunk": 0},
        {"max_length": 1},
        {"full_finetune": "yes"},
        {"seed": -1},
        {"device": "no-such-device"},
        {"dtype": "int8"},
        {"dtype": torch.int64},
    ],
)
def test_bad_values_raise_config_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        TuneConfig(**kwargs)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        TuneConfig(lora_rank=-3)
