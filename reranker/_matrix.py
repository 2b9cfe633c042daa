"""The reranker service's wire codec, shared by the servicer and the remote client:
``Matrix`` <-> numpy, strategy enums, the selection options (defaults derive from
:data:`~qdrant_sift.options.DEFAULTS`), filters, point ids and payloads. (The text-rerank
messages are built in :mod:`._shapes`; the server set-up only registers the generated stubs.)

Decoding validates, so the server rejects a malformed request before any work starts, with the
same typed errors the in-process selector raises (the client turns them back into those
classes). The limits live in :mod:`._limits`, the batch-shape rule in :mod:`._checks`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qdrant_sift.arrays import as_float32_matrix
from qdrant_sift.errors import ConfigError, InvalidInputError, NonFiniteError
from qdrant_sift.options import DEFAULTS
from qdrant_sift.v1 import reranker_pb2 as pb

from ._limits import check_limit

__all__ = [
    "STRATEGY_NAMES",
    "filter_from_proto",
    "filter_to_proto",
    "from_matrix",
    "id_from_proto",
    "id_to_proto",
    "options_from_proto",
    "options_to_proto",
    "payload_from_proto",
    "payload_to_proto",
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
_STRATEGY_CODES: dict[str, pb.Strategy] = {
    "sift": pb.STRATEGY_SIFT,
    "nearest": pb.STRATEGY_NEAREST,
    "mmr": pb.STRATEGY_MMR,
    "random": pb.STRATEGY_RANDOM,
}


def from_matrix(
    matrix: pb.Matrix, name: str, *, max_rows: tuple[str, int], max_cols: tuple[str, int]
) -> np.ndarray:
    """Decode and validate a ``Matrix`` into a read-only (rows, cols) float32 view (no copy)."""
    rows, cols = int(matrix.rows), int(matrix.cols)
    if rows == 0 or cols == 0:
        raise InvalidInputError(f"{name}: empty matrix (rows={rows}, cols={cols})")
    check_limit(max_rows[0], rows, max_rows[1], f"{name}.rows")
    check_limit(max_cols[0], cols, max_cols[1], f"{name}.cols")
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


def to_matrix(array: Any, name: str = "array", *, allow_vector: bool = True) -> pb.Matrix:
    """Encode an array as a ``Matrix`` (one vector becomes one row)."""
    a = as_float32_matrix(array, name, allow_vector=allow_vector, finite=False)
    return pb.Matrix(rows=a.shape[0], cols=a.shape[1], data=a.astype(_F32, copy=False).tobytes())


def strategy_from_proto(code: int) -> str:
    try:
        return STRATEGY_NAMES[code]
    except KeyError:
        raise InvalidInputError(f"unknown strategy enum value {code}") from None


def strategy_to_proto(name: str) -> pb.Strategy:
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
        "normalize": bool(req.normalize) if req.HasField("normalize") else DEFAULTS.normalize,
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
    from qdrant_sift.client.stores import Filter, Match, as_filter

    def cond(c: Any) -> pb.Condition:
        if isinstance(c, Filter):
            return pb.Condition(filter=filter_to_proto(c))
        if isinstance(c, Match):
            v = c.value
            if isinstance(v, tuple):
                if all(isinstance(x, str) for x in v):
                    return pb.Condition(key=c.key, match=pb.Match(any_keywords=[str(x) for x in v]))
                if all(isinstance(x, int) for x in v):
                    return pb.Condition(key=c.key, match=pb.Match(any_integers=[int(x) for x in v]))
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
    from qdrant_sift.client.stores import Filter, Match, Range

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

    payload: dict[str, Any] = _ints_back(MessageToDict(msg))
    return payload
