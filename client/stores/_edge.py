"""EdgeStore: Qdrant Edge, the real Qdrant engine embedded in this process, in a folder.

Search is exact brute force until :meth:`EdgeStore.optimize` builds HNSW (an explicit, blocking
call); after that recall uses ``hnsw_ef = max(HNSW_EF_FACTOR·k, HNSW_EF_MIN)`` (Qdrant's own
rule) unless told otherwise (a both-directions recall first probes −q's best 16 at
``hnsw_ef = 16`` in the same batch, and searches −q's top k at ``max(k, 64)``,
``OPPOSITE_EF_FACTOR``, only when the probe cannot rule out more −q hits; see
``opposite_probe_settles``).
One process owns a folder at a time: a second one gets :class:`StoreLockedError`.

Every shard carries a manifest (point count, id-set digest, file fingerprints at a clean close;
see :mod:`._integrity` for what that does and does not protect). A shard that does not match it
raises :class:`StoreCorruptedError` on every use except :meth:`EdgeStore.drop`, which is the
repair (then re-ingest). Every engine exception reaches the caller as a ``StoreError``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdrant_sift.errors import (
    CollectionNotFoundError,
    ConfigError,
    InvalidInputError,
    QdrantSiftError,
    StoreCorruptedError,
    StoreError,
    StoreLockedError,
)

from ._base import (
    OPPOSITE_PROBE_EF,
    Hits,
    PointId,
    StoredPoint,
    VectorStore,
    _rows,
    normalize_id,
)
from ._filters import Filter, Match, Range, as_filter, to_edge
from ._integrity import (
    IdState,
    ShardManifest,
    fingerprint,
    fingerprint_mismatch,
    probe_load,
)
from ._layout import KERNEL_VECTOR, RECALL_VECTOR, Layout, read_layout
from ._names import shard_path, validate_collection_name
from ._qdrant import query_ef
from ._vcache import VectorCache

__all__ = ["EdgeStore"]

_DIST = {"cosine": "Cosine", "dot": "Dot", "euclid": "Euclid", "manhattan": "Manhattan"}
#: Cluster-only parameters: accepted (so one code path serves a cluster) and ignored here.
_CLUSTER_ONLY = frozenset(
    {"shard_number", "replication_factor", "write_consistency_factor", "sharding_method",
     "init_from", "timeout"}
)  # fmt: skip


#: Sources kept in the manifest for an exact repair; beyond this the list says it is partial.
_MAX_SOURCES = 10_000
_JSONL_LINE = re.compile(r"^(.+\.jsonl):\d+$")


def _edge_id(pid: PointId) -> Any:
    return pid if isinstance(pid, int) else uuid.UUID(pid)


class EdgeStore(VectorStore):
    """A collection as an Edge shard in ``path/collection`` (created on :meth:`create`).

    ``probe``: load a shard that was not closed cleanly (or has no manifest) in a subprocess
    first, so an engine abort on damaged files kills the probe, not this process (about 0.2 s,
    only after a crash). ``None`` reads ``QDRANT_SIFT_EDGE_PROBE`` (default on; ``0`` = off).

    ``vector_cache``: keep a float32 copy of every stored vector (n × d × 4 bytes, built on the
    first recall, kept in step with every write, saved beside the shard at a clean close and
    mapped back on the next open; see :mod:`._vcache`), so recall reads ids, scores and payloads
    from the engine and gathers vectors with one numpy take instead of converting Python float
    lists (the binding's only way to hand vectors out: ~20 µs a 384-d vector, four times the
    HNSW search of K = 200 at 100k points). ``None`` reads ``QDRANT_SIFT_EDGE_VECTOR_CACHE``
    (default on; ``0`` = off, for a collection whose vectors should not be held twice).
    """

    #: ``hnsw_ef`` of a both-directions recall's −q probe (see ``OPPOSITE_PROBE_EF``)
    opposite_probe_ef = OPPOSITE_PROBE_EF

    def __init__(
        self,
        path: str | os.PathLike[str],
        collection: str = "docs",
        *,
        probe: bool | None = None,
        vector_cache: bool | None = None,
    ) -> None:
        validate_collection_name(collection)
        shard_path(path, collection)  # refuse before creating anything
        self.collection = collection
        self.root = Path(path).expanduser().resolve()
        self._shard: Any = None
        self._layout: Layout | None = None
        self._lock_fd: int | None = None
        self._damage: StoreCorruptedError | None = None
        self._state = IdState()
        self._sources: list[str] = []
        self._write_lock = threading.RLock()
        if probe is None:
            probe = os.environ.get("QDRANT_SIFT_EDGE_PROBE", "1").strip().lower() not in (
                "0", "false", "no", "off"
            )  # fmt: skip
        self._probe = probe
        if vector_cache is None:
            env = os.environ.get("QDRANT_SIFT_EDGE_VECTOR_CACHE", "1").strip().lower()
            vector_cache = env not in ("0", "false", "no", "off")
        self._vcache_on = bool(vector_cache)
        self._vcache: VectorCache | None = None
        self._vcache_saved: str | None = None  # token of saved files that match the shard
        self._vcache_token: str | None = None  # token of the files the live copy was mapped from
        self._vcache_lock = threading.Lock()  # short: puts, drops and takes of in-memory rows
        self.root.mkdir(parents=True, exist_ok=True)
        self.shard_dir = shard_path(self.root, collection)
        self._lock()
        try:
            if (self.shard_dir / "edge_config.json").exists():
                self._open()
            elif (self.shard_dir / ShardManifest.name()).exists():
                self._damaged("edge_config.json is missing")
        except BaseException:
            self._unlock()
            raise

    # --- locking and opening -----------------------------------------------------------------

    def _lock(self) -> None:
        """An advisory lock beside the shard: Edge's own WAL lock gives an unhelpful message."""
        lock_path = self.root / f".{self.collection}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreLockedError(
                f"{self.shard_dir} is open in another process (or another EdgeStore here); "
                "close it there, or serve the collection from a Qdrant server for shared access"
            ) from exc
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextlib.contextmanager
    def _engine(self, what: str) -> Iterator[None]:
        """Every engine exception becomes a ``StoreError`` naming the shard, chained."""
        try:
            yield
        except QdrantSiftError:
            raise
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise StoreLockedError(f"{self.shard_dir} is open in another process") from exc
            raise StoreError(f"Edge {what} failed on {self.shard_dir}: {exc}") from exc

    def _damaged(self, what: str, cause: BaseException | None = None) -> None:
        """Record that the shard is damaged; every use but drop/close raises it from now on."""
        self._vcache = None
        self._vcache_saved = self._vcache_token = None
        if self._shard is not None:
            with contextlib.suppress(Exception):
                self._shard.close()
            self._shard = None
        sources = tuple(self._sources)
        if sources:
            shown = " ".join(sources[:5]) + (" …" if len(sources) > 5 else "")
            command = (
                f"qdrant-sift ingest {shown} --collection {self.collection} --path {self.root} "
                "--recreate"
            )
            extra = "" if len(sources) <= 5 else f" (all {len(sources)} sources: see the manifest)"
            repair = f"{command}{extra}"
        else:
            repair = (
                f"qdrant-sift ingest SOURCES --collection {self.collection} --path {self.root} "
                "--recreate"
            )
        err = StoreCorruptedError(
            f"Edge shard {self.shard_dir} is damaged: {what}. Its points cannot be trusted. "
            f"Repair: drop it and re-ingest (chunk ids are deterministic, so the same points "
            f"come back): {repair}",
            shard=str(self.shard_dir),
            repair=repair,
            sources=sources,
        )
        if cause is not None:
            err.__cause__ = cause
        self._damage = err

    def _open(self) -> None:
        import qdrant_edge as qe

        try:
            manifest = ShardManifest.read(self.shard_dir)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            self._damaged(f"its manifest cannot be read ({exc})", exc)
            return
        if manifest is not None:
            self._sources = list(manifest.sources)
        # After a clean close the files must be as fingerprinted then: then only the count is
        # checked. Otherwise (a crash, a changed file, no manifest) the shard is first loaded in
        # a subprocess, so an engine abort cannot take this process down, and then verified in
        # full: a write-ahead log replay may legitimately repair a changed file.
        suspect = None
        if manifest is not None and manifest.clean and manifest.files:
            try:
                suspect = fingerprint_mismatch(self.shard_dir, manifest.files)
            except OSError as exc:
                suspect = f"its files cannot be read ({exc})"
        fast = manifest is not None and manifest.clean and bool(manifest.files) and not suspect
        if not fast:
            if self._probe:
                died = probe_load(self.shard_dir)
                if died:
                    self._damaged(died + (f"; {suspect}" if suspect else ""))
                    return
            elif suspect:  # no probe: refuse rather than risk an engine abort in-process
                self._damaged(suspect)
                return
        try:
            self._shard = qe.EdgeShard.load(str(self.shard_dir))
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise StoreLockedError(f"{self.shard_dir} is open in another process") from exc
            self._damaged(f"the engine cannot load it ({exc})", exc)
            return
        try:
            if manifest is None:  # written before manifests existed: adopt it as it is
                self._state = self._scan()
            elif fast:
                count = self._count()
                if count != manifest.state.points:
                    self._damaged(f"it holds {count} points, {manifest.state.points} were written")
                    return
                self._state = manifest.state
            else:
                actual = self._scan()
                allowed = [manifest.state] + ([manifest.pending] if manifest.pending else [])
                if actual not in allowed:
                    what = (
                        f"it holds {actual.points} points, {manifest.state.points} were written"
                        if actual.points != manifest.state.points
                        else f"it holds {actual.points} points as written, but not the same ids"
                    )
                    self._damaged(what + (f"; {suspect}" if suspect else ""))
                    return
                self._state = actual
            if fast and manifest is not None and manifest.vcache:
                self._vcache_saved = manifest.vcache
            else:  # a copy saved before a crash (or by no clean close) would only be refused
                VectorCache.discard(self.shard_dir)
            self._write_manifest()  # open: dirty until a clean close
        except StoreError as exc:
            self._damaged(f"reading it failed ({exc})", exc)

    def _scan(self) -> IdState:
        """The id state of the open shard, read from the engine (a scroll over ids only)."""
        import qdrant_edge as qe

        shard = self._shard
        ids: list[PointId] = []
        offset: Any = None
        with self._engine("scan"):
            while True:
                recs, offset = shard.scroll(
                    qe.ScrollRequest(
                        offset=offset, limit=10_000, with_payload=False, with_vector=False
                    )
                )
                ids.extend(normalize_id(r.id) for r in recs)
                if offset is None:
                    break
        return IdState.of(ids)

    def _count(self) -> int:
        import qdrant_edge as qe

        with self._engine("count"):
            return int(self._shard.count(qe.CountRequest(exact=True)))

    def _write_manifest(
        self,
        pending: IdState | None = None,
        *,
        clean: bool = False,
        files: Any = None,
        vcache: str | None = None,
    ) -> None:
        ShardManifest(
            state=self._state,
            pending=pending,
            clean=clean,
            files=files or {},
            sources=self._sources,
            vcache=vcache,
        ).write(self.shard_dir, durable=clean)

    def _require(self) -> Any:
        if self._lock_fd is None:
            raise StoreError(f"{self!r} is closed")
        if self._damage is not None:
            raise self._damage
        if self._shard is None:
            raise CollectionNotFoundError(
                f"no collection {self.collection!r} in {self.root}; create it or ingest first"
            )
        return self._shard

    # --- metadata ----------------------------------------------------------------------------

    def exists(self) -> bool:
        if self._damage is not None:
            raise self._damage
        return self._shard is not None

    def _load_layout(self) -> Layout:
        if self._layout is None:
            self._require()
            try:
                cfg = json.loads((self.shard_dir / "edge_config.json").read_text())
                vecs = {n: (int(v["size"]), str(v["distance"])) for n, v in cfg["vectors"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise StoreError(f"cannot read {self.shard_dir}/edge_config.json: {exc}") from exc
            self._layout = read_layout(self.collection, vecs, None)
        return self._layout

    @property
    def dim(self) -> int:
        return self._load_layout().dim

    @property
    def distance(self) -> str:
        return self._load_layout().distance

    @property
    def kernel_dim(self) -> int | None:
        return self._load_layout().kernel_dim

    @property
    def indexed(self) -> bool:
        """Whether an HNSW index exists (after :meth:`optimize` on enough data)."""
        shard = self._require()
        with self._engine("info"):
            return bool(shard.info().indexed_vectors_count)

    # --- primitives --------------------------------------------------------------------------

    def _create(
        self, dim: int, distance: str, params: dict[str, Any], kernel_dim: int | None
    ) -> None:
        import qdrant_edge as qe

        if self._lock_fd is None:
            raise StoreError(f"{self!r} is closed")
        params = {k: v for k, v in params.items() if k not in _CLUSTER_ONLY}
        vp: Any = qe.EdgeVectorParams(size=dim, distance=getattr(qe.Distance, _DIST[distance]))
        if kernel_dim:  # the layout of ._layout: both vectors named
            kp = qe.EdgeVectorParams(size=kernel_dim, distance=qe.Distance.Cosine)
            vp = {RECALL_VECTOR: vp, KERNEL_VECTOR: kp}
        try:
            cfg = qe.EdgeConfig(vectors=vp, **params)
        except TypeError as exc:
            raise ConfigError(f"unknown Edge collection parameter: {exc}") from exc
        with self._engine("create"):
            self._shard = qe.EdgeShard.create(str(self.shard_dir), cfg)
        self._layout = None
        self._vcache = None
        self._state, self._sources = IdState(), []
        self._write_manifest()

    def _known(self, ids: list[PointId]) -> set[PointId]:
        """Which of ``ids`` the shard holds (ids only, no payloads or vectors)."""
        with self._engine("retrieve"):
            recs = self._shard.retrieve(
                [_edge_id(i) for i in ids], with_payload=False, with_vector=False
            )
        return {normalize_id(r.id) for r in recs}

    def _new_sources(self, payloads: list[dict[str, Any]]) -> list[str]:
        if len(self._sources) >= _MAX_SOURCES:
            return []
        have = set(self._sources)
        out: list[str] = []
        for p in payloads:
            src = p.get("source")
            # ingest's source ids are relative (see note_sources); absolute ones are legacy
            if not isinstance(src, str) or not os.path.isabs(src):
                continue
            m = _JSONL_LINE.match(src)
            src = m.group(1) if m else src
            if src not in have:
                have.add(src)
                out.append(src)
        return out[: _MAX_SOURCES - len(self._sources)]

    def note_sources(self, paths: Sequence[str]) -> None:
        self._require()
        have = set(self._sources)
        new = [p for p in dict.fromkeys(paths) if p not in have]
        if new and len(self._sources) < _MAX_SOURCES:
            with self._write_lock:
                self._sources.extend(new[: _MAX_SOURCES - len(self._sources)])
                self._manifest_or_error()

    def _upsert(
        self,
        ids: list[PointId],
        vectors: np.ndarray,
        payloads: list[dict[str, Any]],
        kernels: Any,
    ) -> None:
        import qdrant_edge as qe

        self._require()
        rows = self._load_layout().point_vectors(vectors, kernels)
        points = [qe.Point(_edge_id(i), v, p) for i, v, p in zip(ids, rows, payloads, strict=True)]
        with self._write_lock:
            self._vcache_saved = None  # a saved copy no longer matches (a live one follows below)
            known = self._known(ids)
            after = self._state.add(i for i in dict.fromkeys(ids) if i not in known)
            sources = self._new_sources(payloads)
            self._sources.extend(sources)
            self._apply(qe.UpdateOperation.upsert_points(points), after, "upsert", sources)
            if self._vcache is not None:
                self._cache_read_back(ids)

    def _apply(self, operation: Any, after: IdState, what: str, sources: list[str]) -> None:
        """Record ``after`` as pending, apply ``operation``, then record ``after`` as written.

        A crash between the two manifest writes leaves both states acceptable on the next open;
        a crash after the second makes a lost write (a deleted log, say) detectable.
        """
        changed = after != self._state or bool(sources)
        if changed:
            self._manifest_or_error(pending=after)
        try:
            with self._engine(what):
                self._shard.update(operation)
        except StoreError:
            self._vcache = None  # rebuilt from the shard on the next recall
            with contextlib.suppress(StoreError, OSError):
                self._state = self._scan()  # whatever part of the write the engine kept
                self._write_manifest()
            raise
        self._state = after
        if changed:
            self._manifest_or_error()

    def _manifest_or_error(self, pending: IdState | None = None) -> None:
        try:
            self._write_manifest(pending=pending)
        except OSError as exc:
            raise StoreError(f"cannot write the manifest of {self.shard_dir}: {exc}") from exc

    def _native_filter(self, filter: Any) -> Any:
        if filter is None:
            return None
        if isinstance(filter, (Filter, Match, Range, dict)):
            ours = as_filter(filter)
            assert ours is not None  # filter is not None here
            return to_edge(ours)
        import qdrant_edge as qe

        if isinstance(filter, qe.Filter):
            return filter
        raise InvalidInputError(
            f"EdgeStore takes our Filter, a dict or qdrant_edge.Filter, not {type(filter).__name__}"
        )

    def _search(
        self,
        queries: list[np.ndarray],
        k: int,
        filter: Any,
        params: dict[str, Any],
        kernel: bool,
        vectors: Sequence[bool] | None = None,
        limits: Sequence[int] | None = None,
        with_payload: bool = True,
    ) -> list[Hits]:
        import qdrant_edge as qe

        shard = self._require()
        lay = self._load_layout()
        unknown = set(params) - {"hnsw_ef", "exact"}
        if unknown:
            raise ConfigError(f"unknown search parameters {sorted(unknown)} (use hnsw_ef, exact)")
        exact = bool(params.get("exact", False))
        flt = self._native_filter(filter)
        rows = [True] * len(queries) if vectors is None else list(vectors)
        tops = [k] * len(queries) if limits is None else list(limits)
        cache = self._cache()
        engine_vectors = lay.with_vector(kernel) if cache is None else False
        reqs = [
            qe.QueryRequest(
                limit=top,
                query=qe.Query.Nearest(q.tolist(), using=lay.using),
                filter=flt,
                params=qe.SearchParams(
                    hnsw_ef=params.get("hnsw_ef") or self._ef(top, full, k), exact=exact
                ),
                with_vector=engine_vectors if full else False,
                with_payload=full and with_payload,
            )
            for q, full, top in zip(queries, rows, tops, strict=True)
        ]
        with self._engine("query"):
            res = shard.query_batch(qe.QueryBatchRequest(reqs))
        out: list[Hits] = []
        for r, full in zip(res, rows, strict=True):
            if full and cache is None:
                out.append(self._hits(r, kernel, payloads=with_payload))
                continue
            ids = [p.id for p in r]
            if not all(type(i) is int for i in ids):  # the engine's ints need no normalising
                ids = [normalize_id(i) for i in ids]
            scores = np.asarray([p.score for p in r], np.float32)
            if not full:
                out.append(Hits(ids, scores, None, []))
            else:
                pls = [p.payload or {} for p in r] if with_payload else [{} for _ in ids]
                out.append(self._cached_hits(ids, scores, pls, kernel, with_payload))
        return out

    def _ef(self, top: int, full: bool, k: int) -> int:
        """Default ``hnsw_ef`` of one query of a batch: the −q probe (ids only, fewer than k
        asked) at ``opposite_probe_ef``, everything else at ``default_ef``."""
        return query_ef(top, full, k, self.opposite_probe_ef)

    def _hits(self, points: Any, kernel: bool, scored: bool = True, payloads: bool = True) -> Hits:
        """Engine points (scored or records) with vectors and payloads as one :class:`Hits`
        (``payloads`` False: empty ones, none were read)."""
        lay = self._load_layout()
        return Hits.build([normalize_id(p.id) for p in points],
                          [p.score for p in points] if scored else [0.0] * len(points),
                          [lay.recall_of(p.vector) for p in points],
                          [p.payload or {} for p in points] if payloads else [{} for _ in points],
                          lay.dim,
                          [lay.kernel_of(p.vector, p.id) for p in points] if kernel else None,
                          lay.kernel_dim)  # fmt: skip

    def _cached_hits(
        self,
        ids: list[PointId],
        scores: np.ndarray,
        payloads: list[dict[str, Any]],
        kernel: bool,
        with_payload: bool = True,
    ) -> Hits:
        """Hits with rows from the vector cache; from the engine if a write moved ids meanwhile."""
        cache = self._vcache
        got = None
        if cache is not None:
            with self._vcache_lock:
                got = cache.take(ids)
        if got is not None:
            return Hits(ids, scores, got[0], payloads, got[1] if kernel else None)
        rows = self._engine_fetch(ids, kernel, with_payload)  # ids deleted meanwhile: left out
        where = {pid: r for r, pid in enumerate(ids)}
        keep = [where[pid] for pid in rows.ids]
        return Hits(rows.ids, scores[keep], rows.vectors, rows.payloads, rows.kernel_vectors)

    def _fetch(self, ids: list[PointId], with_kernel: bool, with_payload: bool = True) -> Hits:
        if self._cache() is None:
            return self._engine_fetch(ids, with_kernel, with_payload)
        shard = self._require()
        with self._engine("retrieve"):
            recs = shard.retrieve(
                [_edge_id(i) for i in ids], with_payload=with_payload, with_vector=False
            )
        by_id = {normalize_id(r.id): r for r in recs}
        held = [i for i in ids if i in by_id]
        zeros = np.zeros(len(held), np.float32)
        pls = [by_id[i].payload or {} for i in held]
        return self._cached_hits(held, zeros, pls, with_kernel, with_payload)

    def _engine_fetch(
        self, ids: list[PointId], with_kernel: bool, with_payload: bool = True
    ) -> Hits:
        shard = self._require()
        lay = self._load_layout()
        with self._engine("retrieve"):
            recs = shard.retrieve(
                [_edge_id(i) for i in ids], with_payload=with_payload,
                with_vector=lay.with_vector(with_kernel),
            )  # fmt: skip
        by_id = {normalize_id(r.id): r for r in recs}
        return self._hits([by_id[i] for i in ids if i in by_id], with_kernel, scored=False)

    # --- the vector cache (vector_cache=True) ------------------------------------------------

    def _cache(self) -> VectorCache | None:
        """The vector cache, built from the shard on first use; None when it is off."""
        if not self._vcache_on:
            return None
        cache = self._vcache
        if cache is None:
            with self._write_lock:  # no write in between: the scan is the shard's state
                if self._vcache is None:
                    self._vcache = self._saved_cache() or self._build_cache()
                cache = self._vcache
        return cache

    #: Rows of a saved copy compared with the engine's when it is mapped back
    _SPOT_CHECK = 8

    def _saved_cache(self) -> VectorCache | None:
        """The copy saved at the last clean close, if it still matches the shard: its token and
        point state, its shape, and a few rows read back from the engine bit for bit."""
        token, self._vcache_saved = self._vcache_saved, None
        if token is None:
            return None
        lay = self._load_layout()
        cache = VectorCache.load(
            self.shard_dir, token, self._state.to_json(), lay.dim, lay.kernel_dim
        )
        if cache is None:
            return None
        ids = cache.sample(self._SPOT_CHECK)
        if ids:
            got_ids, rows, krows = self._engine_rows(ids)
            held = cache.take(got_ids)
            if (
                got_ids != ids
                or held is None
                or not np.array_equal(held[0], rows)
                or (krows is not None and (held[1] is None or not np.array_equal(held[1], krows)))
            ):
                return None
        cache.changed = False
        self._vcache_token = token
        return cache

    def _rows_of(self, recs: Any) -> tuple[list[PointId], np.ndarray, np.ndarray | None]:
        lay = self._load_layout()
        ids = [normalize_id(r.id) for r in recs]
        rows = _rows([lay.recall_of(r.vector) for r in recs], lay.dim)
        krows = None
        if lay.kernel_dim is not None:
            krows = _rows([lay.kernel_of(r.vector, r.id) for r in recs], lay.kernel_dim)
        return ids, rows, krows

    def _build_cache(self) -> VectorCache:
        import qdrant_edge as qe

        shard = self._require()
        lay = self._load_layout()
        cache = VectorCache(lay.dim, lay.kernel_dim)
        want = lay.with_vector(lay.kernel_dim is not None)
        offset: Any = None
        while True:
            with self._engine("scroll"):
                recs, offset = shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=4096, with_payload=False,
                                     with_vector=want)
                )  # fmt: skip
            if recs:
                cache.put(*self._rows_of(recs))
            if offset is None:
                return cache

    def _engine_rows(
        self, ids: Sequence[PointId]
    ) -> tuple[list[PointId], np.ndarray, np.ndarray | None]:
        """The engine's stored rows (recall and, if any, kernel) of ``ids``, as the cache holds
        them; ids the shard does not hold are left out."""
        lay = self._load_layout()
        with self._engine("retrieve"):
            recs = self._shard.retrieve(
                [_edge_id(i) for i in dict.fromkeys(ids)], with_payload=False,
                with_vector=lay.with_vector(lay.kernel_dim is not None),
            )  # fmt: skip
        return self._rows_of(recs)

    def _cache_read_back(self, ids: list[PointId]) -> None:
        """Rows of just-written ids as the engine stores them (never computed here); if that
        read fails the cache is dropped (rebuilt from the shard on the next recall)."""
        try:
            got = self._engine_rows(ids)
        except Exception:
            self._vcache = None
            raise
        cache = self._vcache
        if cache is not None:
            with self._vcache_lock:
                cache.put(*got)

    def retrieve(self, ids: Sequence[PointId], with_vectors: bool = True) -> list[StoredPoint]:
        shard = self._require()
        norm = list(dict.fromkeys(normalize_id(i) for i in ids))
        if not norm:
            return []
        lay = self._load_layout() if with_vectors else None
        with self._engine("retrieve"):
            recs = shard.retrieve(
                [_edge_id(i) for i in norm], with_payload=True,
                with_vector=lay.with_vector(False) if lay else False,
            )  # fmt: skip
        by_id = {normalize_id(r.id): r for r in recs}
        return [
            StoredPoint(
                i,
                np.asarray(lay.recall_of(by_id[i].vector), np.float32) if lay else None,
                by_id[i].payload or {},
            )
            for i in norm
            if i in by_id
        ]

    def delete(self, ids: Sequence[PointId]) -> None:
        import qdrant_edge as qe

        self._require()
        norm = list(dict.fromkeys(normalize_id(i) for i in ids))
        if not norm:
            return
        with self._write_lock:
            self._vcache_saved = None
            known = self._known(norm)
            after = self._state.remove(i for i in norm if i in known)
            op = qe.UpdateOperation.delete_points([_edge_id(i) for i in norm])
            self._apply(op, after, "delete", [])
            if self._vcache is not None:
                with self._vcache_lock:
                    self._vcache.drop(norm)

    def count(self) -> int:
        self._require()
        return self._count()

    def scroll(
        self,
        batch_size: int = 1000,
        with_vectors: bool = False,
        filter: Any = None,
        payload_keys: Sequence[str] | None = None,
    ) -> Iterator[StoredPoint]:
        import qdrant_edge as qe

        shard = self._require()
        lay = self._load_layout() if with_vectors else None
        want = lay.with_vector(False) if lay else False
        flt = self._native_filter(filter)
        payload: Any = True if payload_keys is None else list(payload_keys)
        offset: Any = None
        while True:
            with self._engine("scroll"):
                recs, offset = shard.scroll(
                    qe.ScrollRequest(
                        offset=offset, limit=batch_size, filter=flt, with_payload=payload,
                        with_vector=want,
                    )
                )  # fmt: skip
            for r in recs:
                vec = np.asarray(lay.recall_of(r.vector), np.float32) if lay else None
                yield StoredPoint(normalize_id(r.id), vec, r.payload or {})
            if offset is None:
                return

    def index_payload(self, fields: Sequence[str]) -> None:
        import qdrant_edge as qe

        self._require()
        with self._engine("info"):
            have = set(self._shard.info().payload_schema or {})
        for name in fields:
            if name not in have:
                op = qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword)
                with self._write_lock:
                    self._apply(op, self._state, "payload index", [])

    def optimize(self) -> bool:
        """Build HNSW now (blocking; about a minute per 100k×384 on two cores)."""
        shard = self._require()
        with self._engine("optimize"):
            ran = bool(shard.optimize())
            shard.flush()
        return ran

    def drop(self) -> None:
        """Delete the collection; also the repair for a damaged shard (then re-ingest)."""
        if self._lock_fd is None:
            raise StoreError(f"{self!r} is closed")
        if self._shard is not None:
            with contextlib.suppress(Exception):
                self._shard.close()
            self._shard = None
        folder = shard_path(self.root, self.collection)  # re-checked: never outside the root
        if folder.exists():
            try:
                shutil.rmtree(folder)
            except OSError as exc:
                raise StoreError(f"cannot delete Edge shard {folder}: {exc}") from exc
        self._layout = None
        self._vcache = self._vcache_saved = self._vcache_token = None
        self._damage = None
        self._state, self._sources = IdState(), []

    def flush(self) -> None:
        """Make every acknowledged write durable in the segments (the WAL already has them)."""
        shard = self._require()
        with self._engine("flush"):
            shard.flush()

    def close(self) -> None:
        """Flush, close the shard, fingerprint it in the manifest, release the lock.

        A failed flush or close raises ``StoreError`` (after the lock is released); the
        manifest then stays marked unclean, so the next open verifies the shard in full.
        """
        error: BaseException | None = None
        with self._write_lock:
            cache, saved, mapped = self._vcache, self._vcache_saved, self._vcache_token
            if self._shard is not None:
                try:
                    with self._engine("flush"):
                        self._shard.flush()
                    if self._count() != self._state.points:  # bookkeeping drifted: recount
                        self._state = self._scan()
                except StoreError as exc:
                    error = exc
                try:
                    with self._engine("close"):
                        self._shard.close()
                except StoreError as exc:
                    error = error or exc
                self._shard = None
                self._vcache = self._vcache_saved = self._vcache_token = None
                if error is None:
                    try:
                        token = self._save_cache(cache, saved if cache is None else mapped)
                        self._write_manifest(
                            clean=True, files=fingerprint(self.shard_dir), vcache=token
                        )
                    except OSError as exc:
                        error = StoreError(f"cannot write the manifest of {self.shard_dir}: {exc}")
            self._unlock()
        if error is not None:
            raise StoreError(
                f"closing {self.shard_dir} failed: {error}; acknowledged writes are in the "
                "write-ahead log and are replayed (and verified) on the next open"
            ) from error

    def _save_cache(self, cache: VectorCache | None, saved: str | None) -> str | None:
        """Save the vector cache for the next open (at a clean close); its token, or None.

        ``saved``: the token of files that still match (an unchanged copy mapped back from them,
        or a valid copy never used since the open): they stay as they are. A copy that cannot
        be written is not an error of the close: the next open rebuilds it.
        """
        if cache is None or not cache.changed:
            if saved is None:
                VectorCache.discard(self.shard_dir)
            return saved
        token = uuid.uuid4().hex
        try:
            cache.save(self.shard_dir, token, self._state.to_json())
        except OSError:
            VectorCache.discard(self.shard_dir)
            return None
        return token

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
