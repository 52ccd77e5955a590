"""Providers of Shapley estimates: dposhap (ours), shapiq 1.8 and pyDVL 0.10.

Every provider has the signature ``run(utility, n, budget, seed) -> Estimate`` where
``utility`` is a :class:`CountingUtility`: every coalition a provider evaluates goes
through it, so the number of evaluations in the tables is the number actually made, not
the number requested.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from _harness import Provider

# The estimators of dposhap measured in the accuracy benchmark. Names that the installed
# dposhap rejects as an unknown method are skipped with a note. "exact" is not listed: it
# enumerates all 2^n coalitions and serves as a cross-check instead.
OUR_METHODS: tuple[str, ...] = (
    "auto",
    "permutation",
    "antithetic",
    "stratified",
    "svarm",
    "regression",
    "kernel",
)


class CountingUtility:
    """Wrap ``v: bool[b, n] -> float[b]`` and count the coalitions evaluated through it.

    Accepts a single coalition ``bool[n]`` too (shapiq passes those) and always returns a
    1-D float64 array. Also accumulates the seconds spent inside ``v`` so that overhead
    can be reported net of the utility's own cost.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], n: int) -> None:
        self.fn = fn
        self.n = n
        self.n_evaluations = 0
        self.n_calls = 0
        self.seconds_inside = 0.0

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        x = np.asarray(coalitions, dtype=bool)
        if x.ndim == 1:
            x = x[None, :]
        t0 = time.perf_counter()
        out = np.asarray(self.fn(x), dtype=np.float64).reshape(-1)
        self.seconds_inside += time.perf_counter() - t0
        self.n_evaluations += x.shape[0]
        self.n_calls += 1
        return out

    def reset(self) -> None:
        """Zero the counters."""
        self.n_evaluations = 0
        self.n_calls = 0
        self.seconds_inside = 0.0


@dataclass
class Estimate:
    """What a provider returns: the values and what it says about itself."""

    values: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# shapiq 1.8


def _shapiq_values(iv: Any, n: int) -> np.ndarray:
    # InteractionValues.get_n_order_values(1) is an [n] array of the singleton values.
    return np.asarray(iv.get_n_order_values(1), dtype=np.float64).reshape(n)


def _shapiq_provider(name: str, config: str, make: Callable[[int, int], Any]) -> Provider:
    def run(utility: CountingUtility, n: int, budget: int, seed: int) -> Estimate:
        approximator = make(n, seed)
        iv = approximator.approximate(budget=budget, game=utility)
        return Estimate(_shapiq_values(iv, n), {"reported_evaluations": iv.estimation_budget})

    return Provider(name=f"shapiq:{name}", library="shapiq", config=config, run=run)


def shapiq_providers() -> list[Provider]:
    """The shapiq Shapley-value approximators compared here, each with its defaults."""
    import shapiq.approximator as sa

    return [
        _shapiq_provider(
            "PermutationSamplingSV",
            "PermutationSamplingSV(n, random_state=seed)",
            lambda n, s: sa.PermutationSamplingSV(n, random_state=s),
        ),
        _shapiq_provider(
            "StratifiedSamplingSV",
            "StratifiedSamplingSV(n, random_state=seed)",
            lambda n, s: sa.StratifiedSamplingSV(n, random_state=s),
        ),
        _shapiq_provider(
            "SVARM", "SVARM(n, index='SV', random_state=seed)", lambda n, s: sa.SVARM(n, index="SV", random_state=s)
        ),
        _shapiq_provider(
            "KernelSHAP",
            "KernelSHAP(n, pairing_trick=True, random_state=seed)",
            lambda n, s: sa.KernelSHAP(n, pairing_trick=True, random_state=s),
        ),
        _shapiq_provider(
            "UnbiasedKernelSHAP",
            "UnbiasedKernelSHAP(n, pairing_trick=True, random_state=seed)",
            lambda n, s: sa.UnbiasedKernelSHAP(n, pairing_trick=True, random_state=s),
        ),
        _shapiq_provider(
            "LeverageSHAP",
            "LeverageSHAP(n, random_state=seed) (paired, deterministic counts)",
            lambda n, s: sa.LeverageSHAP(n, random_state=s),
        ),
        _shapiq_provider(
            "kADDSHAP",
            "kADDSHAP(n, max_order=2, pairing_trick=True, random_state=seed)",
            lambda n, s: sa.kADDSHAP(n, max_order=2, pairing_trick=True, random_state=s),
        ),
        _shapiq_provider("PolySHAP", "PolySHAP(n, random_state=seed)", lambda n, s: sa.PolySHAP(n, random_state=s)),
        _shapiq_provider("OddSHAP", "OddSHAP(n, random_state=seed)", lambda n, s: sa.OddSHAP(n, random_state=s)),
    ]


#: shapiq 1.8 Shapley approximators not measured, and why (stated in the report).
SHAPIQ_NOT_MEASURED = (
    "shapiq `OwenSamplingSV` is not measured: 5.7 s per run at n=40, budget 1200 on this machine "
    "and 9x the MSE of `LeverageSHAP` there (too slow for the grid); `SPEX`, `ProxySPEX`, "
    "`RegressionMSR` and `ShaplEIG` need a proxy model (xgboost/lightgbm) that is not installed."
)


def shapiq_permutation_budget(n: int, n_permutations: int) -> int:
    """Evaluations shapiq's PermutationSamplingSV spends on ``n_permutations`` permutations.

    It evaluates the empty and the grand coalition once, then ``n - 1`` coalitions per
    permutation.
    """
    return n_permutations * (n - 1) + 2


def shapiq_permutation(utility: CountingUtility, n: int, n_permutations: int, seed: int) -> Estimate:
    """shapiq's PermutationSamplingSV run for exactly ``n_permutations`` permutations."""
    import shapiq.approximator as sa

    approximator = sa.PermutationSamplingSV(n, random_state=seed)
    iv = approximator.approximate(budget=shapiq_permutation_budget(n, n_permutations), game=utility)
    return Estimate(_shapiq_values(iv, n), {"reported_evaluations": iv.estimation_budget})


# ---------------------------------------------------------------------------------------
# pyDVL 0.10


class _PydvlAdapter:
    """Build the pyDVL utility for a plain ``v: bool[b, n] -> float[b]``.

    pyDVL's utilities are called with one :class:`~pydvl.valuation.types.Sample` at a time
    (an index and a subset of data indices). The cheapest correct wrapper is a direct
    ``UtilityBase`` subclass that turns the subset into a one-row mask. The value of the
    empty coalition is computed once and then cached (pyDVL's own game utilities return a
    constant for it too); without the cache the permutation samplers would pay one extra
    evaluation per permutation.
    """

    _cls: type | None = None

    @classmethod
    def utility_class(cls) -> type:
        if cls._cls is None:
            from pydvl.valuation.utility.base import UtilityBase

            class MaskUtility(UtilityBase):
                def __init__(self, game: CountingUtility, n: int) -> None:
                    self.game = game
                    self.n = n
                    self.cache: dict[str, float] = {}  # shared by the shallow copies pyDVL makes

                def __call__(self, sample: Any) -> float:
                    if sample is None or len(sample.subset) == 0:
                        if "empty" not in self.cache:
                            self.cache["empty"] = float(self.game(np.zeros((1, self.n), bool))[0])
                        return self.cache["empty"]
                    mask = np.zeros((1, self.n), dtype=bool)
                    mask[0, np.asarray(sample.subset, dtype=np.int64)] = True
                    return float(self.game(mask)[0])

                def __str__(self) -> str:
                    return "MaskUtility"

            cls._cls = MaskUtility
        return cls._cls


def _pydvl_dataset(n: int) -> Any:
    from pydvl.valuation.dataset import Dataset

    return Dataset(np.arange(n, dtype=np.float64).reshape(-1, 1), np.zeros(n))


def _pydvl_budget_stop(utility: CountingUtility, budget: int, reserve: int) -> Any:
    """A pyDVL stopping criterion that fires once fewer than ``reserve`` evaluations remain.

    pyDVL checks the criterion after every batch (one permutation), and a permutation
    costs up to ``reserve = n`` evaluations, so the budget is never exceeded.
    """
    from pydvl.utils.status import Status
    from pydvl.valuation.stopping import StoppingCriterion

    class EvaluationBudget(StoppingCriterion):
        def _check(self, result: Any) -> Status:
            if utility.n_evaluations + reserve > budget:
                self._converged = np.full_like(result.indices, True, dtype=bool)
                return Status.Converged
            self._converged = np.full_like(result.indices, False, dtype=bool)
            return Status.Pending

        def completion(self) -> float:
            return min(1.0, utility.n_evaluations / budget)

        def __str__(self) -> str:
            return f"EvaluationBudget({budget})"

    return EvaluationBudget()


def _pydvl_fit(valuation: Any, n: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        valuation.fit(_pydvl_dataset(n))
    result = valuation.result
    values = np.zeros(n, dtype=np.float64)
    values[np.asarray(result.indices, dtype=np.int64)] = result.values
    return values


def _pydvl_permutation(antithetic: bool) -> Callable[..., Estimate]:
    def run(utility: CountingUtility, n: int, budget: int, seed: int) -> Estimate:
        from pydvl.valuation.methods import ShapleyValuation
        from pydvl.valuation.samplers import AntitheticPermutationSampler, PermutationSampler
        from pydvl.valuation.stopping import MaxSamples

        # With v(empty) cached, a permutation costs n evaluations (plus 1 for v(empty)).
        n_permutations = max(1, (budget - 1) // n)
        if antithetic:
            n_permutations -= n_permutations % 2  # keep the pairs whole
            sampler = AntitheticPermutationSampler(seed=seed)
        else:
            sampler = PermutationSampler(seed=seed)
        u = _PydvlAdapter.utility_class()(utility, n)
        valuation = ShapleyValuation(u, sampler, MaxSamples(sampler, n_permutations), progress=False)
        return Estimate(_pydvl_fit(valuation, n), {"permutations": n_permutations})

    return run


def pydvl_permutation(utility: CountingUtility, n: int, n_permutations: int, seed: int) -> Estimate:
    """pyDVL's PermutationSampler run for exactly ``n_permutations`` permutations."""
    from pydvl.valuation.methods import ShapleyValuation
    from pydvl.valuation.samplers import PermutationSampler
    from pydvl.valuation.stopping import MaxSamples

    sampler = PermutationSampler(seed=seed)
    u = _PydvlAdapter.utility_class()(utility, n)
    valuation = ShapleyValuation(u, sampler, MaxSamples(sampler, n_permutations), progress=False)
    return Estimate(_pydvl_fit(valuation, n), {"permutations": n_permutations})


def _pydvl_tmc(utility: CountingUtility, n: int, budget: int, seed: int) -> Estimate:
    from pydvl.valuation.methods import TMCShapleyValuation
    from pydvl.valuation.samplers import RelativeTruncation

    u = _PydvlAdapter.utility_class()(utility, n)
    # reserve n: one more (untruncated) permutation costs at most n evaluations.
    valuation = TMCShapleyValuation(
        u,
        truncation=RelativeTruncation(rtol=0.01, burn_in_fraction=0.4),
        is_done=_pydvl_budget_stop(utility, budget, reserve=n),
        seed=seed,
        progress=False,
    )
    return Estimate(_pydvl_fit(valuation, n))


def _vrds_evaluations(n: int, per_index: int) -> int:
    """Evaluations VRDSSampler(n_samples_per_index=per_index) makes through our adapter.

    Each sample (i, S) costs v(S + i) and v(S); for S empty, v(S) is the cached v(empty).
    """
    from pydvl.valuation.samplers.stratified import HarmonicSampleSize

    counts = HarmonicSampleSize(n_samples=per_index).sample_sizes(n - 1, probs=False)
    counts = np.where(counts > 0, np.maximum(1, counts), 0)  # FiniteSequentialSizeIteration
    return 1 + n * int(counts[0] + 2 * counts[1:].sum())


def _vrds_samples_per_index(n: int, budget: int) -> int:
    """The largest n_samples_per_index whose VRDS run stays within ``budget``."""
    per_index = max(1, budget // (2 * n))
    while _vrds_evaluations(n, per_index + 1) <= budget:
        per_index += 1
    return per_index


def _pydvl_vrds(utility: CountingUtility, n: int, budget: int, seed: int) -> Estimate:
    from pydvl.valuation.methods import ShapleyValuation
    from pydvl.valuation.samplers import VRDSSampler
    from pydvl.valuation.stopping import NoStopping

    per_index = _vrds_samples_per_index(n, budget)
    sampler = VRDSSampler(n_samples_per_index=per_index, seed=seed)
    u = _PydvlAdapter.utility_class()(utility, n)
    valuation = ShapleyValuation(u, sampler, NoStopping(sampler), progress=False)
    return Estimate(_pydvl_fit(valuation, n), {"samples_per_index": per_index})


def pydvl_providers() -> list[Provider]:
    """The pyDVL Shapley samplers compared here."""
    return [
        Provider(
            "pydvl:Permutation",
            "pydvl",
            "ShapleyValuation(u, PermutationSampler(seed), MaxSamples(sampler, (budget-1)//n))",
            _pydvl_permutation(antithetic=False),
        ),
        Provider(
            "pydvl:AntitheticPermutation",
            "pydvl",
            "ShapleyValuation(u, AntitheticPermutationSampler(seed), MaxSamples(sampler, even((budget-1)//n)))",
            _pydvl_permutation(antithetic=True),
        ),
        Provider(
            "pydvl:TMC",
            "pydvl",
            "TMCShapleyValuation(u, RelativeTruncation(rtol=0.01, burn_in_fraction=0.4), "
            "is_done=<stop when < n evaluations left>, seed)",
            _pydvl_tmc,
        ),
        Provider(
            "pydvl:VRDS",
            "pydvl",
            "ShapleyValuation(u, VRDSSampler(n_samples_per_index=<largest within budget>, seed), NoStopping(sampler))",
            _pydvl_vrds,
        ),
    ]


# ---------------------------------------------------------------------------------------
# dposhap (ours)


def is_budget_too_small_error(exc: BaseException) -> bool:
    """Whether ``exc`` is dposhap saying the budget cannot pay for the method's smallest run."""
    try:
        from dposhap.errors import BudgetTooSmallError  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - older layouts
        return type(exc).__name__ == "BudgetTooSmallError"
    return isinstance(exc, BudgetTooSmallError)


def is_unknown_method_error(exc: BaseException) -> bool:
    """Whether ``exc`` is dposhap refusing a method name it does not know."""
    try:
        from dposhap.errors import DposhapError  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - older layouts
        DposhapError = ValueError
    if not isinstance(exc, (ValueError, DposhapError)) or is_budget_too_small_error(exc):
        return False
    msg = str(exc).lower()
    refusals = (
        "unknown",
        "unsupported",
        "not supported",
        "invalid",
        "not implemented",
        "no such",
        "one of",
        "not recognized",
        "not recognised",
    )
    return "method" in msg and any(word in msg for word in refusals)


def our_provider(method: str) -> Provider:
    """dposhap.shapley with ``method`` on a Python callable utility."""

    def run(utility: CountingUtility, n: int, budget: int, seed: int) -> Estimate:
        import dposhap  # type: ignore[import-not-found]

        res = dposhap.shapley(utility, n, method=method, budget=budget, seed=seed)
        return Estimate(
            np.asarray(res.values, dtype=np.float64).reshape(n),
            {
                "reported_evaluations": int(res.n_evaluations),
                "method": str(getattr(res, "method", method)),
            },
        )

    return Provider(f"ours:{method}", "dposhap", f"dposhap.shapley(u, n, method={method!r}, budget, seed)", run)


def our_providers(methods: tuple[str, ...] = OUR_METHODS) -> tuple[list[Provider], list[str]]:
    """Providers for the dposhap methods that the installed package accepts.

    Returns
    -------
    (providers, notes)
        ``notes`` says which names were skipped and why.
    """
    import dposhap  # type: ignore[import-not-found]

    # A probe small enough to be instant, with a budget below 2^n so that no method
    # can object to being asked for more evaluations than there are coalitions.
    probe_n = 8
    probe = CountingUtility(lambda x: x.sum(axis=1).astype(np.float64) ** 2, probe_n)
    providers, notes = [], []
    for method in methods:
        try:
            dposhap.shapley(probe, probe_n, method=method, budget=200, seed=0)
        except Exception as exc:  # filtered just below
            if is_budget_too_small_error(exc):  # a known method, just not at this size
                providers.append(our_provider(method))
                continue
            if is_unknown_method_error(exc):
                notes.append(f"skipped dposhap method {method!r}: {type(exc).__name__}: {exc}")
                continue
            raise
        providers.append(our_provider(method))
    return providers, notes


def our_permutation_budget(n: int, n_permutations: int) -> int:
    """The budget handed to dposhap for ``n_permutations`` permutations: ``P (n-1) + 2``.

    The same figure as shapiq's permutation sampler (empty and grand coalition once,
    ``n - 1`` interior coalitions per permutation); the evaluations dposhap actually
    made are read from ``res.n_evaluations``.
    """
    return shapiq_permutation_budget(n, n_permutations)


def geometric_mean(xs: list[float]) -> float:
    """Geometric mean of positive numbers (NaN if the list is empty)."""
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    if not xs:
        return float("nan")
    return math.exp(sum(math.log(x) for x in xs) / len(xs))
