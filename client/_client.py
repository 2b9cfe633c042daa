"""``SiftClient``: recall from Qdrant, select with SIFT, fine-tune, answer, reset — one call.

Every part is swappable and loads on first use, so constructing a client is free and importing
this module never imports torch: the embedded defaults (Qdrant Edge in a local folder, in-process
SIFT, offline MiniLM, offline SmolLM2) are only built when a call needs them. ``QDRANT_URL`` and
``QDRANT_SIFT_RERANKER`` switch the store to a Qdrant server and selection to a remote reranker.
The recall-and-select pipeline behind :meth:`SiftClient.search` lives in :mod:`._retrieve`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qdrant_sift.client._args import check_generation, check_retrieval
from qdrant_sift.client._retrieve import retrieve
from qdrant_sift.client._types import AdaptResult, Document, ProgressCallback, ProgressEvent
from qdrant_sift.errors import InvalidInputError
from qdrant_sift.options import DEFAULTS, SelectOptions, check_options, merge_options

if TYPE_CHECKING:  # the parts' contracts; their modules load lazily (no torch at import)
    from qdrant_sift.client.embed import Embedder
    from qdrant_sift.client.stores import VectorStore
    from qdrant_sift.finetune import TuneConfig, Tuner
    from qdrant_sift.reranker import Reranker

__all__ = ["SiftClient"]


class SiftClient:
    """Test-time active fine-tuning over a Qdrant collection.

    SIFT's kernel is by default the language model's own (``kernel="model-mean"``: its last
    hidden layer, mean-pooled, L2-normalised; recall stays on the collection's vector), with
    λ = 0.03 and N = 20 picks: on 56 held-out prompts no choice had seen (``docs/eval``, second
    confirmatory set) that beat plain nearest neighbours at N = 10/20/50 (−1.2/−2.9/−3.3 % bits
    per byte, bootstrap intervals excluding 0), while the MiniLM (recall) kernel did not beat them
    at any λ tried and larger λ in the model kernel over-repeated at N = 50. The model kernel costs
    a forward pass of the model per chunk: stored once at ingest (``qdrant-sift ingest --kernel
    model-mean``, or :meth:`add_texts` into a new collection), else computed from the candidates'
    texts on the fly (cached by content). ``kernel="recall"`` selects on the recall vectors.

    Args:
        store: a :class:`~qdrant_sift.client.stores.VectorStore`; default: ``QdrantStore`` when
            ``url`` or ``QDRANT_URL`` is set, else an embedded ``EdgeStore`` under ``path``.
        reranker: a :class:`~qdrant_sift.reranker.Reranker` (``select(query, candidates, n,
            **options)``); default: a remote reranker when ``QDRANT_SIFT_RERANKER`` is set, else
            in-process SIFT.
        embedder: an :class:`~qdrant_sift.client.embed.Embedder`; default: offline MiniLM.
        model: a Hugging Face id or local path, a ``(model, tokenizer)`` pair, a
            :class:`~qdrant_sift.finetune.Tuner` (``TestTimeTuner``), or ``None`` for the offline
            SmolLM2-135M-Instruct.
        collection: the Qdrant collection to read and write.
        tune_config: a ``TuneConfig`` (paper defaults when ``None``).
        close_parts: let :meth:`close` also close the store and reranker passed in.
        text_key: the payload key that holds a chunk's text (``page_content`` for collections
            written by langchain-qdrant).
        kernel_embedder: select in another embedding than recall (an ``Embedder``, e.g.
            ``ModelEmbedder``): SIFT then runs on the collection's stored kernel vectors when it
            has them (``qdrant-sift ingest --kernel``), else on the candidates' texts embedded
            on the fly (cached by content); the prompt's kernel vector is ``embed_query``.
        kernel: ``"model-mean"`` or ``"model-last"``: that kernel from the tuned model itself
            (its base weights' last hidden layer); ``"recall"``: the recall vectors; instead of
            ``kernel_embedder``. ``None`` (default): ``"model-mean"`` unless ``kernel_embedder``
            is given, falling back to the recall vectors (a logged warning, once) where
            candidates have neither stored kernel vectors nor a text payload, or the tuner no
            transformers model; a kernel named explicitly raises ``ConfigError`` there instead.
    """

    def __init__(
        self,
        store: VectorStore | None = None,
        reranker: Reranker | None = None,
        embedder: Embedder | None = None,
        model: str | os.PathLike[str] | Tuner | tuple[Any, Any] | None = None,
        collection: str = "docs",
        *,
        path: str | os.PathLike[str] | None = None,
        url: str | None = None,
        api_key: str | None = None,
        tune_config: TuneConfig | None = None,
        device: str | None = None,
        close_parts: bool = False,
        text_key: str = "text",
        kernel_embedder: Any = None,
        kernel: str | None = None,
    ) -> None:
        from qdrant_sift.client.stores import validate_collection_name

        self.collection = validate_collection_name(collection)
        self.text_key = text_key
        self._store = store
        self._reranker = reranker
        self._embedder = embedder
        self._model = model
        self._tuner: Tuner | None = None
        self._path = path
        self._url = url or os.environ.get("QDRANT_URL") or None
        self._api_key = api_key or os.environ.get("QDRANT_API_KEY") or None
        self._tune_config = tune_config
        self._device = device
        self._init_lock = threading.RLock()
        from qdrant_sift.client._kernel import resolve_kernel

        self._kernel = resolve_kernel(kernel, kernel_embedder, lambda: self.tuner)
        # Parts passed in belong to the caller unless close_parts says the client may close them.
        self._owned: list[Any] = (
            [part for part in (store, reranker) if part is not None] if close_parts else []
        )

    # --- lazily built parts ---------------------------------------------------------------

    @property
    def store(self) -> VectorStore:
        with self._init_lock:
            if self._store is None:
                from qdrant_sift.client.stores import EdgeStore, QdrantStore

                if self._url:
                    self._store = QdrantStore(self.collection, url=self._url, api_key=self._api_key)
                else:
                    from qdrant_sift.paths import default_edge_path

                    folder = Path(self._path) if self._path else default_edge_path()
                    self._store = EdgeStore(folder, collection=self.collection)
                self._owned.append(self._store)
            return self._store

    @property
    def embedder(self) -> Embedder:
        with self._init_lock:
            if self._embedder is None:
                from qdrant_sift.client._threads import apply_thread_policy

                apply_thread_policy()
                from qdrant_sift.client.embed import default_embedder

                self._embedder = default_embedder()
            return self._embedder

    @property
    def reranker(self) -> Reranker:
        with self._init_lock:
            if self._reranker is None:
                target = os.environ.get("QDRANT_SIFT_RERANKER")
                if target:
                    from qdrant_sift.reranker import RemoteReranker

                    self._reranker = RemoteReranker(
                        target, token=os.environ.get("QDRANT_SIFT_TOKEN") or None
                    )
                else:
                    from qdrant_sift.client._threads import apply_thread_policy

                    apply_thread_policy()
                    from qdrant_sift.reranker import LocalReranker

                    self._reranker = LocalReranker(device=self._device)
                self._owned.append(self._reranker)
            return self._reranker

    @property
    def tuner(self) -> Tuner:
        with self._init_lock:
            if self._tuner is None:
                from qdrant_sift.client._threads import apply_thread_policy

                apply_thread_policy()  # before torch is imported: see _threads
                from qdrant_sift.finetune import TestTimeTuner, TuneConfig, Tuner, load_model

                if isinstance(self._model, Tuner):  # a TestTimeTuner or any other Tuner
                    self._tuner = self._model
                else:
                    if isinstance(self._model, tuple):
                        model, tokenizer = self._model
                    else:
                        model, tokenizer = load_model(self._model, device=self._device)
                    config = self._tune_config or TuneConfig()
                    self._tuner = TestTimeTuner(model, tokenizer, config)
            return self._tuner

    # --- writing --------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any]] | None = None,
        *,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Embed and upsert ``texts``, one point each; deterministic ids make re-adding a no-op.
        ``ids``: a source id per text; a new text under a stored id replaces the old one."""
        from qdrant_sift.client.ingest import add_texts

        kernel = self._kernel.for_writing(self.store) if self._kernel is not None else None
        return add_texts(
            self.store, self.embedder, texts, metadatas, ids=ids, kernel_embedder=kernel
        )

    # --- reading --------------------------------------------------------------------------

    def search(
        self,
        prompt: str,
        n: int = 10,
        k: int = 200,
        strategy: str = DEFAULTS.strategy,
        *,
        lam: float = DEFAULTS.lam,
        alpha: float | None = DEFAULTS.alpha,
        unique: bool = DEFAULTS.unique,
        diversity: float = DEFAULTS.diversity,
        both_directions: bool = DEFAULTS.both_directions,
        filter: Any = None,
        options: SelectOptions | None = None,
    ) -> list[Document]:
        """Recall ``k`` candidates and return the ``n`` that ``strategy`` picks, in pick order.

        ``both_directions`` recalls by |cosine| (SIFT values anti-correlated chunks as much as
        correlated ones); ``False`` halves recall time where only similar chunks matter.
        ``options``: a :class:`~qdrant_sift.options.SelectOptions` instead of the option
        keywords (a keyword also set to a non-default value is a ``ConfigError``).
        """
        opts = _options(
            options, strategy=strategy, lam=lam, alpha=alpha, unique=unique,
            diversity=diversity, both_directions=both_directions,
        )  # fmt: skip
        documents, _, _ = retrieve(
            self, prompt, n, k, opts, kernel=self._kernel, filter=filter, progress=None
        )
        return documents

    def adapt_and_generate(
        self,
        prompt: str,
        *,
        k: int = 200,
        n: int = 20,
        lam: float = DEFAULTS.lam,
        alpha: float | None = DEFAULTS.alpha,
        strategy: str = DEFAULTS.strategy,
        filter: Any = None,
        unique: bool = DEFAULTS.unique,
        diversity: float = DEFAULTS.diversity,
        both_directions: bool = DEFAULTS.both_directions,
        max_new_tokens: int = 128,
        progress: ProgressCallback | None = None,
        options: SelectOptions | None = None,
        **generation_kwargs: Any,
    ) -> AdaptResult:
        """Recall, select, fine-tune one step per pick, answer, and reset the adapter.

        Validation (prompt length, empty collection, options) happens before any step, so a
        failing call leaves nothing half-applied; the adapter is reset even when tuning raises.
        ``options``: a :class:`~qdrant_sift.options.SelectOptions` instead of the option
        keywords, as in :meth:`search`.
        """
        opts = _options(
            options, strategy=strategy, lam=lam, alpha=alpha, unique=unique,
            diversity=diversity, both_directions=both_directions,
        )  # fmt: skip
        self._check_arguments(prompt, n, k, opts, filter=filter)
        check_generation(max_new_tokens, progress, generation_kwargs)
        tuner = self.tuner
        tuner.check_prompt(
            prompt,
            max_new_tokens=max_new_tokens,
            chat_template=generation_kwargs.get("chat_template", True),
        )
        documents, selection, timings = retrieve(
            self, prompt, n, k, opts, kernel=self._kernel, filter=filter, progress=progress
        )
        texts = [doc.text for doc in documents]
        total_steps = len(texts) * tuner.config.steps_per_chunk

        def on_step(step: Any) -> None:
            assert progress is not None
            progress(ProgressEvent("tune", step.index + 1, total_steps, {"loss": step.loss}))

        if progress is not None:
            progress(ProgressEvent("tune", 0, total_steps))
        outcome = tuner.adapt(
            texts,
            prompt,
            max_new_tokens=max_new_tokens,
            progress=on_step if progress is not None else None,
            **generation_kwargs,
        )
        if progress is not None:
            progress(ProgressEvent("generate", 1, 1))

        reason = None
        if not texts:
            reason = (
                "n=0: no fine-tuning requested"
                if n == 0
                else "adaptive stopping: the model is already certain enough about this prompt"
            )
        prior = float(selection.prior_variance)
        losses = [float(step.loss) for step in outcome.report.steps]
        return AdaptResult(
            text=outcome.text,
            documents=documents,
            steps=len(losses),
            uncertainty_before=prior,
            uncertainty_after=float(selection.variances[-1]) if len(selection.variances) else prior,
            losses=losses,
            timings=replace(
                timings,
                tune=float(outcome.report.seconds),
                generate=float(outcome.generate_seconds),
            ),
            stopped_early=bool(selection.stopped_early),
            base_model_only=not texts,
            reason=reason,
        )

    def generate(self, prompt: str, *, max_new_tokens: int = 128, **generation_kwargs: Any) -> str:
        """Answer with the base model alone (adapter switched off): the no-fine-tuning baseline."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInputError("prompt must be a non-empty string")
        check_generation(max_new_tokens, None, generation_kwargs)
        outcome = self.tuner.adapt([], prompt, max_new_tokens=max_new_tokens, **generation_kwargs)
        return str(outcome.text)

    # --- plumbing -------------------------------------------------------------------------

    def _check_arguments(
        self, prompt: Any, n: Any, k: Any, opts: SelectOptions, *, filter: Any
    ) -> None:
        """Every selection and recall argument, before any embedding, recall or model load."""
        check_retrieval(
            prompt=prompt,
            n=n,
            k=k,
            both_directions=opts.both_directions,
            filter=filter,
            filter_check=getattr(self.store, "_native_filter", None),
        )
        check_options(
            n, opts.strategy, opts.lam, opts.alpha, opts.unique, opts.normalize, opts.diversity,
            opts.seed,
        )  # fmt: skip

    def close(self) -> None:
        """Close the parts this client built itself (never the ones passed in)."""
        for part in reversed(self._owned):
            close = getattr(part, "close", None)
            if close is not None:
                close()
        self._owned.clear()

    def __enter__(self) -> SiftClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _options(options: SelectOptions | None, **given: Any) -> SelectOptions:
    """The call's :class:`SelectOptions`: ``options`` (no keyword may contradict it, as in
    :func:`~qdrant_sift.options.merge_options`), else the keywords on the defaults."""
    if options is None:
        return replace(DEFAULTS, **given)
    merge_options(options, **given)  # checks the type and raises ConfigError on a clash
    return options
