"""Arms: the ways of choosing N training chunks that one evaluation compares.

An arm is written as a spec string, ``strategy[:option=value,...]``, and the canonical string is
its name in the results, so a sweep adds arms to a running evaluation without renaming old rows:

- ``nearest`` — plain nearest-neighbour search of N in the store (what a user runs instead);
  ``nearest:kernel=model-mean`` re-ranks the K candidates by similarity in the kernel instead (a
  control: is a kernel's gain SIFT's, or just a better relevance order?);
- ``sift:lam=1,unique,k=50,kernel=model-mean,alpha=0.2`` — SIFT through the reranker interface;
- ``mmr:diversity=0.5`` — our MMR over the K candidates; ``random`` — N of the K at random;
- ``qdrant-mmr:diversity=0.5`` — the engine's own MMR query (qdrant-client local mode).

Options left out take the reranker's own defaults (one source of truth for them); ``k`` is how
many of the recalled candidates the arm sees (recall order, best first), ``kernel`` which
embedding SIFT's kernel uses (``recall``: the collection's vectors; ``model-mean`` /
``model-last``: the language model's last layer, see ``ModelEmbedder``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qdrant_sift.errors import ConfigError

__all__ = ["ARM_KERNELS", "ARM_STRATEGIES", "Arm", "parse_arms"]

ARM_STRATEGIES: tuple[str, ...] = ("nearest", "sift", "mmr", "qdrant-mmr", "random")
ARM_KERNELS: tuple[str, ...] = ("recall", "model-mean", "model-last")
_FLOATS = ("lam", "alpha", "diversity")


@dataclass(frozen=True)
class Arm:
    """One selection rule; ``name`` is the canonical spec (stable across runs)."""

    strategy: str
    lam: float | None = None
    alpha: float | None = None
    unique: bool = False
    k: int | None = None
    kernel: str = "recall"
    diversity: float | None = None

    def __post_init__(self) -> None:
        if self.strategy not in ARM_STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose from {ARM_STRATEGIES}")
        if self.kernel not in ARM_KERNELS:
            raise ConfigError(f"unknown kernel {self.kernel!r}; choose from {ARM_KERNELS}")
        for name in _FLOATS:
            value = getattr(self, name)
            if value is not None and not value > 0 and name != "diversity":
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if self.diversity is not None and not 0 <= self.diversity <= 1:
            raise ConfigError(f"diversity must be in [0, 1], got {self.diversity!r}")
        if self.k is not None and self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if self.strategy != "sift" and (self.lam is not None or self.unique):
            raise ConfigError(f"lam and unique apply to sift only, not {self.strategy!r}")
        if self.kernel != "recall" and self.strategy not in ("sift", "nearest", "mmr"):
            raise ConfigError(f"kernel applies to sift, nearest and mmr, not {self.strategy!r}")
        if self.alpha is not None and self.strategy != "sift":
            raise ConfigError("alpha (adaptive stopping) applies to sift only")
        if self.diversity is not None and self.strategy not in ("mmr", "qdrant-mmr"):
            raise ConfigError("diversity applies to mmr and qdrant-mmr only")

    @property
    def name(self) -> str:
        opts = []
        for key in ("lam", "alpha", "diversity"):
            value = getattr(self, key)
            if value is not None:
                opts.append(f"{key}={value:g}")
        if self.unique:
            opts.append("unique")
        if self.k is not None:
            opts.append(f"k={self.k}")
        if self.kernel != "recall":
            opts.append(f"kernel={self.kernel}")
        return self.strategy + (":" + ",".join(opts) if opts else "")

    @property
    def adaptive(self) -> bool:
        return self.alpha is not None

    @property
    def host(self) -> Arm:
        """The non-adaptive arm whose pick order this one cuts (itself if not adaptive)."""
        return Arm(self.strategy, self.lam, None, self.unique, self.k, self.kernel, self.diversity)

    def select_options(self) -> dict[str, Any]:
        """Keyword options for ``reranker.select``; defaults are the reranker's."""
        opts: dict[str, Any] = {"strategy": self.strategy}
        for key in ("lam", "alpha", "diversity"):
            value = getattr(self, key)
            if value is not None:
                opts[key] = value
        if self.unique:
            opts["unique"] = True
        return opts

    @classmethod
    def parse(cls, spec: str) -> Arm:
        """``"sift:lam=1,unique"`` -> ``Arm("sift", lam=1.0, unique=True)``."""
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigError(f"an arm spec must be a non-empty string, got {spec!r}")
        strategy, _, rest = spec.strip().partition(":")
        fields: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = (x.strip() for x in part.partition("="))
            try:
                if key == "unique" and not eq:
                    fields["unique"] = True
                elif key in _FLOATS and eq:
                    fields[key] = float(value)
                elif key == "k" and eq:
                    fields["k"] = int(value)
                elif key == "kernel" and eq:
                    fields["kernel"] = value
                else:
                    raise ValueError(part)
            except ValueError as exc:
                raise ConfigError(
                    f"bad option {part!r} in arm {spec!r}; options: lam=, alpha=, diversity=, "
                    "k=, kernel=, unique"
                ) from exc
        return cls(strategy.strip(), **fields)


def parse_arms(specs: Any) -> tuple[Arm, ...]:
    """Arms from spec strings (or :class:`Arm`), duplicates dropped, order kept."""
    if isinstance(specs, str):
        specs = [specs]
    arms = [s if isinstance(s, Arm) else Arm.parse(s) for s in specs]
    if not arms:
        raise ConfigError("at least one arm is needed")
    return tuple({a.name: a for a in arms}.values())
