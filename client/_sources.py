"""Sources for ingest: walk the paths, give every file a stable id, read it into documents.

A source's id does not depend on where the corpus sits: it is the file's path relative to the
folder it was found under (``sub/a.md``), the file's name when a file is given directly, and a
caller's ``source_id`` replaces the name (one file) or prefixes the relative path (a folder).

Text or binary is decided by content, not by extension: extension-less files (``LICENSE``,
``README``, ``COPYING``) are read when they decode as UTF-8 (or UTF-16 with a BOM); NUL bytes or
undecodable bytes skip the file with the reason. HTML becomes clean text (see :mod:`._html`:
scripts and styles dropped, the ``<title>`` kept), PDF is read page by page with ``pypdf``
(the ``pdf`` extra), JSON Lines gives one document per record with a ``text`` field, and source
code of common languages is tagged with its language.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ._html import html_to_text

__all__ = [
    "BINARY_SUFFIXES",
    "CODE_LANGUAGES",
    "Doc",
    "Entry",
    "NotRegular",
    "ReadError",
    "Skips",
    "heading_marks",
    "heading_path",
    "matches",
    "read_bytes",
    "read_source",
    "walk",
]

#: Formats that are binary by definition: skipped without being opened.
BINARY_SUFFIXES: frozenset[str] = frozenset({
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".ico", ".webp", ".heic", ".psd",
    ".mp3", ".wav", ".flac", ".ogg", ".m4a", ".mp4", ".mkv", ".mov", ".avi", ".webm", ".zip",
    ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".tar", ".jar", ".whl", ".egg", ".exe",
    ".dll", ".so", ".dylib", ".o", ".a", ".class", ".pyc", ".pyo", ".bin", ".dat", ".db",
    ".sqlite", ".parquet", ".arrow", ".npy", ".npz", ".pt", ".pth", ".safetensors", ".gguf",
    ".onnx", ".pkl", ".pickle", ".woff", ".woff2", ".ttf", ".otf", ".eot", ".doc", ".docx", ".xls",
    ".xlsx", ".ppt", ".pptx", ".odt", ".ods", ".odp", ".epub", ".iso", ".dmg",
})  # fmt: skip

#: Source-code suffixes and the language recorded in the payload (``language``).
CODE_LANGUAGES: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript",
    ".cjs": "javascript", ".jsx": "javascript", ".ts": "typescript", ".tsx": "typescript",
    ".java": "java", ".kt": "kotlin", ".kts": "kotlin", ".scala": "scala", ".go": "go",
    ".rs": "rust", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp",
    ".hpp": "cpp", ".hh": "cpp", ".cs": "csharp", ".swift": "swift", ".m": "objective-c",
    ".rb": "ruby", ".php": "php", ".pl": "perl", ".pm": "perl", ".lua": "lua", ".r": "r",
    ".jl": "julia", ".hs": "haskell", ".ml": "ocaml", ".ex": "elixir", ".exs": "elixir",
    ".erl": "erlang", ".clj": "clojure", ".dart": "dart", ".sh": "shell", ".bash": "shell",
    ".zsh": "shell", ".ps1": "powershell", ".sql": "sql", ".proto": "protobuf",
    ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".cfg": "ini", ".ini": "ini",
    ".css": "css", ".scss": "css", ".vue": "vue", ".svelte": "svelte", ".tf": "terraform",
    ".cmake": "cmake", ".mk": "make", ".gradle": "gradle", ".zig": "zig", ".nim": "nim",
}  # fmt: skip
_CODE_NAMES = {"Makefile": "make", "Dockerfile": "dockerfile", "CMakeLists.txt": "cmake"}
_HTML_SUFFIXES = (".html", ".htm", ".xhtml")
_MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdx")

_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


class Skips(list[tuple[str, str]]):
    """(path, reason) of every entry, file or record left out."""


@dataclass(frozen=True)
class Entry:
    """A regular file found by :func:`walk`: where it is and its stable source id."""

    path: Path
    source_id: str


@dataclass(frozen=True)
class Doc:
    """One document of a source: the text, its part within the source (``None`` for the whole
    file, ``"12"`` for JSONL line 12, ``"p3"`` for PDF page 3) and its payload fields."""

    text: str
    part: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class ReadError(Exception):
    """A source that cannot be read as text; the message is the reason reported."""


class NotRegular(ReadError):
    """The path is not (any longer) a regular file."""


# --- walking ---------------------------------------------------------------------------------


def _entry_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, without opening it; None for a regular file.

    ``stat`` first, never ``open``: opening a FIFO blocks until a writer appears.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if path.is_symlink():
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"dangling symlink (to {target})"
        return "not found" if exc.errno == errno.ENOENT else f"unreadable ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        return None
    return f"not a regular file ({_KINDS.get(stat.S_IFMT(st.st_mode), 'special file')})"


def matches(rel: str, patterns: Sequence[str]) -> bool:
    """``fnmatch`` on the relative path and on the file name (``*.md`` matches ``a/b.md``)."""
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def join_id(prefix: str | None, rel: str) -> str:
    return f"{prefix.rstrip('/')}/{rel}" if prefix else rel


def walk(
    paths: Iterable[str | os.PathLike[str]],
    skips: Skips,
    *,
    source_id: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> tuple[list[Entry], list[tuple[str, bool]]]:
    """Regular files under ``paths`` with their source ids, and the id scopes the paths cover.

    Folders are walked recursively (hidden entries, ``__pycache__`` and symlinked folders
    skipped); files are deduplicated by resolved path: the first id wins, except that a file
    beats a symlink to it (``GPL-3``, not ``GPL``). A scope is
    ``(id, is_prefix)``: a folder covers every id under its prefix, a file its own id (even when
    the file no longer exists, so ``cleanup="full"`` removes it). Everything unreadable is
    reported in ``skips`` under its own path, never fatal.
    """
    seen: dict[Path, Entry] = {}
    scopes: list[tuple[str, bool]] = []

    def on_walk_error(exc: OSError) -> None:
        skips.append((str(exc.filename), f"unreadable folder ({exc.strerror or exc})"))

    def add(f: Path, sid: str, rel: str) -> None:
        if (include and not matches(rel, include)) or matches(rel, exclude):
            return
        problem = _entry_problem(f)
        if problem is None and f.is_dir():
            problem = "symlink to a folder (not followed)"
        if problem is not None:
            skips.append((str(f), problem))
        elif f.suffix.lower() in BINARY_SUFFIXES:
            skips.append((str(f), f"unsupported type {f.suffix} (binary format)"))
        else:
            real = Path(os.path.realpath(f))
            if real not in seen or (seen[real].path.is_symlink() and not f.is_symlink()):
                seen[real] = Entry(f, sid)  # a link and its target: the target's name wins

    for raw in paths:
        path = Path(raw).expanduser()
        problem = _entry_problem(path)
        if problem is not None:
            skips.append((str(path), problem))
            if problem == "not found":  # a file given by name that vanished: still in scope
                scopes.append((source_id or path.name, False))
        elif path.is_dir():
            scopes.append((source_id.rstrip("/") if source_id else "", True))
            for root, dirs, files in os.walk(path, onerror=on_walk_error):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
                for d in [d for d in dirs if (Path(root) / d).is_symlink()]:
                    skips.append((str(Path(root) / d), "symlink to a folder (not followed)"))
                rel_root = PurePosixPath(Path(root).relative_to(path).as_posix())
                for name in sorted(files):
                    if not name.startswith("."):
                        rel = str(rel_root / name) if str(rel_root) != "." else name
                        add(Path(root) / name, join_id(source_id, rel), rel)
        else:
            sid = source_id or path.name
            scopes.append((sid, False))
            add(path, sid, path.name)
    return list(seen.values()), scopes


# --- reading ---------------------------------------------------------------------------------


def read_bytes(path: Path) -> bytes:
    """The file's bytes; :class:`NotRegular` when it is not (any longer) a regular file.

    Opened non-blocking and checked with ``fstat`` on the open descriptor, so a FIFO swapped in
    after :func:`walk` looked cannot make ingest hang.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "special file")
            raise NotRegular(f"not a regular file ({kind})")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def decode_text(data: bytes) -> str:
    """UTF-8 (BOM stripped) or UTF-16 with a BOM; :class:`ReadError` for binary content."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ReadError(f"not UTF-16 ({exc.reason} at byte {exc.start})") from exc
        sample = text[:4096]
        if sum(c.isprintable() or c.isspace() for c in sample) < 0.95 * len(sample):
            raise ReadError("binary (a UTF-16 mark, but not text)")
        return text
    if b"\x00" in data:
        raise ReadError("binary (contains NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReadError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc


def sniff(path: Path, data: bytes) -> str:
    """The reader for ``data``: ``pdf``, ``html``, ``jsonl``, ``markdown``, ``code`` or ``text``."""
    suffix = path.suffix.lower()
    head = data[:512].lstrip().lower()
    if data.startswith(b"%PDF-") or suffix == ".pdf":
        return "pdf"
    if suffix in _HTML_SUFFIXES or head.startswith((b"<!doctype html", b"<html")):
        return "html"
    if suffix == ".jsonl":
        return "jsonl"
    if suffix in _MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix in CODE_LANGUAGES or path.name in _CODE_NAMES:
        return "code"
    return "text"


def read_source(path: Path, data: bytes, skips: Skips) -> tuple[str, list[Doc]]:
    """(reader, documents) of one source's bytes; :class:`ReadError` with the reason when it
    cannot be read at all. Bad JSONL records are reported in ``skips`` and left out."""
    reader = sniff(path, data)
    if reader == "pdf":
        return reader, _read_pdf(data)
    text = decode_text(data)
    if reader == "html":
        title, body = html_to_text(text)
        return reader, [Doc(body, None, {"title": title} if title else {})]
    if reader == "jsonl":
        return reader, list(_read_jsonl(path, text, skips))
    meta: dict[str, Any] = {}
    if reader == "code":
        meta["language"] = CODE_LANGUAGES.get(path.suffix.lower()) or _CODE_NAMES[path.name]
    elif reader == "markdown":
        title = _markdown_title(text)
        if title:
            meta["title"] = title
    return reader, [Doc(text, None, meta)]


_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")


def heading_marks(text: str) -> list[tuple[int, int, str]]:
    """(offset, level, heading) of the Markdown ATX headings (``#`` … ``######``) in ``text``,
    outside fenced code blocks; HTML text from :func:`html_to_text` marks its headings so too."""
    marks: list[tuple[int, int, str]] = []
    offset, fenced = 0, False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced:
            m = _HEADING.match(stripped)
            if m:
                marks.append((offset, len(m.group(1)), m.group(2)))
        offset += len(line)
    return marks


def heading_path(marks: Sequence[tuple[int, int, str]], at: int) -> list[str]:
    """The headings a position lies under, outermost first (``["Guide", "Install"]``)."""
    path: list[tuple[int, str]] = []
    for offset, level, title in marks:
        if offset > at:
            break
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title))
    return [t for _, t in path]


def _markdown_title(text: str) -> str | None:
    for line in text.splitlines()[:50]:
        if line.startswith("# "):
            return line[2:].strip() or None
    return None


def _read_jsonl(path: Path, text: str, skips: Skips) -> Iterator[Doc]:
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            skips.append((where, f"invalid JSON ({exc.msg})"))
            continue
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            skips.append((where, "no string field 'text'"))
            continue
        meta = {k: v for k, v in record.items() if k != "text"}
        yield Doc(record["text"], str(lineno), meta)


def _read_pdf(data: bytes) -> list[Doc]:
    try:
        import pypdf
    except ImportError as exc:
        raise ReadError("PDF needs the pdf extra: pip install 'qdrant-sift[pdf]' (pypdf)") from exc
    import io
    import logging

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # malformed-but-readable warnings
    try:
        pdf = pypdf.PdfReader(io.BytesIO(data))
        if pdf.is_encrypted:
            raise ReadError("encrypted PDF")
        meta = pdf.metadata
        title = str(meta.title).strip() if meta is not None and meta.title else None
        docs = []
        for number, page in enumerate(pdf.pages, 1):
            text = page.extract_text() or ""
            m: dict[str, Any] = {"page": number}
            if title:
                m["title"] = title
            docs.append(Doc(text, f"p{number}", m))
    except ReadError:
        raise
    except Exception as exc:  # pypdf raises many types on damaged files
        raise ReadError(f"unreadable PDF ({type(exc).__name__}: {exc})") from exc
    if not any(d.text.strip() for d in docs):
        raise ReadError("PDF has no extractable text (scanned images?)")
    return docs
