"""Query parameters: a whole number is ASCII digits within its range, and every other string is a
400 that names the parameter, its range and what to send instead."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klingflow.core.errors import QueryRejected
from klingflow.core.params import whole_number


def _limit(value: str | None) -> int:
    return whole_number("limit", value, default=50, low=1, high=100)


def test_ascii_digits_within_the_range_are_the_number_and_absence_is_the_default() -> None:
    assert [_limit(v) for v in ("1", "07", "100", None)] == [1, 7, 100, 50]


@pytest.mark.parametrize(
    "value",
    ["²", "①", "٣", "\uff15", "1²", "", " 7", "7 ", "+7", "-1", "0", "101", "7_0", "1e2", "7.0", "9" * 5000],
)
def test_anything_else_is_refused_naming_the_parameter_its_range_and_the_next_step(value: str) -> None:
    with pytest.raises(QueryRejected) as refused:
        _limit(value)
    [error] = refused.value.errors
    assert (error.field, error.rule) == ("limit", "range")
    assert "from 1 to 100 in ASCII digits (e.g. limit=50); leave it out for 50" in error.message
    assert refused.value.message.startswith("query parameter rejected: limit: ")
    assert refused.value.http_status == 400


@given(st.text(max_size=12))
def test_no_string_gets_past_the_check_as_anything_but_a_number_in_range(value: str) -> None:
    try:
        number = _limit(value)
    except QueryRejected:
        return
    assert value.isascii() and str(number) == value.lstrip("0") and 1 <= number <= 100
