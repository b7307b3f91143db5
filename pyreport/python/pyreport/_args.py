"""Argument checking and conversion: every bad argument gets a TypeError or ValueError that
names the argument, what was given and what is accepted."""

from __future__ import annotations

import datetime as _dt
import operator
from typing import Any, Iterable, List, Optional, Union

TimeLike = Union[_dt.datetime, _dt.date, str]
StrOrStrs = Union[str, Iterable[str]]

UTC = _dt.timezone.utc
EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)


def type_name(value: Any) -> str:
    return type(value).__name__


def str_list(value: Optional[StrOrStrs], name: str) -> Optional[List[str]]:
    """None, one string, or an iterable of strings → list of strings."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (bytes, bytearray, dict)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a string or a list of strings (got {type_name(value)})")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise TypeError(f"{name}[{i}] must be a string (got {type_name(item)}: {item!r})")
        out.append(item)
    return out


def string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string (got {type_name(value)})")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def integer(value: Any, name: str, minimum: int, maximum: Optional[int] = None) -> Optional[int]:
    """None or a whole number within bounds (numpy integers accepted, bools and floats not)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer (got bool)")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer (got {type_name(value)}: {value!r})") from None
    if n < minimum or (maximum is not None and n > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ValueError(f"{name} must be at least {minimum}{upper} (got {n})")
    return n


def to_datetime(us: Optional[int]) -> Optional[_dt.datetime]:
    """Microseconds since the epoch → an aware UTC datetime."""
    if us is None:
        return None
    return EPOCH + _dt.timedelta(microseconds=us)


def _parse_iso(text: str, name: str) -> _dt.datetime:
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    # Python < 3.11 accepts only 3 or 6 fraction digits: normalise to 6.
    if "." in s:
        head, _, rest = s.partition(".")
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        s = f"{head}.{(digits + '000000')[:6]}{rest}"
    try:
        return _dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"{name}={text!r} is not an ISO 8601 time; use e.g. '2026-11-27T10:00:00Z' "
            f"or '2026-11-27' (UTC unless an offset is given), or pass a datetime"
        ) from None


def time_us(value: Any, name: str) -> Optional[int]:
    """A datetime (naive = UTC), date (midnight UTC), ISO 8601 string, pandas Timestamp or
    numpy datetime64 → microseconds since the epoch."""
    if value is None:
        return None
    if type_name(value) == "datetime64":  # numpy scalar
        return int(value.astype("datetime64[us]").astype("int64"))
    if isinstance(value, str):
        value = _parse_iso(value, name)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta: _dt.timedelta = value - EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, _dt.date):
        return time_us(_dt.datetime(value.year, value.month, value.day, tzinfo=UTC), name)
    raise TypeError(
        f"{name} must be a datetime, a date or an ISO 8601 string like '2026-11-27T10:00:00Z' "
        f"(got {type_name(value)}: {value!r})"
    )


def time_range(since: Any, until: Any) -> "tuple[Optional[int], Optional[int]]":
    s, u = time_us(since, "since"), time_us(until, "until")
    if s is not None and u is not None and s > u:
        raise ValueError(
            f"since ({to_datetime(s)}) is after until ({to_datetime(u)}): the time range is inverted"
        )
    return s, u
