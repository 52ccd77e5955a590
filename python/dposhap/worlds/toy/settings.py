"""The ``[toy]`` table of a run's config: which planted sources to build, how many pairs, the seed."""

from __future__ import annotations

from dataclasses import dataclass

from ...settings import Section, setting
from .sources import DEFAULT_SOURCES, MAX_COPIES

__all__ = ["ToySettings"]


@dataclass
class ToySettings(Section):
    """The built-in toy world: used when model.base = "toy" (its sources unless [data] names others)."""

    TABLE = "toy"
    sources: list[str] = setting("which planted sources to build", default_factory=lambda: list(DEFAULT_SOURCES))
    pairs_per_source: int = setting("preference pairs per source (per copy with copies > 1)", default=256)
    copies: int = setting(
        "copies of each kind, each from its own random stream, named kind-01, kind-02, ... "
        "(64 sources: 4 kinds x 16 copies); 1 keeps the kinds' own names",
        default=1,
    )
    seed: int = setting("seed of the language, the pretraining and the pairs", default=0)

    def __post_init__(self) -> None:
        self.check_positive("pairs_per_source")
        if isinstance(self.copies, bool) or not isinstance(self.copies, int) or not 1 <= self.copies <= MAX_COPIES:
            self.fail("copies", f"must be an integer from 1 to {MAX_COPIES}, got {self.copies!r}")
        if not self.sources:
            self.fail("sources", "is empty: name at least one toy source")
