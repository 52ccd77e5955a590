"""The printed table's ranking line: its signs and its chances tell the same story."""

from __future__ import annotations

import re

from dposhap.report import format_table


def entry(difference: float, stderr: float, significant: bool) -> dict:
    values = {"a": 0.5, "b": 0.5 - difference}
    return {
        "objectives": ["accuracy"],
        "sources": ["a", "b"],
        "semivalue": "shapley",
        "method": "permutation",
        "n_evaluations": 8,
        "new_evaluations": 8,
        "seed": 0,
        "seconds": 0.1,
        "values": {"accuracy": values},
        "stderr": {"accuracy": {"a": 0.0, "b": 0.0}},
        "ranking": {"accuracy": [["a"], ["b"]] if significant else [["a", "b"]]},
        # every bootstrap replicate puts a first (share 1): the estimator error keeps it open all the same
        "comparisons": {
            "accuracy": [
                {
                    "first": "a",
                    "second": "b",
                    "difference": difference,
                    "stderr": stderr,
                    "share": 1.0,
                    "significant": significant,
                }
            ]
        },
    }


def ranking(doc_entry: dict) -> str:
    (line,) = [line for line in format_table({"utilities": {"accuracy": doc_entry}}).splitlines() if "ranking" in line]
    return line


def test_an_open_call_never_reads_as_certain() -> None:
    line = ranking(entry(0.15, 0.1, significant=False))  # 1.5 standard errors: Phi(1.5) = 93%
    assert line == "ranking on accuracy: a ~ (93%) b", line


def test_a_clear_order_reads_as_one() -> None:
    assert ranking(entry(0.5, 0.1, significant=True)) == "ranking on accuracy: a > (>99%) b"
    line = ranking(entry(0.21, 0.1, significant=True))  # 2.1 standard errors: Phi = 98%
    assert re.fullmatch(r"ranking on accuracy: a > \(98%\) b", line), line


def test_no_error_no_chance() -> None:
    assert ranking(entry(0.15, 0.0, significant=True)) == "ranking on accuracy: a > b"
    # equal values summed in another order: a difference and an error at rounding level are a tie, not 98%
    assert ranking(entry(2e-17, 1e-17, significant=False)) == "ranking on accuracy: a ~ b"


def test_the_selection_table_says_what_it_was_measured_on() -> None:
    from dposhap.report import format_selection

    doc = {
        "utility": "accuracy",
        "config": {"utility": "accuracy", "heldout": ["eval"], "pairs": 30},
        "goal": {"maximize": "accuracy", "subject_to": []},
        "search": {"method": "exhaustive", "coalitions_evaluated": 4, "feasible": True},
        "chosen": ["a"],
        "dropped": ["b"],
        "predicted": {"all": 0.7, "all_stderr": 0.01, "chosen": 0.8, "chosen_stderr": 0.01, "gain": 0.1},
        "rule": {"kept": ["a"], "dropped": ["b"], "predicted": 0.8},
        "runners_up": [],
    }
    lines = format_selection(doc).splitlines()
    assert lines[0].startswith("goal: maximise accuracy")
    assert lines[1] == "measured on 30 pairs of the trusted evaluation set"
