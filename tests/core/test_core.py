"""The torch-free bottom layer: one coalition codec, one check of a utility's output."""

from __future__ import annotations

import numpy as np
import pytest

from dposhap.core import ItemScores, describe_coalition, pack_coalitions, unpack_coalition, utility_values
from dposhap.errors import UtilityError


def test_coalition_keys_are_the_cache_format() -> None:
    # the bytes the utility cache wrote before the codec moved here: an existing cache.sqlite still hits
    rows = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 1], [1, 1, 1]], dtype=bool)
    assert pack_coalitions(rows) == [b"\x00", b"\x01", b"\x04", b"\x07"]
    wide = np.zeros((3, 10), dtype=bool)
    wide[0, 0] = wide[1, 9] = True
    wide[2, [1, 3, 8]] = True
    assert pack_coalitions(wide) == [b"\x01\x00", b"\x00\x02", b"\x0a\x01"]


def test_coalition_codec_round_trips() -> None:
    rows = np.random.default_rng(0).random((50, 13)) < 0.5
    keys = pack_coalitions(rows)
    assert all(len(k) == 2 for k in keys)
    assert np.array_equal(np.stack([unpack_coalition(k, 13) for k in keys]), rows)
    assert len(set(keys)) == len({r.tobytes() for r in rows})


def test_utility_values_shapes() -> None:
    assert utility_values([1.0, 2.0], 2).shape == (2, 1)
    assert utility_values(np.ones((2, 3)), 2).shape == (2, 3)
    with pytest.raises(UtilityError, match=r"returned shape \(3,\) for a batch of 2"):
        utility_values([1.0, 2.0, 3.0], 2)
    with pytest.raises(UtilityError, match=r"objectives \['a', 'b'\].*return shape \(2, 2\)"):
        utility_values([1.0, 2.0], 2, objectives=["a", "b"])
    with pytest.raises(UtilityError, match="not numeric"):
        utility_values(["x", "y"], 2)


def test_non_finite_utility_names_row_objective_and_members() -> None:
    coalitions = np.array([[True, False], [False, True], [True, True]])
    values = np.array([[0.0, 1.0], [2.0, np.nan], [1.0, 1.0]])
    with pytest.raises(UtilityError, match=r"coalition \{1\} \(row 1 of the batch\), objective 'b'.*1 of 3 rows"):
        utility_values(values, 3, objectives=["a", "b"], coalitions=coalitions)
    with pytest.raises(UtilityError, match="non-finite item score"):
        ItemScores.coerce(np.array([[0.0, np.inf]]), 1)
    assert describe_coalition(np.array([False, False])) == "{} (the empty coalition)"
