"""Bits per byte as lm-evaluation-harness computes it, checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from conftest_finetune import tiny_llama

from qdrant_sift.errors import InvalidInputError
from qdrant_sift.finetune import bits_per_byte, rolling_windows


def test_windows_match_lm_eval_gold() -> None:
    # The expected windows of lm-eval's own unit test (max_seq_len=10, context_len=1, 34 tokens).
    gold = [
        ([-100, 0, 1, 2, 3, 4, 5, 6, 7, 8], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        ([9, 10, 11, 12, 13, 14, 15, 16, 17, 18], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]),
        ([19, 20, 21, 22, 23, 24, 25, 26, 27, 28], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29]),
        ([23, 24, 25, 26, 27, 28, 29, 30, 31, 32], [30, 31, 32, 33]),
    ]
    assert list(rolling_windows(list(range(34)), -100, 10)) == gold


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 9, 13])
def test_windows_score_every_token_once(n: int) -> None:
    tokens = list(range(100, 100 + n))
    windows = list(rolling_windows(tokens, -1, 4))
    assert [t for _, targets in windows for t in targets] == tokens
    for inputs, targets in windows:
        assert len(inputs) <= 4
        # The last len(targets) inputs are the tokens right before each target.
        full = [-1, *tokens]
        for pos, target in zip(inputs[-len(targets) :], targets, strict=True):
            assert full[full.index(target) - 1] == pos
    assert list(rolling_windows([], 0, 4)) == []


def _nll(model: torch.nn.Module, context: list[int], target: int) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context])).logits[0, -1]
    return -float(torch.log_softmax(logits.float(), -1)[target])


def test_one_window_equals_per_token_hand_computation() -> None:
    model, tok = tiny_llama()
    text = "Hello, wörld!"  # ö is two UTF-8 bytes: the byte tokenizer gives 14 tokens
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode()) == 14
    # Each token scored from BOS plus everything before it, one forward per token.
    expected = sum(_nll(model, [tok.bos_token_id, *ids[:i]], ids[i]) for i in range(len(ids)))
    result = bits_per_byte(model, tok, text)
    assert result.n_tokens == 14 and result.n_bytes == 14
    assert result.nll_nats == pytest.approx(expected, rel=1e-5)
    assert result.bits_per_byte == pytest.approx(expected / 14 / math.log(2), rel=1e-5)


def test_several_windows_equal_hand_layout() -> None:
    model, tok = tiny_llama()
    text = "abcdefghij"  # 10 byte tokens t0..t9, windows of 4
    t = tok(text, add_special_tokens=False)["input_ids"]
    bos = tok.bos_token_id
    # Window 1 predicts t0..t3 from [bos, t0, t1, t2];
    # window 2 predicts t4..t7 from [t3, t4, t5, t6];
    # window 3 (short) predicts t8, t9 with a full window of context [t5, t6, t7, t8].
    layout = [([bos, *t[:3]], t[0:4]), (t[3:7], t[4:8]), (t[5:9], t[8:10])]
    expected = 0.0
    for inputs, targets in layout:
        for k, target in enumerate(targets):
            position = len(inputs) - len(targets) + k
            expected += _nll(model, inputs[: position + 1], target)
    result = bits_per_byte(model, tok, text, max_length=4)
    assert result.nll_nats == pytest.approx(expected, rel=1e-5)
    whole = bits_per_byte(model, tok, text)  # one window: more context, a different number
    assert whole.nll_nats != pytest.approx(expected, rel=1e-6)


def test_rejects_empty_text_and_bad_window() -> None:
    model, tok = tiny_llama()
    with pytest.raises(InvalidInputError):
        bits_per_byte(model, tok, "")
    with pytest.raises(InvalidInputError):
        bits_per_byte(model, tok, "abc", max_length=0)
