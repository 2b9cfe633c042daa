"""The result type of every selector, :class:`Selection`, and how engine output becomes one.

Kept apart from :mod:`._select` (the routing) so that the engines' fresh arrays are frozen in
place, not copied: :func:`finish` applies adaptive stopping and hands arrays that nothing else
holds to :meth:`Selection._owned`, while a caller's own arrays go through ``__post_init__``,
which copies them. Either way the selection is read-only and owns its data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qdrant_sift.errors import InvalidInputError
from qdrant_sift.options import CheckedOptions

__all__ = ["Selection", "finish", "prior_of"]


@dataclass(frozen=True, eq=False)
class Selection:
    """The outcome of one selection, in pick order.

    ``variances[i]`` is σ²ᵢ₊₁, the targets' total posterior variance after the first i+1 picks
    (for every strategy, so strategies compare on SIFT's objective); ``prior_variance`` is σ²₀.
    ``stopped_early`` says adaptive stopping (``alpha``) cut the picks short.
    """

    indices: np.ndarray
    variances: np.ndarray
    prior_variance: float
    stopped_early: bool
    strategy: str

    def __post_init__(self) -> None:
        idx = np.array(self.indices, dtype=np.int64).reshape(-1)
        var = np.array(self.variances, dtype=np.float64).reshape(-1)
        if idx.shape != var.shape:
            raise InvalidInputError(
                f"indices ({idx.size}) and variances ({var.size}) must have the same length"
            )
        idx.flags.writeable = False
        var.flags.writeable = False
        object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "variances", var)
        object.__setattr__(self, "prior_variance", float(self.prior_variance))
        object.__setattr__(self, "stopped_early", bool(self.stopped_early))

    @classmethod
    def _owned(
        cls, idx: np.ndarray, var: np.ndarray, prior: float, stopped: bool, strategy: str
    ) -> Selection:
        """A selection over arrays the engines just made for it (1-D int64 / float64, shared
        with nothing): frozen in place instead of copied by ``__post_init__``; else the copy."""
        if not (
            idx.dtype == np.int64 and var.dtype == np.float64 and idx.ndim == var.ndim == 1
        ) or (idx.size != var.size):
            return cls(idx, var, prior, stopped, strategy)
        idx.flags.writeable = False
        var.flags.writeable = False
        sel = object.__new__(cls)
        sel.__dict__.update(  # frozen: fields are set once, here, as __post_init__ would
            indices=idx,
            variances=var,
            prior_variance=float(prior),
            stopped_early=bool(stopped),
            strategy=strategy,
        )
        return sel

    def __len__(self) -> int:
        return int(self.indices.size)

    @property
    def gains(self) -> np.ndarray:
        """Variance reduction of each pick, σ²ᵢ₋₁ − σ²ᵢ (SIFT's greedy criterion)."""
        return -np.diff(self.variances, prepend=self.prior_variance)


def _cut(variances: np.ndarray, alpha: float | None) -> int:
    """Length of the prefix kept by adaptive stopping: pick i stays while α·i·σᵢ ≤ 1."""
    if alpha is None or variances.size == 0:
        return int(variances.size)
    steps = np.arange(1, variances.size + 1)
    bad = alpha * steps * np.sqrt(np.maximum(variances, 0.0)) > 1.0
    return int(np.argmax(bad)) if bad.any() else int(variances.size)


def finish(
    idx: np.ndarray, var: np.ndarray, prior: float, opts: CheckedOptions, stopped: bool = False
) -> Selection:
    """The :class:`Selection` of fresh engine output (``idx``/``var`` are shared with nothing)."""
    if opts.alpha is None:
        return Selection._owned(idx, var, prior, stopped, opts.strategy)
    keep = _cut(var, opts.alpha)
    stopped = stopped or keep < var.size
    return Selection._owned(idx[:keep], var[:keep], prior, stopped, opts.strategy)


def prior_of(sqq: np.ndarray, normalize: bool) -> float:
    """σ²₀: m normalised targets weigh 1 each; raw ones their squared norms."""
    return float(sqq.size) if normalize else float(sqq.sum())
