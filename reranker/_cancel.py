"""Cooperative cancellation of a selection: a check the greedy loops call between picks.

The gRPC servicer runs each call inside :func:`cancel_scope` with a check that is true once the
client went away, the call's deadline passed, or the server stopped waiting (shutdown after
``--grace``). The engines read the check once per selection with :func:`current_check` and call
it between picks and between chunks of a batch, so a stopped call gives its CPU back within one
pick instead of running to the end. Outside a scope the check is ``None``: in-process callers pay
nothing and never see :class:`~qdrant_sift.errors.SelectionCancelledError`.

A context variable (not a keyword argument) carries the check, so every selector built on these
engines honours it without changing the one public ``select`` signature.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator

from qdrant_sift.errors import SelectionCancelledError

__all__ = ["CallScope", "cancel_scope", "checkpoint", "current_check"]

Check = Callable[[], None]

_CURRENT: contextvars.ContextVar[Check | None] = contextvars.ContextVar(
    "qdrant_sift_cancel_check", default=None
)


class CallScope:
    """Why a call should stop: an event (cancelled, shutdown) or a monotonic deadline.

    ``check()`` raises :class:`SelectionCancelledError` with ``reason`` ``"cancelled"`` or
    ``"deadline"``; it costs one attribute read and one clock read.
    """

    __slots__ = ("_deadline", "cancelled", "reason")

    def __init__(self, timeout: float | None = None) -> None:
        self.cancelled = threading.Event()
        self.reason = "cancelled"
        self._deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)

    def cancel(self, reason: str = "cancelled") -> None:
        if not self.cancelled.is_set():
            self.reason = reason
            self.cancelled.set()

    def expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def check(self) -> None:
        if self.cancelled.is_set():
            raise SelectionCancelledError(f"selection stopped: call {self.reason}", self.reason)
        if self.expired():
            raise SelectionCancelledError("selection stopped: deadline exceeded", "deadline")


@contextlib.contextmanager
def cancel_scope(check: Check) -> Iterator[None]:
    """Run the block with ``check`` as the current cancellation check."""
    token = _CURRENT.set(check)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_check() -> Check | None:
    """The check of the enclosing :func:`cancel_scope`, or None (read once per selection)."""
    return _CURRENT.get()


def checkpoint() -> None:
    """Raise :class:`SelectionCancelledError` if the enclosing scope says stop."""
    check = _CURRENT.get()
    if check is not None:
        check()
