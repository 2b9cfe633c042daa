"""Pick a fresh confirmatory prompt set: held-out prompts no earlier run has looked at.

Usage: python docs/eval/scripts/fresh_prompts.py NEW_RUN OLD_RUN [OLD_RUN ...] [--per-domain 8]

NEW_RUN's corpus was built with another seed (``--seed 1 --prompts-per-domain 14``). Per domain,
its prompts of rank >= 2 (ranks 0-1 are that corpus's development prompts) are taken in rank
order, skipping any whose document was a prompt document of an OLD_RUN, or which is a near-copy of
an old prompt (half or more of its 13-word sequences occur in one old prompt; sharing some
boilerplate is allowed: licence texts all do), until ``--per-domain`` are chosen. Prints the
comma-separated ``--prompt-ids`` list, then one line per domain on stderr. Fails if a domain runs
short.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

DEV_RANKS = 2
NEAR_COPY = 0.5  # share of a prompt's 13-grams found in one old prompt
_WORD = re.compile(r"\w+")


def _grams(text: str, n: int = 13) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(max(len(words) - n + 1, 0))}


def _prompts(run: Path) -> list[dict[str, str]]:
    return list(json.loads((run / "corpus.json").read_text())["prompts"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new_run", type=Path)
    parser.add_argument("old_runs", type=Path, nargs="+")
    parser.add_argument("--per-domain", type=int, default=8)
    args = parser.parse_args()

    old = [p for run in args.old_runs for p in _prompts(run)]
    old_docs = {p["doc_id"] for p in old}
    old_grams = [_grams(p["text"]) for p in old]

    def near_copy(text: str) -> bool:
        grams = _grams(text)
        return bool(grams) and any(len(grams & g) >= NEAR_COPY * len(grams) for g in old_grams)

    chosen: list[str] = []
    by_domain: dict[str, list[dict[str, str]]] = {}
    for p in _prompts(args.new_run):
        by_domain.setdefault(p["domain"], []).append(p)
    short = []
    for domain in sorted(by_domain):
        ranked = sorted(by_domain[domain], key=lambda p: int(p["id"].rsplit("/", 1)[1]))
        taken: list[str] = []
        skipped: list[str] = []
        for p in ranked[DEV_RANKS:]:
            if len(taken) == args.per_domain:
                break
            if p["doc_id"] in old_docs or near_copy(p["text"]):
                skipped.append(p["id"])
            else:
                taken.append(p["id"])
        chosen += taken
        print(f"{domain}: {len(taken)} taken, skipped {skipped or 'none'}", file=sys.stderr)
        if len(taken) < args.per_domain:
            short.append(domain)
    if short:
        print(f"too few fresh prompts in {short}", file=sys.stderr)
        return 1
    print(",".join(chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
