"""TestTimeTuner on tiny random Llama and GPT-2: exact resets, frozen base, serialised use."""

from __future__ import annotations

import copy
import itertools
import threading
import time
from dataclasses import replace
from typing import Any

import pytest
import torch
from conftest_finetune import base_state, tiny_gpt2, tiny_llama

from qdrant_sift.errors import ConfigError, InvalidInputError, PromptTooLongError, TuningError
from qdrant_sift.finetune import StepReport, TestTimeTuner, TuneConfig

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Qdrant stores vectors; SIFT selects informative, non-redundant chunks.",
    "def add(a, b):\n    return a + b\n",
]
PROMPT = "What does SIFT select?"


def _adapter(tuner: TestTimeTuner) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in tuner.model.named_parameters() if p.requires_grad}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _base_greedy(model: Any, tokenizer: Any, prompt: str, n: int) -> str:
    """Greedy answer of an untouched copy of the model, built without the tuner."""
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        out = model.generate(
            **enc, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.fixture
def llama() -> tuple[TestTimeTuner, dict[str, torch.Tensor], Any]:
    model, tok = tiny_llama()
    pristine = copy.deepcopy(model)
    before = base_state(model)
    return TestTimeTuner(model, tok, TuneConfig(learning_rate=1e-2)), before, pristine


def test_default_targets_are_all_block_projections() -> None:
    model, tok = tiny_llama()
    tuner = TestTimeTuner(model, tok)
    assert tuner.target_modules == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    assert all("lora_" in n for n, p in tuner.model.named_parameters() if p.requires_grad)


def test_reset_restores_the_adapter_bit_for_bit(llama: Any) -> None:
    tuner, _, _ = llama
    initial = _adapter(tuner)
    report = tuner.tune(TEXTS)
    assert report.n_steps == 3
    tuned = _adapter(tuner)
    assert any(not torch.equal(tuned[n], initial[n]) for n in initial if "lora_B" in n)
    tuner.reset()
    _assert_same(_adapter(tuner), initial)
    assert all(p.grad is None for p in tuner.model.parameters())


def test_reset_survives_reallocated_parameters(llama: Any) -> None:
    tuner, _, _ = llama
    initial = _adapter(tuner)
    for p in tuner.model.parameters():
        if p.requires_grad:
            p.data = p.data.clone()  # what moving the model between devices does
    tuner.tune(TEXTS)
    tuner.reset()
    _assert_same(_adapter(tuner), initial)
    tuner.tune(TEXTS)
    tuner.reset()  # the flat buffers were rebuilt: the fast path restores exactly too
    _assert_same(_adapter(tuner), initial)


def test_base_weights_unchanged_after_success(llama: Any) -> None:
    tuner, before, _ = llama
    fingerprint = tuner.base_fingerprint()
    tuner.adapt(TEXTS, PROMPT, max_new_tokens=4)
    _assert_same(base_state(tuner.model), before)
    assert tuner.base_fingerprint() == fingerprint == tuner.initial_base_fingerprint
    assert tuner.base_unchanged()


def test_exception_mid_tune_resets_and_keeps_base(llama: Any) -> None:
    tuner, before, _ = llama
    initial = _adapter(tuner)
    seen: list[int] = []

    def boom(step: StepReport) -> None:
        seen.append(step.index)
        if step.index == 1:
            raise RuntimeError("injected failure on step 2")

    with pytest.raises(TuningError, match="step 2") as info:
        tuner.adapt(TEXTS, PROMPT, max_new_tokens=4, progress=boom)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert seen == [0, 1]
    _assert_same(_adapter(tuner), initial)
    _assert_same(base_state(tuner.model), before)
    with pytest.raises(TuningError):
        tuner.tune(TEXTS, progress=boom)  # tune alone also resets on failure
    _assert_same(_adapter(tuner), initial)


def test_failing_generation_still_resets(llama: Any) -> None:
    tuner, _, _ = llama
    initial = _adapter(tuner)
    with pytest.raises(TuningError, match="generation failed"):
        tuner.adapt(TEXTS, PROMPT, max_new_tokens=4, no_such_generation_argument=1)
    _assert_same(_adapter(tuner), initial)


def test_loss_falls_on_a_repeated_chunk() -> None:
    model, tok = tiny_llama()
    tuner = TestTimeTuner(model, tok)  # the paper's defaults: lr 5e-4, rank 64, alpha 16
    losses = tuner.tune([TEXTS[1]] * 6).losses
    assert len(losses) == 6
    assert all(b < a for a, b in itertools.pairwise(losses)), losses


def test_repeats_and_steps_per_chunk() -> None:
    model, tok = tiny_llama()
    tuner = TestTimeTuner(model, tok, TuneConfig(steps_per_chunk=2))
    report = tuner.tune([TEXTS[0], TEXTS[1], TEXTS[0]])
    assert [s.text_index for s in report.steps] == [0, 0, 1, 1, 2, 2]
    assert [s.index for s in report.steps] == list(range(6))
    first = len(TEXTS[0].encode()) + 1  # byte tokens plus the prefix token
    assert report.steps[0].tokens == report.steps[4].tokens == first
    assert report.tokens == sum(s.tokens for s in report.steps)
    assert all(s.forward_seconds + s.backward_seconds <= s.seconds for s in report.steps)


def test_no_texts_answers_like_the_base_model(llama: Any) -> None:
    tuner, _, pristine = llama
    expected = _base_greedy(pristine, tuner.tokenizer, PROMPT, 12)
    outcome = tuner.adapt([], PROMPT, max_new_tokens=12)
    assert outcome.report.n_steps == 0
    assert outcome.text == expected
    tuned = tuner.adapt(TEXTS * 2, PROMPT, max_new_tokens=12)
    assert tuned.report.n_steps == 6
    # After tune + reset the adapter is back at B = 0: the base model's answer again.
    assert tuner.generate(PROMPT, max_new_tokens=12) == expected


def test_truncates_chunks_to_max_length() -> None:
    model, tok = tiny_llama(max_positions=64)
    tuner = TestTimeTuner(model, tok, TuneConfig(max_length=16))
    report = tuner.tune(["x" * 100, "abcd"])
    assert [s.tokens for s in report.steps] == [16, 5]
    model, tok = tiny_llama(max_positions=32)
    capped = TestTimeTuner(model, tok, TuneConfig(max_length=1000))
    assert capped.max_length == 32
    assert capped.tune(["y" * 100]).steps[0].tokens == 32


def test_gpt2_works_and_resets() -> None:
    model, tok = tiny_gpt2()
    before = base_state(model)
    tuner = TestTimeTuner(model, tok, TuneConfig(lora_rank=8))
    assert tuner.target_modules == ["c_attn", "c_fc", "c_proj"]
    initial = _adapter(tuner)
    outcome = tuner.adapt(TEXTS, PROMPT, max_new_tokens=5)  # no chat template: plain prompt
    assert outcome.report.n_steps == 3
    assert isinstance(outcome.text, str)
    _assert_same(_adapter(tuner), initial)
    _assert_same(base_state(tuner.model), before)


def test_full_finetune_restores_every_weight() -> None:
    model, tok = tiny_llama()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tuner = TestTimeTuner(model, tok, TuneConfig(full_finetune=True))
    assert tuner.config.learning_rate == 5e-5
    tuner.tune(TEXTS)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert not tuner.base_unchanged()
    tuner.reset()
    _assert_same({n: p.detach() for n, p in model.named_parameters()}, before)
    assert tuner.base_unchanged()


def test_concurrent_callers_never_interleave(llama: Any) -> None:
    tuner, _, _ = llama
    events: list[tuple[str, int]] = []

    def work(tag: str) -> None:
        def record(step: StepReport) -> None:
            events.append((tag, step.index))
            time.sleep(0.02)  # give the other thread every chance to cut in

        tuner.adapt(TEXTS, PROMPT, max_new_tokens=2, progress=record)
        events.append((tag, -1))  # after generation and reset

    threads = [threading.Thread(target=work, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(events) == 8
    first = events[0][0]
    second = "b" if first == "a" else "a"
    expected = [(tag, i) for tag in (first, second) for i in (0, 1, 2, -1)]
    assert events == expected


def test_session_holds_the_tuned_adapter_until_exit(llama: Any) -> None:
    tuner, _, _ = llama
    base = tuner.bits_per_byte(TEXTS[1])
    with tuner.session():
        tuner.tune([TEXTS[1]] * 3)
        tuned = tuner.bits_per_byte(TEXTS[1])
    assert tuned.bits_per_byte < base.bits_per_byte
    assert tuner.bits_per_byte(TEXTS[1]) == base


def test_prompt_too_long_is_rejected_before_tuning() -> None:
    model, tok = tiny_llama(max_positions=64)
    tuner = TestTimeTuner(model, tok)
    steps: list[StepReport] = []
    with pytest.raises(PromptTooLongError):
        tuner.adapt(TEXTS, "z" * 80, max_new_tokens=4, progress=steps.append)
    assert steps == []
    assert tuner.check_prompt("hi", max_new_tokens=4) > 0
    with pytest.raises(PromptTooLongError):
        tuner.check_prompt("hi", max_new_tokens=64)
    assert tuner.context_length == 64


@pytest.mark.parametrize("texts", ["a plain string", ["ok", ""], ["ok", 3]])
def test_bad_texts_raise_input_errors(llama: Any, texts: Any) -> None:
    tuner, _, _ = llama
    with pytest.raises(InvalidInputError):
        tuner.adapt(texts, PROMPT)


def test_adapter_init_is_seeded_and_leaves_global_rng_alone() -> None:
    first, second = tiny_llama(), tiny_llama()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = TestTimeTuner(*first, TuneConfig(seed=7))
    assert torch.equal(torch.rand(3), expected)
    b = TestTimeTuner(*second, TuneConfig(seed=7))
    _assert_same(_adapter(a), _adapter(b))


def test_config_swap_keeps_per_prompt_fields_and_refuses_adapter_shape(llama: Any) -> None:
    """Rank, targets and the other build-time fields cannot change silently after the build."""
    tuner = llama[0]
    tuner.config = replace(tuner.config, learning_rate=1e-4, max_length=32, steps_per_chunk=2)
    assert tuner.config.learning_rate == 1e-4 and tuner.config.steps_per_chunk == 2
    for change in (
        {"lora_rank": 8},
        {"target_modules": ("q_proj",)},
        {"lora_alpha": 8.0},
        {"full_finetune": True},
    ):
        with pytest.raises(ConfigError, match=next(iter(change))):
            tuner.config = replace(tuner.config, **change)
    assert tuner.config.lora_rank == TuneConfig().lora_rank
    with pytest.raises(InvalidInputError):
        tuner.config = "fast"


def test_test_time_tuner_is_a_tuner(llama: Any) -> None:
    """SiftClient types its tuner as the Tuner protocol and accepts any implementation."""
    from qdrant_sift.finetune import Tuner

    assert isinstance(llama[0], Tuner)
    assert not isinstance("HuggingFaceTB/SmolLM2-135M-Instruct", Tuner)
