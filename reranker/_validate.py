"""Input checks and conversion for the selectors.

Every way to misuse :func:`qdrant_sift.reranker.select` ends here with a typed error from
:mod:`qdrant_sift.errors` *before* any work starts, so a bad request never yields a silently wrong
selection. Conversion avoids copies: a float32 C-contiguous numpy array (or CPU tensor) in the
compute dtype is used as is, which keeps peak memory near the size of the candidate matrix.
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
from qdrant_sift.options import STRATEGIES, check_options
from qdrant_sift.options import CheckedOptions as Options

__all__ = [
    "STRATEGIES",
    "Options",
    "as_numpy_matrix",
    "as_torch_matrix",
    "check_options",
    "compute_dtype",
    "resolve_device",
    "row_sqnorms_numpy",
    "row_sqnorms_torch",
]

_F32_MAX = float(np.finfo(np.float32).max)


def resolve_device(device: Any) -> torch.device:
    """``None`` → CUDA when available, else CPU; strings and devices are checked."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
    """Convert to a 2-D numpy array in the compute dtype (no copy when already right)."""
    if isinstance(x, torch.Tensor):
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
    the float32 kernel cannot overflow either.
    """
    sq = np.einsum("ij,ij->i", arr, arr).astype(np.float64)
    is_f32 = arr.dtype == np.float32

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
