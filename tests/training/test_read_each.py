"""``read_each``: corrupt items are skipped and counted in one warning; nothing readable is an error."""

from __future__ import annotations

import warnings

import pytest

from zoo.training.data import read_each


def _read(x: int) -> int:
    if x % 3 == 0:
        raise ValueError(f"bad item {x}")
    return 10 * x


def test_skips_and_counts_in_one_warning():
    with pytest.warns(UserWarning) as record:
        got = read_each(range(1, 8), _read, what="numbers")
    assert got == [(1, 10), (2, 20), (4, 40), (5, 50), (7, 70)]
    assert len(record) == 1
    message = str(record[0].message)
    assert "skipped 2 of 7 numbers" in message and "bad item 3" in message and "bad item 6" in message


def test_all_good_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_each([1, 2], _read, what="numbers") == [(1, 10), (2, 20)]


def test_nothing_readable_is_an_error_naming_the_failures():
    with pytest.raises(ValueError, match=r"none of the 2 numbers could be read; first: 3 \(ValueError: bad item 3\)"):
        read_each([3, 6], _read, what="numbers")
    with pytest.raises(ValueError, match="none of the 0 numbers could be read"):
        read_each([], _read, what="numbers")
    assert read_each([], _read, what="numbers", require_one=False) == []


def test_other_errors_propagate():
    def read(x: int) -> int:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        read_each([1], read, what="numbers", errors=(ValueError,))
