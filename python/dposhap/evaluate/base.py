"""The :class:`Utility` protocol and the registry of the utilities a run can be valued under.

A utility turns a batch of coalitions (a bool matrix ``[b, n]``, one column per source) into
values ``[b, k]``, one column per objective. Each kind of utility is registered with
:func:`register_utility` as a :class:`UtilityKind`: a name, a help line, a settings dataclass
(whose fields, with their help text, are also the command line's flags) and a ``build``
function that makes the utility of an opened run. :func:`dposhap.valuation.value_run` and the
CLI find utilities only through this registry; adding one is a new module, not edits in five.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from ..registry import Registry

if TYPE_CHECKING:
    from ..core import MarginGame
    from ..run import Run

__all__ = [
    "BuildContext",
    "Utility",
    "UtilityKind",
    "get_utility",
    "register_utility",
    "utility_names",
]


@runtime_checkable
class Utility(Protocol):
    """What the valuation needs of a utility.

    Attributes
    ----------
    players
        The sources, in column order of the coalition matrix.
    objectives
        The objectives, in column order of the values.
    cache_config
        Everything the values depend on, as JSON-able data: the key of its rows in the run's
        SQLite cache. None: the utility is cheap and not cached (margin games).
    batch_size
        Coalitions per call that suit it (None: the estimator's default).
    """

    @property
    def players(self) -> tuple[str, ...]: ...

    @property
    def objectives(self) -> tuple[str, ...]: ...

    @property
    def cache_config(self) -> dict[str, Any] | None: ...

    @property
    def batch_size(self) -> int | None: ...

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        """Values of a batch of coalitions, bool ``[b, n]`` -> float64 ``[b, k]`` (``[b]`` when k = 1)."""
        ...

    def native_game(self) -> MarginGame | None:
        """A game the Rust engine evaluates without calling Python per coalition, or None."""
        ...

    def describe(self) -> dict[str, Any]:
        """Its configuration as ``values.json`` records it (the cache configuration when it has one)."""
        ...


@dataclass(frozen=True)
class BuildContext:
    """What every utility's ``build`` gets besides the run and its settings.

    Attributes
    ----------
    device
        ``"cpu"`` or ``"cuda"`` (resolved).
    seed
        The valuation's seed (decoding noise of generation utilities).
    progress
        Whether long steps may show progress bars.
    pool
        The Ray evaluation pool (:class:`dposhap.cluster.EvaluationPool`) when the valuation runs on
        a cluster, else None; only a kind whose ``pooled`` is ``"build"`` sees it (see :class:`UtilityKind`).
    models
        Loaded models (:class:`dposhap.run.RunModels`) to evaluate instead of the run's own adapters, on
        the run's evaluation sets: the adapters retrained by ``dposhap select --verify``. The utility is
        then built without the run's caches (its ``cache_config`` is None). None: the run's adapters.
    """

    device: str
    seed: int = 0
    progress: bool = True
    pool: Any = None
    models: Any = None


@dataclass(frozen=True)
class UtilityKind:
    """A registered kind of utility.

    Attributes
    ----------
    name
        What ``--utility`` and ``value_run(..., utility=name)`` call it.
    help
        One line: what a coalition's utility is.
    settings_type
        A dataclass of its settings (fields declared with :func:`dposhap.settings.setting`);
        ``settings_type()`` must be valid defaults.
    build
        ``build(run, settings, context) -> Utility``.
    pooled
        How a valuation on a Ray cluster runs it: ``"actors"`` (every actor of the pool builds the
        utility once and evaluates batches of coalitions; the driver holds a proxy), or ``"build"``
        (the utility is built on the driver, which may hand its one-off work, such as the margins
        matrix, to ``context.pool``).
    """

    name: str
    help: str
    settings_type: type
    build: Callable[[Run, Any, BuildContext], Utility]
    pooled: Literal["actors", "build"] = "actors"


_REGISTRY: Registry[UtilityKind] = Registry("utility")


def register_utility(kind: UtilityKind) -> UtilityKind:
    """Add a kind of utility to the registry (a later registration of the same name replaces it)."""
    return _REGISTRY.register(kind.name, kind)


def get_utility(name: str) -> UtilityKind:
    """The registered utility ``name``.

    Raises
    ------
    InvalidArgumentError
        No utility has this name.
    """
    return _REGISTRY.get(name)


def utility_names() -> list[str]:
    """The registered utility names, in registration order."""
    return _REGISTRY.names()
