"""The ``[english]`` table of a run's config: the base model, which planted sources, how many pairs, the seed."""

from __future__ import annotations

from dataclasses import dataclass

from ...settings import Section, setting
from ..copies import check_copies_setting, copies_setting
from .sources import DEFAULT_SOURCES, SOURCE_KINDS

__all__ = ["EnglishSettings"]


@dataclass
class EnglishSettings(Section):
    """The built-in English world: used when model.base = "english" (its sources unless [data] names others)."""

    TABLE = "english"
    sources: list[str] = setting(
        f"which planted sources to build ({', '.join(SOURCE_KINDS)})", default_factory=lambda: list(DEFAULT_SOURCES)
    )
    pairs_per_source: int = setting("preference pairs per source (per copy with copies > 1)", default=160)
    copies: int = copies_setting()
    seed: int = setting("seed of the held-out split and of every source's pairs", default=0)
    model: str = setting(
        "the base model: an instruct model with a chat template (a local folder, a hub id, or a packaged name)",
        default="smollm2-135m-instruct",
    )

    def __post_init__(self) -> None:
        self.check_positive("pairs_per_source")
        check_copies_setting(self, self.copies)
        if self.seed < 0:
            self.fail("seed", f"must be >= 0, got {self.seed!r}")
        if not self.sources:
            self.fail("sources", "is empty: name at least one English source")
        unknown = [s for s in self.sources if s not in SOURCE_KINDS]
        if unknown:
            self.fail(
                "sources", f"names unknown source(s) {unknown}: the English sources are {', '.join(SOURCE_KINDS)}"
            )
        if len(set(self.sources)) != len(self.sources):
            self.fail("sources", f"names a source twice: {self.sources}")
        if not self.model.strip():
            self.fail("model", "is empty: give the base model (a local folder or a hub id)")
