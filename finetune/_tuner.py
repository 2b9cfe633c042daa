"""Test-time fine-tuning: one Adam step per selected chunk, answer, reset.

The LoRA adapter is created once per model and its initial tensors are kept; resetting copies them
back (exact, a few milliseconds), so every prompt starts from the same adapter and no prompt leaks
into the next. The base weights are frozen and never written (``base_fingerprint`` proves it);
with ``full_finetune=True`` all weights train and are restored from a saved copy instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from qdrant_sift.errors import (
    ConfigError,
    InvalidInputError,
    PromptTooLongError,
    QdrantSiftError,
    TuningError,
)

from ._bpb import BpbResult, bits_per_byte, prefix_token_id
from ._config import AdaptOutcome, StepReport, TuneConfig, TuneReport, build_fields_changed
from ._models import attach_lora, context_length_of, load_model
from ._snapshot import WeightSnapshot
from ._step import adam_optimizer, train_step

__all__ = ["TestTimeTuner"]


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InvalidInputError("texts must be a sequence of strings (a list), not a single str")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InvalidInputError(f"texts[{i}] must be a str, got {type(text).__name__}")
        if not text:
            raise InvalidInputError(f"texts[{i}] is empty; there is nothing to learn from it")
    return out


class TestTimeTuner:
    """Test-time fine-tuning of one causal LM; one prompt at a time (a lock serialises callers).

    ``TestTimeTuner(model, tokenizer)`` wraps ``model`` in a LoRA adapter in place (peft); keep
    using ``tuner.model`` afterwards. Bits per byte after tuning: ``with tuner.session(): ...``.
    ``tuner.config`` may be swapped between prompts (``dataclasses.replace``) for the per-prompt
    fields (learning rate, Adam settings, ``max_length``, ``steps_per_chunk``, ``seed``); the
    fields that shape the adapter (:data:`~qdrant_sift.finetune.BUILD_FIELDS`: rank, alpha,
    dropout, bias, targets, mode, device, dtype) are fixed when the tuner is built, and a config
    that changes one is refused with :class:`~qdrant_sift.errors.ConfigError` (build a new tuner
    instead).
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, model: Any, tokenizer: Any, config: TuneConfig | None = None) -> None:
        if config is None:
            config = TuneConfig()
        self.config = config
        self.tokenizer = tokenizer
        self._lock = threading.RLock()
        if config.device is not None or config.dtype is not None:
            model.to(device=config.device, dtype=config.dtype)
        model.eval()
        self._context_length = context_length_of(model, tokenizer)
        self._prefix = prefix_token_id(tokenizer)
        if config.full_finetune:
            for p in model.parameters():
                p.requires_grad_(True)
            self.model = model
            self.target_modules: list[str] = []
        else:
            self.model, self.target_modules = attach_lora(model, config)
        self._trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not self._trainable:
            raise InvalidInputError("the adapter has no trainable parameters")
        # The exact starting point that reset() restores.
        self._snapshot = WeightSnapshot([p for _, p in self._trainable])
        trainable_ids = {id(p) for _, p in self._trainable}
        self._base = [
            (n, p) for n, p in self.model.named_parameters() if id(p) not in trainable_ids
        ]
        self._initial_fingerprint = self.base_fingerprint() if not config.full_finetune else ""
        self._dropouts = [m for n, m in self.model.named_modules() if n.endswith("lora_dropout")]

    @property
    def config(self) -> TuneConfig:
        """The tuning settings; swap per-prompt fields with ``dataclasses.replace``."""
        return self._config

    @config.setter
    def config(self, config: TuneConfig) -> None:
        if not isinstance(config, TuneConfig):
            raise InvalidInputError(f"config must be a TuneConfig, got {type(config).__name__}")
        built: TuneConfig | None = getattr(self, "_config", None)
        if built is not None:
            changed = build_fields_changed(built, config)
            if changed:
                raise ConfigError(
                    f"{', '.join(changed)} shape the adapter and are fixed once the tuner is "
                    "built; build a new TestTimeTuner for them (only per-prompt fields such as "
                    "learning_rate, adam_*, max_length, steps_per_chunk may change)"
                )
        self._config = config

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | None = None,
        config: TuneConfig | None = None,
        *,
        cache_dir: str | None = None,
        trust_remote_code: bool = False,
    ) -> TestTimeTuner:
        """Load a model (None: offline SmolLM2) with ``config.device``/``dtype`` and wrap it."""
        config = config or TuneConfig()
        model, tokenizer = load_model(
            name_or_path,
            device=config.device,
            dtype=config.dtype or torch.float32,
            cache_dir=cache_dir,
            trust_remote_code=trust_remote_code,
        )
        return cls(model, tokenizer, config)

    # --- properties -----------------------------------------------------------------------

    @property
    def context_length(self) -> int:
        """The model's maximum number of positions."""
        return self._context_length

    @property
    def max_length(self) -> int:
        """Tokens per training chunk (the prefix token included); longer chunks are truncated."""
        return min(self.config.max_length or self._context_length, self._context_length)

    @property
    def device(self) -> torch.device:
        device: torch.device = self._trainable[0][1].device
        return device

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    # --- the base weights -----------------------------------------------------------------

    def base_fingerprint(self) -> str:
        """BLAKE2b digest over every frozen base parameter's bytes (cost: one pass over them)."""
        h = hashlib.blake2b(digest_size=20)
        for name, p in self._base:
            t = p.detach().to("cpu").contiguous()
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            if t.numel():
                h.update(t.view(torch.uint8).numpy())  # a view: hashed without a copy
        return h.hexdigest()

    @property
    def initial_base_fingerprint(self) -> str:
        return self._initial_fingerprint

    def base_unchanged(self) -> bool:
        """True when the base weights are bit-for-bit what they were when the tuner was built."""
        if self.config.full_finetune:
            return self._snapshot.matches()
        return self.base_fingerprint() == self._initial_fingerprint

    # --- tuning ---------------------------------------------------------------------------

    def _encode(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        # The prefix token lets the first token be predicted too (as in the bits-per-byte eval).
        ids = [self._prefix, *ids][: self.max_length]
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def tune(
        self,
        texts: Sequence[str],
        *,
        progress: Callable[[StepReport], None] | None = None,
    ) -> TuneReport:
        """Take ``steps_per_chunk`` Adam steps on each text, in order, from a fresh optimizer.

        The adapter stays tuned afterwards (call ``reset`` or use ``adapt``/``session``). If a
        step or ``progress`` raises, the adapter is reset and ``TuningError`` is raised.
        """
        texts = _check_texts(texts)
        with self._lock:
            start = time.perf_counter()
            if not texts:
                return TuneReport(steps=(), seconds=0.0)
            cfg = self.config
            params = [p for _, p in self._trainable]
            optimizer = adam_optimizer(params, cfg)
            encoded: dict[str, torch.Tensor] = {}  # a repeated chunk is tokenised once
            for i, text in enumerate(texts):
                if text not in encoded:
                    encoded[text] = self._encode(text)
                    if encoded[text].shape[1] < 2:
                        raise InvalidInputError(f"texts[{i}] has no tokens to learn from")
            steps: list[StepReport] = []
            for m in self._dropouts:
                m.train()
            try:
                for text_index, text in enumerate(texts):
                    ids = encoded[text]
                    for _ in range(cfg.steps_per_chunk):
                        step = train_step(
                            self.model, optimizer, ids, len(steps), text_index, self.device
                        )
                        steps.append(step)
                        if progress is not None:
                            progress(step)
            except BaseException as exc:
                self.reset()
                if isinstance(exc, (TuningError, KeyboardInterrupt, SystemExit)):
                    raise
                raise TuningError(
                    f"fine-tuning failed at step {len(steps)}: {exc}; the adapter was reset"
                ) from exc
            finally:
                for m in self._dropouts:
                    m.eval()
                optimizer.state.clear()
                self.model.zero_grad(set_to_none=True)
            return TuneReport(steps=tuple(steps), seconds=time.perf_counter() - start)

    def reset(self) -> None:
        """Put the adapter (or, for full fine-tuning, all weights) back exactly as built."""
        with self._lock, torch.no_grad():
            self._snapshot.restore()

    # --- generation -----------------------------------------------------------------------

    def _prompt_ids(self, prompt: str, chat_template: bool) -> dict[str, torch.Tensor]:
        if not isinstance(prompt, str) or not prompt:
            raise InvalidInputError("prompt must be a non-empty str")
        tok = self.tokenizer
        if chat_template and getattr(tok, "chat_template", None):
            enc = tok.apply_chat_template(
                [{"role": "user", "content": prompt}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
            )
        else:
            enc = tok(prompt, return_tensors="pt")
        return {
            "input_ids": enc["input_ids"].to(self.device),
            "attention_mask": enc["attention_mask"].to(self.device),
        }

    def check_prompt(
        self, prompt: str, *, max_new_tokens: int = 64, chat_template: bool = True
    ) -> int:
        """Return the prompt's token count; raise PromptTooLongError if the answer cannot fit."""
        n = int(self._prompt_ids(prompt, chat_template)["input_ids"].shape[1])
        self._check_fits(n, max_new_tokens)
        return n

    def _check_fits(self, n: int, max_new_tokens: int) -> None:
        if n + max_new_tokens > self._context_length:
            raise PromptTooLongError(
                f"the prompt has {n} tokens and {max_new_tokens} new tokens were asked for, but "
                f"the model's context holds {self._context_length}; shorten the prompt or lower "
                "max_new_tokens"
            )

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 64,
        chat_template: bool = True,
        **generation_kwargs: Any,
    ) -> str:
        """Answer ``prompt`` with the model as it is now (greedy unless told otherwise)."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise InvalidInputError(f"max_new_tokens must be an int, got {max_new_tokens!r}")
        if max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        with self._lock:
            enc = self._prompt_ids(prompt, chat_template)
            self._check_fits(int(enc["input_ids"].shape[1]), max_new_tokens)
            kwargs: dict[str, Any] = {"do_sample": False, "max_new_tokens": max_new_tokens}
            if not generation_kwargs.get("do_sample"):
                # Silence sampling settings from the model's generation_config under greedy.
                kwargs.update(temperature=None, top_p=None, top_k=None)
            pad = self.tokenizer.pad_token_id
            kwargs["pad_token_id"] = pad if pad is not None else self.tokenizer.eos_token_id
            kwargs.update(generation_kwargs)
            self.model.eval()
            with torch.inference_mode():
                out = self.model.generate(**enc, **kwargs)
            new = out[0, enc["input_ids"].shape[1] :]
            return str(self.tokenizer.decode(new, skip_special_tokens=True))

    # --- one prompt, all of it ------------------------------------------------------------

    @contextlib.contextmanager
    def session(self) -> Iterator[TestTimeTuner]:
        """Hold the model for several calls (tune, generate, bits_per_byte); reset on exit."""
        with self._lock:
            try:
                yield self
            finally:
                self.reset()

    def adapt(
        self,
        texts: Sequence[str],
        prompt: str,
        *,
        max_new_tokens: int = 64,
        chat_template: bool = True,
        progress: Callable[[StepReport], None] | None = None,
        **generation_kwargs: Any,
    ) -> AdaptOutcome:
        """Tune on ``texts``, answer ``prompt``, and always reset afterwards.

        No texts: the base model answers (the adapter is switched off). Bad input raises before
        any step; a failing step or generation raises ``TuningError`` after the reset.
        """
        texts = _check_texts(texts)
        with self.session():
            self.check_prompt(prompt, max_new_tokens=max_new_tokens, chat_template=chat_template)
            report = self.tune(texts, progress=progress)
            start = time.perf_counter()
            try:
                base_only = not texts and not self.config.full_finetune
                # No texts: switch the adapter off, so the answer is the base model's, exactly.
                with self.model.disable_adapter() if base_only else contextlib.nullcontext():
                    text = self.generate(
                        prompt,
                        max_new_tokens=max_new_tokens,
                        chat_template=chat_template,
                        **generation_kwargs,
                    )
            except QdrantSiftError:
                raise
            except Exception as exc:
                raise TuningError(f"generation failed: {exc}; the adapter was reset") from exc
            return AdaptOutcome(
                text=text, report=report, generate_seconds=time.perf_counter() - start
            )

    def bits_per_byte(self, text: str, *, max_length: int | None = None) -> BpbResult:
        """Bits per byte of ``text`` under the model as it is now (adapter included)."""
        with self._lock:
            return bits_per_byte(self.model, self.tokenizer, text, max_length=max_length)
