"""Our filter type: validation, dict shorthand, translation to both backends."""

from __future__ import annotations

import pytest

from qdrant_sift.client.stores import Filter, Match, Range, as_filter
from qdrant_sift.client.stores._filters import to_edge, to_qdrant
from qdrant_sift.errors import InvalidInputError


def test_from_dict() -> None:
    f = as_filter({"source": "a.md", "year": {"gte": 2000, "lt": 2020}, "lang": ["en", "de"]})
    assert f == Filter(
        must=(
            Match("source", "a.md"),
            Range("year", gte=2000, lt=2020),
            Match("lang", ("en", "de")),
        )
    )
    assert as_filter(None) is None
    assert as_filter(Match("a", 1)) == Filter(must=(Match("a", 1),))


@pytest.mark.parametrize(
    "bad",
    [
        lambda: Match("", 1),
        lambda: Match("k", 1.5),
        lambda: Match("k", []),
        lambda: Match("k", [True, False]),
        lambda: Range("k"),
        lambda: Range("k", gte="2"),
        lambda: Filter(must=("k",)),
        lambda: as_filter({"k": {"between": 3}}),
        lambda: as_filter(42),
    ],
)
def test_invalid_filters(bad) -> None:
    with pytest.raises(InvalidInputError):
        bad()


def test_translation_keeps_structure() -> None:
    f = Filter(
        must=(Match("tag", "x"), Range("n", gt=1)),
        should=(Match("k", [1, 2]),),
        must_not=(Filter(must=(Match("flag", True),)),),
    )
    q = to_qdrant(f)
    assert q.must[0].match.value == "x" and q.must[1].range.gt == 1
    assert q.should[0].match.any == [1, 2] and q.must_not[0].must[0].match.value is True
    e = to_edge(f)
    assert len(e.must) == 2 and len(e.should) == 1 and len(e.must_not) == 1
    assert to_qdrant(Filter()).must is None
