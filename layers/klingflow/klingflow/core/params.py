"""Query parameters of the API's routes, read one way: what passes the check is what is used."""

from __future__ import annotations

import re

from .errors import FieldError, QueryRejected

# ASCII digits only: str.isdigit() also passes "²" and "①", which int() then refuses, and int()
# alone takes " 7", "+7", "7_0" and other scripts' digits. At most 9 digits: no int() cost.
_WHOLE = re.compile(r"[0-9]{1,9}")


def whole_number(name: str, value: str | None, *, default: int, low: int, high: int) -> int:
    """A query parameter that is a whole number from `low` to `high`; `default` when absent."""
    if value is None:
        return default
    number = int(value) if _WHOLE.fullmatch(value) else None
    if number is None or not low <= number <= high:
        raise QueryRejected(
            [
                FieldError(
                    name,
                    "range",
                    f"{name} must be a whole number from {low} to {high} in ASCII digits "
                    f"(e.g. {name}={min(high, max(low, default))}); leave it out for {default}",
                )
            ]
        )
    return number
