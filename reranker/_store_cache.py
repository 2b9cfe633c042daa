"""The LRU-bounded cache of open stores behind the gRPC service's Recall (and RerankTexts'
stored vectors): a store is opened on first use, at most ``max_open`` stay open between calls
(least recently used closed first, once no call uses it), and a store whose collection turns
out not to exist is closed and forgotten, so unknown names leave nothing open.

Apart from :mod:`._service` (the RPCs and their envelope), which keeps the policy: whether
Recall has a store factory at all and which collection names may be opened.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from qdrant_sift import errors

__all__ = ["StoreCache"]

log = logging.getLogger("qdrant_sift.reranker.service")


class _OpenStore:
    __slots__ = ("dropped", "store", "users")

    def __init__(self, store: Any) -> None:
        self.store, self.users, self.dropped = store, 0, False


class StoreCache:
    """Open stores by collection name, at most ``max_open`` kept between calls."""

    def __init__(self, max_open: int) -> None:
        self._max_open = max(1, int(max_open))
        self._stores: OrderedDict[str, _OpenStore] = OrderedDict()
        self._stores_lock = threading.Condition()
        self._closing: set[str] = set()  # evicted, still closing: not to be reopened yet

    @contextlib.contextmanager
    def open(self, collection: str, factory: Callable[[str], Any]) -> Iterator[Any]:
        """The open store of ``collection`` for the duration of the block (``factory`` opens it
        when it is not open). A collection that turns out not to exist is closed and forgotten;
        an evicted store is closed once no call uses it any more.
        """
        with self._stores_lock:
            # An embedded shard evicted by another call may still be closing; opening it again
            # before that close ends would find it locked (StoreLockedError).
            self._stores_lock.wait_for(lambda: collection not in self._closing)
            entry = self._stores.get(collection)
            if entry is None:
                entry = _OpenStore(factory(collection))  # may raise NOT_FOUND
                self._stores[collection] = entry
            self._stores.move_to_end(collection)
            entry.users += 1
            to_close = self._evict_idle_locked()
        self._close_evicted(to_close)
        try:
            yield entry.store
        except errors.CollectionNotFoundError:
            entry.dropped = True
            raise
        finally:
            with self._stores_lock:
                entry.users -= 1
                to_close = {}
                if entry.dropped and entry.users == 0:
                    if self._stores.get(collection) is entry:
                        del self._stores[collection]
                    to_close[collection] = entry.store
                    self._closing.add(collection)
                # Stores in use when others were opened could not be evicted then; the last
                # call out of an over-full cache evicts them now, so the bound holds between calls.
                to_close.update(self._evict_idle_locked())
            self._close_evicted(to_close)

    def _evict_idle_locked(self) -> dict[str, Any]:
        """Pop the least recently used stores no call uses until at most ``max_open`` stay open
        (stores in use stay: closing one under a call would break it). Caller holds the lock.
        """
        evicted: dict[str, Any] = {}
        for name in [k for k, e in self._stores.items() if e.users == 0]:
            if len(self._stores) <= self._max_open:
                break
            evicted[name] = self._stores.pop(name).store
        self._closing.update(evicted)
        return evicted

    def _close_evicted(self, stores: dict[str, Any]) -> None:
        if stores:
            try:
                self._close_all(list(stores.values()))
            finally:
                with self._stores_lock:
                    self._closing.difference_update(stores)
                    self._stores_lock.notify_all()

    @staticmethod
    def _close_all(stores: list[Any]) -> None:
        for store in stores:
            try:
                store.close()
            except Exception:  # closing is best effort
                log.warning("closing a store failed", exc_info=True)

    def open_stores(self) -> list[str]:
        """Names of the collections whose stores are open now (least recently used first)."""
        with self._stores_lock:
            return list(self._stores)

    def close(self) -> None:
        with self._stores_lock:
            stores = [e.store for e in self._stores.values()]
            self._stores.clear()
        self._close_all(stores)
