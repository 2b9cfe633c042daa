"""Controlled redundancy: r extra copies of every data chunk, exact and near-duplicate.

The paper's claim is that nearest neighbours waste steps when the data space repeats itself;
real collections do (mirrors, versions, boilerplate). Copies cycle through three kinds, so r = 1
adds exact copies and r = 3 one of each:

- ``exact``: the same text (a mirror);
- ``rewrap``: lines re-joined and re-wrapped at another width, with changed whitespace;
- ``edit``: a few words edited (case, a dropped word, two words swapped), as between versions.
"""

from __future__ import annotations

import random
import textwrap

from qdrant_sift.errors import InvalidInputError

from ._corpus import Corpus, CorpusChunk

__all__ = ["COPY_KINDS", "inject_redundancy", "near_copy"]

COPY_KINDS: tuple[str, ...] = ("exact", "rewrap", "edit")


def near_copy(text: str, kind: str, rng: random.Random) -> str:
    """One copy of ``text`` of the given kind (see the module docstring)."""
    if kind == "exact":
        return text
    if kind == "rewrap":
        width = rng.choice((60, 72, 88, 100))
        body = textwrap.fill(" ".join(text.split()), width=width)
        return body.replace(". ", ".  ") + rng.choice(("\n", "  \n", "\n\n"))
    if kind == "edit":
        words = text.split(" ")
        slots = [i for i, w in enumerate(words) if w.strip()]
        for _ in range(max(1, len(slots) // 40)):  # about one edit per 40 words, at least one
            if len(slots) < 3:
                break
            i = rng.choice(slots[1:-1])
            op = rng.randrange(3)
            if op == 0:
                words[i] = words[i].upper() if not words[i].isupper() else words[i].lower()
            elif op == 1:
                words[i] = ""
            else:
                words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(w for w in words if w)
    raise InvalidInputError(f"copy kind must be one of {COPY_KINDS}, got {kind!r}")


def inject_redundancy(corpus: Corpus, copies: int, *, seed: int = 0) -> Corpus:
    """A new corpus whose data space holds ``copies`` extra copies of every chunk (prompts same).

    Copies keep the original's document id and domain (they are the same document) and get new
    chunk ids after the originals; ``stats["redundancy"]`` records what was added.
    """
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
        raise InvalidInputError(f"copies must be a non-negative int, got {copies!r}")
    rng = random.Random(seed)
    chunks = list(corpus.chunks)
    added = dict.fromkeys(COPY_KINDS, 0)
    for j in range(copies):
        kind = COPY_KINDS[j % len(COPY_KINDS)]
        for c in corpus.chunks:
            text = near_copy(c.text, kind, rng)
            chunks.append(CorpusChunk(len(chunks), c.doc_id, c.domain, text))
            added[kind] += 1
    stats = {**corpus.stats, "redundancy": {"copies": copies, "added": added}}
    return Corpus(chunks=chunks, prompts=list(corpus.prompts), stats=stats)
