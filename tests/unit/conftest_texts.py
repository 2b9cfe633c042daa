"""Shared data of the text-reranking tests (``test_remote_texts``, ``test_http_grpc_text``): one
query, eight documents and the calls that every door (in-process, gRPC, HTTP) must agree on."""

from __future__ import annotations

from typing import Any

QUERY = "which planets have rings"
#: DOCS[3] repeats DOCS[0] (4 distinct texts among the first 5); two are off topic.
DOCS = [
    "Saturn has the most famous ring system in the solar system.",
    "Jupiter has faint rings made of dust.",
    "Mars has two small moons, Phobos and Deimos.",
    "Saturn has the most famous ring system in the solar system.",
    "Uranus has thin dark rings discovered in 1977.",
    "Neptune's rings are clumpy arcs.",
    "Bread rises because yeast makes carbon dioxide.",
    "Venus is the hottest planet.",
]
#: (n or top_n, options): the same answer is due from every door.
CASES: list[tuple[int | None, dict[str, Any]]] = [
    (None, {}),
    (3, {}),
    (5, {"lam": 1.0}),
    (6, {"unique": False}),
    (None, {"alpha": 3.0}),
    (4, {"strategy": "mmr", "diversity": 0.3}),
    (None, {"strategy": "nearest"}),
    (3, {"strategy": "random", "seed": 7}),
    (50, {}),  # more than the documents: clipped, each document once
]
