"""Wire conversions for the reranker service: ``Matrix`` <-> numpy, strategies, ids, payloads.

Validation lives here so the server rejects a malformed request before any work starts, with
the same typed errors the in-process selector raises (the client turns them back into those
classes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qdrant_sift.errors import (
    ConfigError,
    DimensionMismatchError,
    InvalidInputError,
    NonFiniteError,
    ServerLimitError,
)
from qdrant_sift.options import DEFAULTS
from qdrant_sift.v1 import reranker_pb2 as pb

from ._checks import array_of_numbers, check_shape

__all__ = [
    "STRATEGY_NAMES",
    "Limits",
    "ServerLimitError",
    "as_float32_2d",
    "batch_dims_message",
    "check_cost",
    "check_dims",
    "check_n",
    "filter_from_proto",
    "filter_to_proto",
    "from_matrix",
    "id_from_proto",
    "id_to_proto",
    "is_per_prompt",
    "options_from_proto",
    "options_to_proto",
    "payload_from_proto",
    "payload_to_proto",
    "selection_cost",
    "strategy_from_proto",
    "strategy_to_proto",
    "to_matrix",
    "wire_float",
]

_F32 = np.dtype("<f4")

STRATEGY_NAMES: dict[int, str] = {
    pb.STRATEGY_UNSPECIFIED: "sift",
    pb.STRATEGY_SIFT: "sift",
    pb.STRATEGY_NEAREST: "nearest",
    pb.STRATEGY_MMR: "mmr",
    pb.STRATEGY_RANDOM: "random",
}
_STRATEGY_CODES = {"sift": pb.STRATEGY_SIFT, "nearest": pb.STRATEGY_NEAREST, "mmr": pb.STRATEGY_MMR}
_STRATEGY_CODES["random"] = pb.STRATEGY_RANDOM


@dataclass(frozen=True)
class Limits:
    """Per-request bounds; a violation is INVALID_ARGUMENT naming the limit.

    Oversized messages are refused with RESOURCE_EXHAUSTED before they are parsed.
    ``max_cost`` caps the work of one call (see :func:`selection_cost`; the sum over a batch),
    checked before any work: sizes alone admit calls of minutes (K=2000, n=10000, d=384 is
    2·10¹¹, about 35 s of one core). The default, 5·10¹⁰, is about 8 s of one core. Defaults
    admit the paper's settings (K=200, N=50, d<=4096) with wide margins.
    """

    max_k: int = 50_000
    max_d: int = 8_192
    max_n: int = 10_000
    max_m: int = 1_024
    max_batch: int = 1_024
    max_recall_k: int = 10_000
    max_message_bytes: int = 64 * 1024 * 1024
    max_cost: int = 50_000_000_000
    #: Text reranking (HTTP and ``RerankTexts``): documents per call, characters per document.
    max_documents: int = 1_000
    max_document_chars: int = 100_000

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"Limits.{name} must be a positive int, got {value!r}")


def _check(limit: str, value: int, maximum: int, what: str) -> None:
    if value > maximum:
        raise ServerLimitError.exceeded(limit, value, maximum, what)


def from_matrix(
    matrix: pb.Matrix, name: str, *, max_rows: tuple[str, int], max_cols: tuple[str, int]
) -> np.ndarray:
    """Decode and validate a ``Matrix`` into a read-only (rows, cols) float32 view (no copy)."""
    rows, cols = int(matrix.rows), int(matrix.cols)
    if rows == 0 or cols == 0:
        raise InvalidInputError(f"{name}: empty matrix (rows={rows}, cols={cols})")
    _check(max_rows[0], rows, max_rows[1], f"{name}.rows")
    _check(max_cols[0], cols, max_cols[1], f"{name}.cols")
    expected = rows * cols * 4
    if len(matrix.data) != expected:
        raise InvalidInputError(
            f"{name}: data holds {len(matrix.data)} bytes, rows×cols×4 = {rows}×{cols}×4 "
            f"= {expected} expected (float32 little-endian, row-major)"
        )
    array = np.frombuffer(matrix.data, dtype=_F32).reshape(rows, cols)
    array = array.astype(np.float32, copy=False)  # a copy only on big-endian hosts
    if not np.isfinite(array).all():
        raise NonFiniteError(f"{name}: holds NaN or infinity")
    return array


def as_float32_2d(array: Any, name: str, *, allow_vector: bool = True) -> np.ndarray:
    """Client side: numpy / torch / nested lists -> C-contiguous (rows, d) float32, refused
    with the in-process selector's rules and classes (``allow_vector``: a (d,) query)."""
    if hasattr(array, "detach"):  # a torch tensor, without importing torch here
        array = array.detach().cpu().numpy()
    arr = array_of_numbers(array, name)
    check_shape(arr.shape, name, allow_vector=allow_vector)
    out = arr.astype(np.float32, copy=False)
    if out.ndim == 1:
        out = out[None, :]
    return np.ascontiguousarray(out)


def to_matrix(array: Any, name: str = "array", *, allow_vector: bool = True) -> pb.Matrix:
    """Encode an array as a ``Matrix`` (one vector becomes one row)."""
    a = as_float32_2d(array, name, allow_vector=allow_vector)
    return pb.Matrix(rows=a.shape[0], cols=a.shape[1], data=a.astype(_F32, copy=False).tobytes())


def check_n(n: int, limits: Limits, name: str = "n") -> int:
    if n == 0:
        raise InvalidInputError(f"{name} must be >= 1, got 0")
    _check("max_n", n, limits.max_n, name)
    return n


def selection_cost(k: int, n: int, d: int, m: int = 1) -> int:
    """Work of one greedy selection in multiply-adds: n picks, each one kernel column over the
    K candidates and m targets ((K+m)·d) and its rank-n correction (at most n·(K+m))."""
    return int(n) * (int(k) + int(m)) * (int(d) + int(n))


def check_cost(cost: int, limits: Limits, what: str = "K·n·(d+n)") -> None:
    """:class:`ServerLimitError` naming ``max_cost`` when ``cost`` exceeds it (before any work)."""
    if cost > limits.max_cost:
        raise ServerLimitError(
            f"estimated work {what} = {cost:.3g} exceeds the server limit "
            f"max_cost={limits.max_cost:.3g}; ask for fewer picks (n) or candidates (K)",
            "max_cost",
        )


def batch_dims_message(b: int, d: int, d0: int) -> str:
    """The one wording, in-process and remote, of a batch whose members' dimensions differ."""
    return (
        f"queries[{b}]: query has dimension {d} but queries[0] has dimension {d0}; every "
        "member of a batch needs the same dimension"
    )


def check_dims(query: np.ndarray, candidates: np.ndarray, prefix: str = "") -> None:
    if query.shape[1] != candidates.shape[1]:
        raise DimensionMismatchError(
            f"{prefix}query has d={query.shape[1]} but candidates have d={candidates.shape[1]}"
        )


def strategy_from_proto(code: int) -> str:
    try:
        return STRATEGY_NAMES[code]
    except KeyError:
        raise InvalidInputError(f"unknown strategy enum value {code}") from None


def strategy_to_proto(name: str) -> int:
    try:
        return _STRATEGY_CODES[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_STRATEGY_CODES))
        raise ConfigError(f"unknown strategy {name!r}; choose one of {known}") from None


def wire_float(value: float) -> float:
    """Undo float32 rounding of a user-typed scalar (0.01 stays 0.01, not 0.00999999977).

    The proto carries lam/alpha/diversity as float32; the shortest decimal that round-trips
    through float32 is what the caller most likely wrote, so in-process and remote selection see
    the same float64 hyper-parameters.
    """
    f = np.float32(value)
    return float(np.format_float_positional(f, unique=True)) if math.isfinite(f) else float(f)


def options_from_proto(req: Any) -> dict[str, Any]:
    """The selector keyword arguments a Select/Recall request asks for (defaults as in-process)."""
    return {
        "strategy": strategy_from_proto(req.strategy),
        "lam": wire_float(req.lam) if req.HasField("lam") else DEFAULTS.lam,
        "alpha": wire_float(req.alpha) if req.HasField("alpha") else None,
        "unique": bool(req.unique),
        "normalize": bool(req.normalize) if req.HasField("normalize") else True,
        "diversity": wire_float(req.diversity) if req.HasField("diversity") else DEFAULTS.diversity,
        "seed": int(req.seed) if req.HasField("seed") else None,
    }


def options_to_proto(
    strategy: str,
    lam: float,
    alpha: float | None,
    unique: bool,
    normalize: bool,
    diversity: float,
    seed: int | None,
) -> dict[str, Any]:
    """Client side: keyword arguments -> request fields (unset where the server default applies)."""
    fields: dict[str, Any] = {"strategy": strategy_to_proto(strategy), "unique": bool(unique)}
    if lam != DEFAULTS.lam:
        fields["lam"] = float(lam)
    if alpha is not None:
        fields["alpha"] = float(alpha)
    if not normalize:
        fields["normalize"] = False
    if diversity != DEFAULTS.diversity:
        fields["diversity"] = float(diversity)
    if seed is not None:
        if int(seed) < 0:
            raise InvalidInputError(f"seed must be >= 0, got {seed}")
        fields["seed"] = int(seed)
    return fields


# --- Recall: filters, point ids, payloads ------------------------------------------------------


def filter_to_proto(spec: Any) -> pb.Filter:
    """Client side: our ``Filter`` (or a Match, Range or dict) -> ``pb.Filter``."""
    from qdrant_sift.client.stores._filters import Filter, Match, as_filter

    def cond(c: Any) -> pb.Condition:
        if isinstance(c, Filter):
            return pb.Condition(filter=filter_to_proto(c))
        if isinstance(c, Match):
            v = c.value
            if isinstance(v, tuple):
                if all(isinstance(x, str) for x in v):
                    return pb.Condition(key=c.key, match=pb.Match(any_keywords=list(v)))
                if all(isinstance(x, int) for x in v):
                    return pb.Condition(key=c.key, match=pb.Match(any_integers=list(v)))
                raise InvalidInputError(f"match-any must be all strings or all ints: {c}")
            if isinstance(v, bool):
                return pb.Condition(key=c.key, match=pb.Match(boolean=v))
            if isinstance(v, int):
                return pb.Condition(key=c.key, match=pb.Match(integer=v))
            return pb.Condition(key=c.key, match=pb.Match(keyword=v))
        bounds = {b: getattr(c, b) for b in ("gt", "gte", "lt", "lte") if getattr(c, b) is not None}
        return pb.Condition(key=c.key, range=pb.Range(**bounds))

    f = as_filter(spec)
    if f is None:
        return pb.Filter()
    return pb.Filter(
        must=[cond(c) for c in f.must],
        should=[cond(c) for c in f.should],
        must_not=[cond(c) for c in f.must_not],
    )


def filter_from_proto(msg: pb.Filter, depth: int = 0) -> Any:
    """Server side: ``pb.Filter`` -> the stores' ``Filter`` (None when empty)."""
    from qdrant_sift.client.stores._filters import Filter, Match, Range

    if depth > 16:
        raise InvalidInputError("filter nested deeper than 16 levels")

    def cond(c: pb.Condition) -> Any:
        kind = c.WhichOneof("kind")
        if kind == "filter":
            return filter_from_proto(c.filter, depth + 1) or Filter()
        if kind == "match":
            m = c.match
            which = m.WhichOneof("value")
            if which is not None:
                return Match(c.key, getattr(m, which))
            if m.any_keywords and m.any_integers:
                raise InvalidInputError(
                    f"filter on {c.key!r}: any_keywords and any_integers both set"
                )
            values = list(m.any_keywords) or list(m.any_integers)
            if not values:
                raise InvalidInputError(f"filter on {c.key!r}: match without a value")
            return Match(c.key, tuple(values))
        if kind == "range":
            r = c.range
            bounds = {b: getattr(r, b) for b in ("gt", "gte", "lt", "lte") if r.HasField(b)}
            return Range(c.key, **bounds)
        raise InvalidInputError(
            f"filter condition on {c.key!r} has neither match, range nor filter"
        )

    if not (msg.must or msg.should or msg.must_not):
        return None
    return Filter(
        must=tuple(cond(c) for c in msg.must),
        should=tuple(cond(c) for c in msg.should),
        must_not=tuple(cond(c) for c in msg.must_not),
    )


def id_to_proto(pid: Any) -> pb.PointId:
    if isinstance(pid, (int, np.integer)) and not isinstance(pid, bool):
        return pb.PointId(num=int(pid))
    return pb.PointId(uuid=str(pid))


def id_from_proto(msg: pb.PointId, fallback: str) -> int | str:
    kind = msg.WhichOneof("kind")
    if kind == "num":
        return int(msg.num)
    return msg.uuid if kind == "uuid" else fallback


def payload_to_proto(payload: dict[str, Any]) -> Any:
    from google.protobuf import struct_pb2

    out = struct_pb2.Struct()
    out.update(payload)
    return out


def _ints_back(value: Any) -> Any:
    """Struct numbers are doubles; integral ones up to 2**53 come back as int."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _ints_back(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints_back(v) for v in value]
    return value


def payload_from_proto(msg: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return _ints_back(MessageToDict(msg))


def is_per_prompt(candidates: Any) -> bool:
    """True when ``candidates`` holds one candidate set per prompt rather than one shared set.

    A 3-D array, or a sequence whose items are matrices. The local and the remote
    ``select_batch`` both decide with this, so the same input means the same thing to both.
    Duck-typed on ``ndim`` so that this module never needs torch.
    """
    ndim = getattr(candidates, "ndim", None)
    if ndim is not None:
        return ndim == 3
    if isinstance(candidates, Sequence) and len(candidates) > 0:
        first = candidates[0]
        first_ndim = getattr(first, "ndim", None)
        if first_ndim is not None:
            return first_ndim == 2
        return (
            isinstance(first, Sequence)
            and len(first) > 0
            and (isinstance(first[0], Sequence) or getattr(first[0], "ndim", 0) >= 1)
        )
    return False
