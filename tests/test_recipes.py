"""The planted expectations a recipe checks after its valuations (``dposhap demo``, ``dposhap reproduce``)."""

from __future__ import annotations

from dposhap.recipes import PLANTED, Expectation, demo_recipe, reproduce_recipe


def _doc(values: dict[str, float], significant: dict[tuple[str, str], bool], stderr: float = 0.01) -> dict:
    names = list(values)
    comparisons = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            first, second = (a, b) if values[a] >= values[b] else (b, a)
            comparisons.append(
                {
                    "first": first,
                    "second": second,
                    "difference": values[first] - values[second],
                    "stderr": stderr,
                    "share": 1.0,
                    "significant": significant.get((first, second), True),
                }
            )
    return {
        "utilities": {
            "generation": {
                "sources": names,
                "values": {"helpful": values},
                "stderr": {"helpful": dict.fromkeys(names, stderr / 2)},
                "total_stderr": {"helpful": dict.fromkeys(names, stderr)},
                "comparisons": {"helpful": comparisons},
            }
        }
    }


def test_top_needs_every_comparison_significant() -> None:
    top = Expectation("generation", "helpful", "helpful", "top")
    values = {"helpful": 0.3, "noisy": 0.1, "harmless": 0.0, "adversarial": -0.2}
    holds, line = top.check(_doc(values, {}))
    assert holds and "3 of the 3" in line
    holds, line = top.check(_doc(values, {("helpful", "noisy"): False}))
    assert not holds and "2 of the 3" in line
    holds, _ = Expectation("generation", "helpful", "noisy", "top").check(_doc(values, {}))
    assert not holds  # second, not first


def test_negative_needs_the_interval_below_zero() -> None:
    negative = Expectation("generation", "helpful", "adversarial", "negative")
    values = {"helpful": 0.3, "adversarial": -0.015}
    assert not negative.check(_doc(values, {}, stderr=0.01))[0]  # -0.015 + 1.96 * 0.01 > 0
    assert negative.check(_doc(values, {}, stderr=0.005))[0]
    missing = Expectation("generation", "harmless", "harmless", "top").check(_doc(values, {}))
    assert missing == (False, "harmless above every other source on generation:harmless: not valued")


def test_both_recipes_check_what_their_worlds_plant() -> None:
    assert demo_recipe().expectations == PLANTED == reproduce_recipe().expectations
    assert {str(e) for e in PLANTED} == {
        "helpful above every other source on generation:helpful",
        "harmless above every other source on generation:harmless",
        "adversarial below zero on generation:helpful",
    }
