"""Plain words for the cron shapes people write (and the console's generation tool builds).

Pure. Anything it does not recognise falls back to ``cron.describe``.
"""

from __future__ import annotations

import re

from jobyard import cron

DAY_NAMES = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
DAY_ABBREVIATIONS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
MONTH_ABBREVIATIONS = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
]  # fmt: skip
MONTH_NAMES = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip
_STEP = re.compile(r"^\*/(\d+)$")
_NUMBER = re.compile(r"^\d+$")


def describe(expression: str, timezone: str) -> str:
    """Words for a valid expression, e.g. 'at 09:00 on weekdays (Monday to Friday) (UTC)'."""
    schedule = cron.parse_schedule(expression, timezone)
    fields = schedule.expression.split()
    if len(fields) == 6 and fields[0] == "0":
        fields = fields[1:]
    words = _five_fields(fields) if len(fields) == 5 else None
    if words is None:
        return cron.describe(schedule)
    return f"{words} ({timezone})"


def _five_fields(fields: list[str]) -> str | None:
    minute, hour, day, month, weekday = (f.upper().replace("?", "*") for f in fields)
    when = _time_of_day(minute, hour)
    if when is None:
        return None
    days = _days(day, month, weekday)
    if days is None:
        return None
    if not days and when.startswith("at "):
        return f"every day {when}"
    return f"{when}{days}"


def _time_of_day(minute: str, hour: str) -> str | None:
    if hour == "*":
        if minute == "*":
            return "every minute"
        step = _STEP.match(minute)
        if step:
            return f"every {step.group(1)} minutes"
        if _NUMBER.match(minute):
            return (
                "every hour on the hour"
                if int(minute) == 0
                else (f"every hour at minute {int(minute)}")
            )
        return None
    if not _NUMBER.match(minute):
        return None
    step = _STEP.match(hour)
    if step:
        return f"every {step.group(1)} hours at minute {int(minute)}"
    hours = hour.split(",")
    if all(_NUMBER.match(h) for h in hours):
        times = [f"{int(h):02d}:{int(minute):02d}" for h in hours]
        return "at " + _and(times)
    return None


def _days(day: str, month: str, weekday: str) -> str | None:
    if day == "*" and month == "*":
        return _weekdays(weekday)
    if weekday != "*":
        return None
    on_day = _day_of_month(day)
    if on_day is None:
        return None
    if month == "*":
        return f" on {on_day} of every month"
    months = _names(month, MONTH_ABBREVIATIONS, MONTH_NAMES, first=1)
    return f" on {on_day} of {months}" if months else None


def _weekdays(weekday: str) -> str | None:
    if weekday == "*":
        return ""
    if weekday in ("MON-FRI", "1-5"):
        return " on weekdays (Monday to Friday)"
    if weekday in ("SAT,SUN", "SUN,SAT", "0,6", "6,0"):
        return " on Saturdays and Sundays"
    names = _names(weekday, DAY_ABBREVIATIONS, DAY_NAMES, first=0)
    return f" every {names}" if names else None


def _day_of_month(day: str) -> str | None:
    if day == "L":
        return "the last day"
    if _NUMBER.match(day):
        return f"day {int(day)}"
    days = day.split(",")
    if all(_NUMBER.match(d) for d in days):
        return "days " + _and([str(int(d)) for d in days])
    return None


def _names(field: str, abbreviations: list[str], names: list[str], first: int) -> str | None:
    """'MON,WED' or '1,3' -> 'Monday and Wednesday'; None for ranges and steps."""
    found = []
    for part in field.split(","):
        if part in abbreviations:
            index = abbreviations.index(part)
        elif _NUMBER.match(part):
            index = (int(part) - first) % len(names)
        else:
            return None
        found.append(names[index])
    return _and(found)


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
