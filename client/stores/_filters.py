"""One filter type for every backend: match on payload keys, numeric ranges, boolean structure.

qdrant-client and Qdrant Edge each have their own filter classes; users write ours once (or a
plain dict) and each store translates it. Native filters of a backend pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union, cast

from qdrant_sift.errors import InvalidInputError

__all__ = [
    "Condition",
    "Filter",
    "Match",
    "Range",
    "as_filter",
    "native_filter",
    "to_edge",
    "to_qdrant",
]

Scalar = str | int | bool
_RANGE_KEYS = ("gte", "gt", "lte", "lt")


@dataclass(frozen=True)
class Match:
    """Payload ``key`` equals ``value``; a list/tuple value matches any of its elements."""

    key: str
    value: Scalar | tuple[Scalar, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise InvalidInputError(f"filter key must be a non-empty str, got {self.key!r}")
        if isinstance(self.value, list):
            object.__setattr__(self, "value", tuple(self.value))
        vals = self.value if isinstance(self.value, tuple) else (self.value,)
        if not vals or not all(isinstance(v, (str, int, bool)) for v in vals):
            raise InvalidInputError(f"match value must be str, int, bool or a list of them: {self}")
        if isinstance(self.value, tuple) and any(isinstance(v, bool) for v in vals):
            raise InvalidInputError("match-any over booleans is not supported by Qdrant")


@dataclass(frozen=True)
class Range:
    """Numeric payload ``key`` within the given bounds (any subset of gte/gt/lte/lt)."""

    key: str
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise InvalidInputError(f"filter key must be a non-empty str, got {self.key!r}")
        bounds = [getattr(self, b) for b in _RANGE_KEYS]
        if all(b is None for b in bounds):
            raise InvalidInputError(f"range on {self.key!r} needs at least one bound")
        for b in bounds:
            if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float))):
                raise InvalidInputError(f"range bounds must be numbers: {self}")


Condition = Union[Match, Range, "Filter"]


@dataclass(frozen=True)
class Filter:
    """All of ``must``, at least one of ``should`` (if any), none of ``must_not``."""

    must: tuple[Condition, ...] = ()
    should: tuple[Condition, ...] = ()
    must_not: tuple[Condition, ...] = ()

    def __post_init__(self) -> None:
        for name in ("must", "should", "must_not"):
            conds = tuple(getattr(self, name))
            for c in conds:
                if not isinstance(c, (Match, Range, Filter)):
                    raise InvalidInputError(f"{name} holds a {type(c).__name__}, not a condition")
            object.__setattr__(self, name, conds)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Filter:
        """``{"source": "a.md", "year": {"gte": 2000}, "lang": ["en", "de"]}`` → all must hold."""
        conds: list[Condition] = []
        for key, val in spec.items():
            if isinstance(val, Mapping):
                unknown = set(val) - set(_RANGE_KEYS)
                if unknown:
                    raise InvalidInputError(f"unknown range bounds {sorted(unknown)} for {key!r}")
                conds.append(Range(key, **val))
            else:
                conds.append(Match(key, val))
        return cls(must=tuple(conds))


def as_filter(spec: Any) -> Filter | None:
    """Our :class:`Filter` from a Filter, a condition, a dict or None."""
    if spec is None or isinstance(spec, Filter):
        return spec
    if isinstance(spec, (Match, Range)):
        return Filter(must=(spec,))
    if isinstance(spec, Mapping):
        return Filter.from_dict(spec)
    raise InvalidInputError(
        f"unsupported filter {type(spec).__name__}: use Filter, Match, Range or dict"
    )


def native_filter(
    spec: Any, to_native: Callable[[Filter], Any], native_type: type, who: str, native_name: str
) -> Any:
    """``spec`` as an engine's filter: None stays None; ours (:class:`Filter`, a condition, a
    dict) goes through ``to_native``; the engine's own ``native_type`` passes as it is; anything
    else is an :class:`InvalidInputError` naming ``who`` (the store) and ``native_name``."""
    if spec is None:
        return None
    if isinstance(spec, (Filter, Match, Range, dict)):
        ours = as_filter(spec)
        assert ours is not None  # spec is not None here
        return to_native(ours)
    if isinstance(spec, native_type):
        return spec
    raise InvalidInputError(
        f"{who} takes our Filter, a dict or {native_name}, not {type(spec).__name__}"
    )


def _any_values(values: tuple[Scalar, ...]) -> list[str] | list[int]:
    """A match-any's values as the backends type them (Match refuses booleans in one)."""
    return cast("list[str] | list[int]", list(values))


def _qdrant_cond(c: Condition) -> Any:
    from qdrant_client import models

    if isinstance(c, Filter):
        return to_qdrant(c)
    if isinstance(c, Match):
        if isinstance(c.value, tuple):
            return models.FieldCondition(key=c.key, match=models.MatchAny(any=_any_values(c.value)))
        return models.FieldCondition(key=c.key, match=models.MatchValue(value=c.value))
    return models.FieldCondition(
        key=c.key, range=models.Range(gte=c.gte, gt=c.gt, lte=c.lte, lt=c.lt)
    )


def _conds(conds: Sequence[Condition], conv: Any) -> list[Any] | None:
    return [conv(c) for c in conds] or None


def to_qdrant(f: Filter) -> Any:
    """qdrant_client.models.Filter for our Filter."""
    from qdrant_client import models

    return models.Filter(
        must=_conds(f.must, _qdrant_cond),
        should=_conds(f.should, _qdrant_cond),
        must_not=_conds(f.must_not, _qdrant_cond),
    )


def _edge_cond(c: Condition) -> Any:
    import qdrant_edge as qe

    if isinstance(c, Filter):
        return to_edge(c)
    if isinstance(c, Match):
        if isinstance(c.value, tuple):
            return qe.FieldCondition(key=c.key, match=qe.MatchAny(_any_values(c.value)))
        return qe.FieldCondition(key=c.key, match=qe.MatchValue(c.value))
    return qe.FieldCondition(key=c.key, range=qe.RangeFloat(gte=c.gte, gt=c.gt, lte=c.lte, lt=c.lt))


def to_edge(f: Filter) -> Any:
    """qdrant_edge.Filter for our Filter."""
    import qdrant_edge as qe

    return qe.Filter(
        must=_conds(f.must, _edge_cond),
        should=_conds(f.should, _edge_cond),
        must_not=_conds(f.must_not, _edge_cond),
    )
