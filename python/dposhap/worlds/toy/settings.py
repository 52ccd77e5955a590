"""The ``[toy]`` table of a run's config: which planted sources to build, how many pairs, the seed."""

from __future__ import annotations

from dataclasses import dataclass

from ...settings import Section, setting
from ..copies import check_copies_setting, copies_setting
from .sources import DEFAULT_SOURCES

__all__ = ["ToySettings"]


@dataclass
class ToySettings(Section):
    """The built-in toy world: used when model.base = "toy" (its sources unless [data] names others)."""

    TABLE = "toy"
    sources: list[str] = setting("which planted sources to build", default_factory=lambda: list(DEFAULT_SOURCES))
    pairs_per_source: int = setting("preference pairs per source (per copy with copies > 1)", default=256)
    copies: int = copies_setting()
    seed: int = setting("seed of the language, the pretraining and the pairs", default=0)

    def __post_init__(self) -> None:
        self.check_positive("pairs_per_source")
        check_copies_setting(self, self.copies)
        if not self.sources:
            self.fail("sources", "is empty: name at least one toy source")
