"""Cron schedules, evaluated in an IANA time zone.

A cron trigger names **wall-clock times in the template's time zone**
(``trigger.timezone``, an IANA name such as ``Europe/London``; default
``UTC``). Fire times are stored and returned as UTC instants.

Syntax
------
- 5 fields: ``minute hour day-of-month month day-of-week``.
- 6 fields: ``second minute hour day-of-month month day-of-week`` (the
  seconds field comes first, as in Quartz and Spring).
- Each field takes ``*``, numbers, ranges (``1-5``), steps (``*/15``,
  ``10-50/20``) and lists (``1,15,30``). Months and weekdays may be named
  (``JAN``-``DEC``, ``SUN``-``SAT``, any case); weekday ``7`` is Sunday.
- ``?`` means "any" in day-of-month or day-of-week (Quartz style).
- Day-of-month: ``L`` is the last day of the month; ``15W`` is the weekday
  (Monday-Friday) nearest the 15th, within the same month.
- Day-of-week: ``5#2`` is the second Friday of the month; ``L5`` the last.
- When both day-of-month and day-of-week are restricted, a day matches if it
  matches either one (classic cron behaviour).
- Macros: ``@yearly`` / ``@annually`` (``0 0 1 1 *``), ``@monthly``
  (``0 0 1 * *``), ``@weekly`` (``0 0 * * 0``), ``@daily`` / ``@midnight``
  (``0 0 * * *``), ``@hourly`` (``0 * * * *``).
- Not supported: ``@reboot``, 7-field expressions (with a year), hashed
  (``H``) and random (``R``) values, and day/month pairs that can never occur
  (``0 0 30 2 *``).

Daylight saving time
--------------------
Every wall-clock time the expression names fires **at most once**:

- **Gap** (the clock jumps forward, so the time does not exist, e.g. 02:30 on
  the spring-forward day in ``America/New_York``): the schedule fires once,
  at the instant the gap ends (03:00 EDT = 07:00 UTC). All skipped times of
  one gap -- say an every-minute schedule between 02:00 and 02:59 -- collapse
  into that one firing, which is also the firing for 03:00 itself.
- **Overlap** (the clock falls back, so the time happens twice, e.g. 01:30 on
  the fall-back day): the schedule fires once, at the *first* occurrence
  (01:30 EDT = 05:30 UTC). So an every-minute or hourly schedule has no
  firings during the repeated hour: ``0 * * * *`` in New York fires at
  01:00 EDT and next at 02:00 EST, two real hours later.

Fire times are strictly increasing, whole seconds, in UTC.

Implementation notes
--------------------
croniter iterates naive wall-clock times; :func:`_fire_instant` maps each to
UTC by the rules above. That mapping never decreases, so the search starts
from :func:`_latest_wall_at_or_before` (the last wall time whose firing is
not later than a given instant) and the first candidate past it is the
answer. :func:`latest_fire_at_or_before` walks *backwards* from ``now`` with
croniter's ``get_prev``, so its cost does not depend on how far back
``start`` is. The parsed croniter of each expression is cached.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from jobyard.errors import InvalidSpec

__all__ = [
    "CronError",
    "CronSchedule",
    "describe",
    "latest_fire_at_or_before",
    "next_fire_after",
    "next_fire_times",
    "parse_schedule",
]

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MACRO_WORDS = {
    "@yearly": "every year on 1 January at 00:00",
    "@annually": "every year on 1 January at 00:00",
    "@monthly": "on day 1 of every month at 00:00",
    "@weekly": "every Sunday at 00:00",
    "@daily": "every day at 00:00",
    "@midnight": "every day at 00:00",
}
_SECOND_RULE = ("second", "0..59")
_FIELD_RULES = (
    ("minute", "0..59"),
    ("hour", "0..23"),
    ("day-of-month", "1..31, L, nW or ?"),
    ("month", "1..12 or JAN..DEC"),
    ("day-of-week", "0..7 or SUN..SAT, d#n (nth weekday), Ld (last) or ?"),
)
_FIELD = re.compile(r"\S+", re.ASCII)  # croniter's own field separator
_HASHED = re.compile(r"^[hr](\(\d+-\d+\))?(/\d+)?$", re.IGNORECASE)
_STEP = re.compile(r"^\*/(\d+)$")
_HOST_ZONES = frozenset({"localtime", "posixrules"})  # differ from host to host
_ONE_SECOND = timedelta(seconds=1)
# croniter reads the clock when it is given no start time; this keeps it from doing so.
_ANCHOR = datetime(2000, 1, 1)
_MAX_STEPS = 64


class CronError(InvalidSpec):
    """A cron expression that cannot be used; the message says why in user terms."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="trigger.schedule")


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron expression and the IANA time zone it is read in."""

    expression: str
    timezone: str = "UTC"
    has_seconds: bool = False


def parse_schedule(expression: str, timezone: str = "UTC") -> CronSchedule:
    """Validate ``expression`` and ``timezone``; raise CronError / InvalidSpec if wrong."""
    text = expression.strip()
    fields = _cron_fields(text)
    _compile(text)
    _zone(timezone)
    return CronSchedule(expression=text, timezone=timezone, has_seconds=len(fields) == 6)


def next_fire_after(schedule: CronSchedule, after: datetime) -> datetime:
    """The first fire time strictly after ``after`` (tz-aware), in UTC."""
    _require_aware(after, "after")
    zone = _zone(schedule.timezone)
    wall = _latest_wall_at_or_before(after, zone)
    try:
        return _walk(schedule, zone, wall, backwards=False, until=lambda fire: fire > after)
    except CroniterBadDateError:
        raise CronError(f"cron schedule {schedule.expression!r} never fires") from None


def next_fire_times(schedule: CronSchedule, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times after ``after``, in UTC, strictly increasing."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    fires: list[datetime] = []
    for _ in range(count):
        after = next_fire_after(schedule, after)
        fires.append(after)
    return fires


def latest_fire_at_or_before(
    schedule: CronSchedule, start: datetime, now: datetime
) -> datetime | None:
    """The latest fire time ``f`` with ``start < f <= now``, in UTC, or None.

    Steps backwards from ``now`` (croniter ``get_prev``), never forwards from
    ``start``, so a ``start`` years back costs the same as one a minute back.
    """
    _require_aware(start, "start")
    _require_aware(now, "now")
    if now <= start:
        return None
    zone = _zone(schedule.timezone)
    # get_prev looks strictly before its start, so begin one second past the last wall time due.
    wall = _latest_wall_at_or_before(now, zone) + _ONE_SECOND
    try:
        fire = _walk(schedule, zone, wall, backwards=True, until=lambda fire: fire <= now)
    except CroniterBadDateError:
        return None
    return fire if fire > start else None


def describe(schedule: CronSchedule) -> str:
    """Short plain words for common shapes, else ``cron '<expr>' in <tz>``; never raises."""
    try:
        words = _plain_words(schedule.expression.strip(), schedule.timezone)
    except Exception:  # describing is best effort; the fallback is always right
        words = None
    return words or f"cron '{schedule.expression}' in {schedule.timezone}"


# --- parsing -------------------------------------------------------------


def _cron_fields(text: str) -> list[str]:
    """The fields of ``text`` with macros expanded; checks only their number."""
    if not text:
        raise CronError("cron schedule is empty")
    if text.startswith("@"):
        return _expand_macro(text).split()
    fields: list[str] = _FIELD.findall(text)
    if len(fields) not in (5, 6):
        raise CronError(
            f"cron schedule {text!r}: expected 5 fields (minute hour day-of-month month"
            f" day-of-week) or 6 with seconds first, got {len(fields)}"
        )
    return fields


def _expand_macro(text: str) -> str:
    name = text.lower()
    if name == "@reboot":
        raise CronError(
            "cron schedule '@reboot': @reboot is not supported; use a time-based"
            " schedule, or run the template manually"
        )
    if name not in _MACROS:
        raise CronError(f"cron schedule {text!r}: unknown macro; use one of {', '.join(_MACROS)}")
    return _MACROS[name]


@functools.lru_cache(maxsize=8192)
def _compile(text: str) -> Any:
    """A validated croniter for ``text`` (stripped), to be copied before use."""
    fields = _cron_fields(text)
    has_seconds = len(fields) == 6
    normalized = " ".join(fields)
    _reject_hashed(text, fields)
    try:
        croniter.expand(normalized, second_at_beginning=has_seconds, strict=True)
    except CroniterError as exc:
        _blame_field(text, fields)
        raise CronError(f"cron schedule {text!r} is not valid: {_first_line(exc)}") from None
    return croniter(normalized, _ANCHOR, ret_type=datetime, second_at_beginning=has_seconds)


def _field_rules(fields: list[str]) -> tuple[tuple[str, str], ...]:
    return (_SECOND_RULE, *_FIELD_RULES) if len(fields) == 6 else _FIELD_RULES


def _reject_hashed(text: str, fields: list[str]) -> None:
    # croniter would pick R values at random per process, breaking idempotent firing.
    for (name, _), token in zip(_field_rules(fields), fields, strict=True):
        if _HASHED.match(token):
            raise CronError(
                f"cron schedule {text!r}: {name} {token!r}: hashed (H) and random (R)"
                " values are not supported"
            )


def _blame_field(text: str, fields: list[str]) -> None:
    """Raise CronError naming the first field that is invalid on its own, if any."""
    for index, ((name, rule), token) in enumerate(zip(_field_rules(fields), fields, strict=True)):
        probe = ["*"] * len(fields)
        probe[index] = token
        if not croniter.is_valid(" ".join(probe), second_at_beginning=len(fields) == 6):
            raise CronError(f"cron schedule {text!r}: {name} must be {rule} (got {token!r})")


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    problem = InvalidSpec(
        f"unknown time zone {name!r}: use an IANA name such as 'UTC', 'Europe/London'"
        " or 'Asia/Shanghai'",
        field="trigger.timezone",
    )
    if name in _HOST_ZONES:
        raise problem
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise problem from None


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {moment!r}")


# --- wall clock <-> UTC ---------------------------------------------------


def _walk(
    schedule: CronSchedule,
    zone: ZoneInfo,
    wall: datetime,
    *,
    backwards: bool,
    until: Callable[[datetime], bool],
) -> datetime:
    """Step croniter from ``wall`` (exclusive) to the first fire time ``until`` accepts.

    Starting from :func:`_latest_wall_at_or_before`, the first step is the
    answer; the bound only guards against zones with back-to-back transitions.
    """
    iterator = copy.copy(_compile(schedule.expression.strip()))
    step = iterator.get_prev if backwards else iterator.get_next
    for _ in range(_MAX_STEPS):
        wall = step(datetime, start_time=wall)
        fire = _fire_instant(wall, zone)
        if until(fire):
            return fire
    raise CronError(f"cron schedule {schedule.expression!r}: no fire time found near {wall}")


def _fire_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant at which naive ``wall`` (in ``zone``) fires, per the DST rule."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall_of(first, zone) == wall:
        return first  # exists; in an overlap fold=0 is the first occurrence
    later = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    # In a gap the two folds map to either side of the jump; fire where it ends.
    return _transition_between(min(first, later), max(first, later), zone)


def _latest_wall_at_or_before(instant: datetime, zone: ZoneInfo) -> datetime:
    """The latest naive wall time whose fire instant is at or before ``instant``."""
    local = instant.astimezone(zone)
    wall = _wall_of(local, zone)
    if not local.fold:
        return wall
    # Second pass of a repeated hour: its wall times all fired on the first pass.
    return _overlap_end(wall, zone) - _ONE_SECOND


def _overlap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first wall time after the repeated stretch that contains ``wall``."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    fall_back = _transition_between(first, second, zone)
    return _wall_of(fall_back, zone) + (second - first)


def _transition_between(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The first whole second in (low, high] whose UTC offset differs from low's.

    ``low`` and ``high`` are whole-second instants with different offsets.
    """
    offset = low.astimezone(zone).utcoffset()
    while high - low > _ONE_SECOND:
        middle = (low + (high - low) // 2).replace(microsecond=0)
        if middle.astimezone(zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return high


def _wall_of(instant: datetime, zone: ZoneInfo) -> datetime:
    """Naive wall-clock time of ``instant`` in ``zone``, truncated to the second."""
    return instant.astimezone(zone).replace(tzinfo=None, microsecond=0, fold=0)


# --- plain words ----------------------------------------------------------


def _plain_words(text: str, timezone: str) -> str | None:
    if text.startswith("@"):
        name = text.lower()
        if name == "@hourly":
            return "every hour"
        words = _MACRO_WORDS.get(name)
        return f"{words} ({timezone})" if words else None
    fields = [field.replace("?", "*") for field in _FIELD.findall(text)]
    if len(fields) == 6:
        return _every(fields[0], "second", 60) if fields[1:] == ["*"] * 5 else None
    if len(fields) != 5 or fields[2:] != ["*", "*", "*"]:
        return None
    return _daily_words(fields[0], fields[1], timezone)


def _daily_words(minute: str, hour: str, timezone: str) -> str | None:
    if hour == "*":
        if minute.isdigit():
            return "every hour" if int(minute) == 0 else f"every hour at minute {int(minute)}"
        return _every(minute, "minute", 60)
    if minute == "0" and _STEP.match(hour):
        return _every(hour, "hour", 24)
    if minute.isdigit() and hour.isdigit():
        return f"every day at {int(hour):02d}:{int(minute):02d} ({timezone})"
    return None


def _every(field: str, unit: str, cycle: int) -> str | None:
    if field == "*":
        return f"every {unit}"
    match = _STEP.match(field)
    if not match or int(match.group(1)) == 0 or cycle % int(match.group(1)):
        return None
    step = int(match.group(1))
    return f"every {unit}" if step == 1 else f"every {step} {unit}s"
