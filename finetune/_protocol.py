"""The tuner contract ``SiftClient`` relies on; :class:`~qdrant_sift.finetune.TestTimeTuner`
implements it, and so may any other test-time fine-tuner passed as ``SiftClient(model=...)``.

Torch-free at run time (the types it names are only imported for type checkers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._config import AdaptOutcome, StepReport, TuneConfig

__all__ = ["Tuner"]


@runtime_checkable
class Tuner(Protocol):
    """Tunes on selected texts in order, answers the prompt, and resets itself afterwards."""

    @property
    def config(self) -> TuneConfig:
        """The tuning settings (``steps_per_chunk`` sizes the progress reports)."""
        ...

    def check_prompt(
        self, prompt: str, *, max_new_tokens: int = 64, chat_template: bool = True
    ) -> int:
        """The prompt's length in tokens; :class:`~qdrant_sift.errors.PromptTooLongError` when
        it and ``max_new_tokens`` do not fit the model's context."""
        ...

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
        """Tune on ``texts`` (none: the base model answers), answer ``prompt``, reset."""
        ...
