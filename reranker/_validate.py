"""Input checks and conversion for the selectors.

Every way to misuse :func:`qdrant_sift.reranker.select` ends here with a typed error from
:mod:`qdrant_sift.errors` *before* any work starts, so a bad request never yields a silently wrong
selection. Conversion avoids copies: a float32 C-contiguous numpy array (or CPU tensor) in the
compute dtype is used as is, which keeps peak memory near the size of the candidate matrix.
The checks that accept the common case (default options, float32 arrays, finite norms) take
the shortest route; whatever they do not accept at once goes through the full checks, so each
kind of bad input still gets its one typed error and message.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from qdrant_sift.arrays import array_of_numbers
from qdrant_sift.arrays import check_shape as _shape_checked
from qdrant_sift.errors import (
    ConfigError,
    InvalidInputError,
    NonFiniteError,
)
from qdrant_sift.options import DEFAULTS, STRATEGIES, SelectOptions, check_options, merge_options
from qdrant_sift.options import CheckedOptions as Options

from ._sift_once import sqnorms as compiled_sqnorms

__all__ = [
    "STRATEGIES",
    "Options",
    "as_numpy_matrix",
    "as_torch_matrix",
    "check_options",
    "checked_options",
    "compute_dtype",
    "resolve_device",
    "row_sqnorms_numpy",
    "row_sqnorms_torch",
]

_F32_MAX = float(np.finfo(np.float32).max)
_F32_SUM_MAX = 1e300 / _F32_MAX  # this many float32 squares cannot overflow a float64 sum
_CPU = torch.device("cpu")


def resolve_device(device: Any) -> torch.device:
    """``None`` → CUDA when available, else CPU; strings and devices are checked."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device) and device.type == "cpu":
        return device  # what torch.device(device) would return, without making one
    if device.__class__ is str and device == "cpu":
        return _CPU
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {device!r}; use 'cpu' or 'cuda'")
    return dev


def compute_dtype(dtype: Any) -> torch.dtype:
    """Only float32 (fast) and float64 (reference precision) are supported compute dtypes."""
    if dtype in (torch.float32, np.float32, "float32"):
        return torch.float32
    if dtype in (torch.float64, np.float64, "float64"):
        return torch.float64
    raise ConfigError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")


def _check_kind_torch(t: torch.Tensor, name: str) -> None:
    if t.is_complex() or t.dtype == torch.bool:
        raise InvalidInputError(f"{name} must hold real numbers, got dtype {t.dtype}")


def as_numpy_matrix(
    x: Any, name: str, np_dtype: type[np.floating], *, allow_vector: bool
) -> np.ndarray:
    """Convert to a C-contiguous 2-D numpy array in the compute dtype (no copy when already
    right)."""
    if type(x) is np.ndarray and x.dtype.type is np_dtype and x.dtype.isnative:  # as is
        _shape_checked(x.shape, name, allow_vector=allow_vector)
        arr = x
    elif isinstance(x, torch.Tensor):
        _check_kind_torch(x, name)
        _shape_checked(tuple(x.shape), name, allow_vector=allow_vector)
        tdt = torch.float32 if np_dtype is np.float32 else torch.float64
        arr = x.detach().to("cpu", tdt).numpy()
    else:
        arr = array_of_numbers(x, name)
        _shape_checked(arr.shape, name, allow_vector=allow_vector)
        arr = arr.astype(np_dtype, copy=False)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1) if allow_vector else arr.reshape(0, 0)
    if not arr.flags.c_contiguous:  # one layout, so the same numbers give the same bits
        arr = np.ascontiguousarray(arr)  # (BLAS sums a Fortran-order Gram in its own order)
    return arr


def as_torch_matrix(
    x: Any, name: str, device: torch.device, dtype: torch.dtype, *, allow_vector: bool
) -> torch.Tensor:
    """Convert to a 2-D tensor on ``device`` in ``dtype`` (no copy when already right)."""
    if isinstance(x, torch.Tensor):
        _check_kind_torch(x, name)
        _shape_checked(tuple(x.shape), name, allow_vector=allow_vector)
        t = x.detach().to(device, dtype)
    else:
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        t = torch.from_numpy(
            np.ascontiguousarray(as_numpy_matrix(x, name, np_dtype, allow_vector=allow_vector))
        ).to(device)
    if t.ndim == 1:
        t = t.reshape(1, -1) if allow_vector else t.reshape(0, 0)
    return t


def _first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _finish_sqnorms(
    sq: np.ndarray, name: str, normalize: bool, recheck: Any, is_f32: bool
) -> np.ndarray:
    """Shared tail: non-finite → find the cause; zero norm with normalize → error."""
    if not np.isfinite(sq).all():
        bad_rows = recheck()
        if bad_rows.size:
            raise NonFiniteError(f"{name} row {int(bad_rows[0])} holds NaN or infinity")
        hint = "; rescale them or pass dtype=torch.float64" if is_f32 else ""
        raise InvalidInputError(f"{name} values are too large to square in the compute dtype{hint}")
    if normalize and (sq <= 0.0).any():
        row = _first_bad_row(sq <= 0.0)
        raise InvalidInputError(
            f"{name} row {row} has zero norm and cannot be normalised; drop it or pass "
            "normalize=False"
        )
    return sq


def row_sqnorms_numpy(arr: np.ndarray, name: str, normalize: bool) -> np.ndarray:
    """Squared row norms (float64) that double as the NaN/inf check (no K×d temporaries).

    A finite float32 sum of squares bounds every dot product of two rows, so once it passes,
    the float32 kernel cannot overflow either. float32 norms come from the compiled loop's dot
    kernel where it is available (the bits every compiled selection uses, so each route to a
    selection starts from the same numbers); anything it does not accept takes numpy's route.
    """
    is_f32 = arr.dtype == np.float32
    if is_f32:  # ``arr`` is C-contiguous (as_numpy_matrix's); read-only as it is, no copy
        fast = compiled_sqnorms(arr, normalize)
        if fast is not None:
            return fast
    sq: np.ndarray = np.einsum("ij,ij->i", arr, arr).astype(np.float64)
    # fast accept in two reductions: squares are ≥ 0 or NaN/inf, so a finite float64 sum means
    # every row is finite (float32 squares cannot overflow it); anything else takes the checks
    # below, which find the cause and raise
    if (
        is_f32
        and sq.size < _F32_SUM_MAX
        and math.isfinite(np.add.reduce(sq))
        and (not normalize or sq.size == 0 or np.minimum.reduce(sq) > 0.0)
    ):
        return sq

    def recheck() -> np.ndarray:
        return np.flatnonzero(~np.isfinite(arr).all(axis=1))

    return _finish_sqnorms(sq, name, normalize, recheck, is_f32)


def row_sqnorms_torch(t: torch.Tensor, name: str, normalize: bool) -> torch.Tensor:
    """Torch twin of :func:`row_sqnorms_numpy`; returns float64 on the tensor's device."""
    sq = torch.linalg.vector_norm(t, dim=1).double() ** 2
    is_f32 = t.dtype == torch.float32
    if is_f32:  # a finite float32 norm can still have a square beyond float32's range
        sq = torch.where(sq < _F32_MAX, sq, torch.full_like(sq, math.inf))
    sq_np = sq.cpu().numpy()

    def recheck() -> np.ndarray:
        return torch.nonzero(~torch.isfinite(t).all(dim=1)).flatten().cpu().numpy()

    _finish_sqnorms(sq_np, name, normalize, recheck, is_f32)
    out: torch.Tensor = sq
    return out


_DEFAULT_OPTS: dict[int, Options] = {}  # check_options(n, defaults...) by n: the common call


def checked_options(
    n: Any,
    options: SelectOptions | None,
    strategy: Any,
    lam: Any,
    alpha: Any,
    unique: Any,
    normalize: Any,
    diversity: Any,
    seed: Any,
) -> Options:
    """:func:`check_options` of a call's options. A call that leaves every option at its
    default (the same objects as :data:`DEFAULTS`'s, so nothing to check) with an int ``n`` ≥ 0
    reuses the checked options made for that ``n`` by the first such call."""
    plain = (
        options is None
        and type(n) is int
        and n >= 0
        and strategy is DEFAULTS.strategy
        and lam is DEFAULTS.lam
        and alpha is None
        and unique is DEFAULTS.unique
        and normalize is DEFAULTS.normalize
        and diversity is DEFAULTS.diversity
        and seed is None
    )
    if plain and n in _DEFAULT_OPTS:
        return _DEFAULT_OPTS[n]
    given = dict(strategy=strategy, lam=lam, alpha=alpha, unique=unique, normalize=normalize)
    opts = check_options(n, **merge_options(options, diversity=diversity, seed=seed, **given))
    if plain and len(_DEFAULT_OPTS) < 1024:
        _DEFAULT_OPTS[n] = opts
    return opts
