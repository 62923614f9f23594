"""Unit tests for jobyard.cron: syntax, rejection messages, time zones and DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import pytest

from jobyard.cron import (
    CronError,
    CronSchedule,
    describe,
    latest_fire_at_or_before,
    next_fire_after,
    next_fire_times,
    parse_schedule,
)
from jobyard.errors import InvalidSpec

NEW_YORK = "America/New_York"
LONDON = "Europe/London"
# A Thursday; every expected time below was checked against a calendar.
JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def fires(expression: str, after: datetime, count: int, zone: str = "UTC") -> list[datetime]:
    return next_fire_times(parse_schedule(expression, zone), after, count)


# --- syntax ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param("*/15 * * * *", [utc(2026, 1, 1, 0, 15), utc(2026, 1, 1, 0, 30)], id="step"),
        pytest.param("5 9-10 * * *", [utc(2026, 1, 1, 9, 5), utc(2026, 1, 1, 10, 5)], id="range"),
        pytest.param("0 8,20 * * *", [utc(2026, 1, 1, 8), utc(2026, 1, 1, 20)], id="list"),
        pytest.param(
            "10-50/20 0 * * *",
            [utc(2026, 1, 1, 0, 10), utc(2026, 1, 1, 0, 30)],
            id="range-with-step",
        ),
        pytest.param("0 0 1 JAN,mar *", [utc(2026, 3, 1), utc(2027, 1, 1)], id="month-names"),
        pytest.param(
            "0 12 * * MON-WED", [utc(2026, 1, 5, 12), utc(2026, 1, 6, 12)], id="dow-names"
        ),
        pytest.param("0 0 * * 7", [utc(2026, 1, 4), utc(2026, 1, 11)], id="dow-7-is-sunday"),
        pytest.param("0 0 ? * MON", [utc(2026, 1, 5), utc(2026, 1, 12)], id="question-dom"),
        pytest.param("0 0 15 * ?", [utc(2026, 1, 15), utc(2026, 2, 15)], id="question-dow"),
        pytest.param("0 0 L * *", [utc(2026, 1, 31), utc(2026, 2, 28)], id="last-day"),
        # 2026-02-15 is a Sunday, so the nearest weekday is Monday the 16th.
        pytest.param("0 0 15W * *", [utc(2026, 1, 15), utc(2026, 2, 16)], id="nearest-weekday"),
        pytest.param("0 0 * * 5#2", [utc(2026, 1, 9), utc(2026, 2, 13)], id="nth-weekday"),
        pytest.param("0 0 * * L5", [utc(2026, 1, 30), utc(2026, 2, 27)], id="last-weekday"),
        pytest.param("0 0 13 * 5", [utc(2026, 1, 2), utc(2026, 1, 9)], id="dom-or-dow"),
        pytest.param("  */30 * * * *\n", [utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 1)], id="strip"),
    ],
)
def test_standard_syntax(expression: str, expected: list[datetime]) -> None:
    assert fires(expression, JAN_1, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param("*/20 * * * * *", [utc(2026, 1, 1, 0, 0, 20), utc(2026, 1, 1, 0, 0, 40)]),
        pytest.param("30 0 12 * * *", [utc(2026, 1, 1, 12, 0, 30), utc(2026, 1, 2, 12, 0, 30)]),
        pytest.param("* * * * * *", [utc(2026, 1, 1, 0, 0, 1), utc(2026, 1, 1, 0, 0, 2)]),
        pytest.param("0 0 0 ? * SUN", [utc(2026, 1, 4), utc(2026, 1, 11)]),
    ],
)
def test_seconds_field_comes_first(expression: str, expected: list[datetime]) -> None:
    schedule = parse_schedule(expression)
    assert schedule.has_seconds
    assert next_fire_times(schedule, JAN_1, len(expected)) == expected


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("@yearly", utc(2027, 1, 1)),
        ("@annually", utc(2027, 1, 1)),
        ("@monthly", utc(2026, 2, 1)),
        ("@weekly", utc(2026, 1, 4)),
        ("@daily", utc(2026, 1, 2)),
        ("@midnight", utc(2026, 1, 2)),
        ("@hourly", utc(2026, 1, 1, 1)),
        ("@DAILY", utc(2026, 1, 2)),
    ],
)
def test_macros(macro: str, expected: datetime) -> None:
    schedule = parse_schedule(macro)
    assert not schedule.has_seconds
    assert next_fire_after(schedule, JAN_1) == expected


def test_parse_keeps_expression_and_zone() -> None:
    schedule = parse_schedule(" 0 9 * * MON ", "Asia/Shanghai")
    assert schedule == CronSchedule("0 9 * * MON", "Asia/Shanghai", has_seconds=False)


# --- rejection ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "cron schedule is empty"),
        ("   ", "cron schedule is empty"),
        ("* * * *", "expected 5 fields"),
        ("0 0 0 * * * 2026", "got 7"),
        ("61 * * * *", "cron schedule '61 * * * *': minute must be 0..59"),
        ("* 24 * * *", "hour must be 0..23"),
        ("* * 32 * *", "day-of-month must be 1..31"),
        ("* * 0 * *", "day-of-month must be 1..31"),
        ("* * * 13 *", "month must be 1..12"),
        ("* * * FOO *", "month must be 1..12 or JAN..DEC (got 'FOO')"),
        ("* * * * 8", "day-of-week must be 0..7"),
        ("* * * * 5#6", "day-of-week must be"),
        ("60 * * * * *", "second must be 0..59"),
        ("*/0 * * * *", "minute must be"),
        ("-1 * * * *", "minute must be"),
        ("* * 1,15W * *", "day-of-month must be"),
        ("* ? * * *", "hour must be"),
        ("garbage", "expected 5 fields"),
        ("a b c d e", "minute must be 0..59 (got 'a')"),
        ("@reboot", "@reboot is not supported"),
        ("@fortnightly", "unknown macro"),
        ("H * * * *", "hashed (H) and random (R) values are not supported"),
        ("r * * * *", "hashed (H) and random (R) values are not supported"),
        ("0 0 30 2 *", "can never occur"),
    ],
)
def test_rejects_bad_expressions(expression: str, message: str) -> None:
    with pytest.raises(CronError, match="cron schedule") as caught:
        parse_schedule(expression)
    assert message in str(caught.value)
    assert caught.value.field == "trigger.schedule"
    assert isinstance(caught.value, InvalidSpec)


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus", "", "utc", "America", "../etc/passwd", "/etc/localtime", "localtime"]
)
def test_rejects_unknown_time_zone(zone: str) -> None:
    with pytest.raises(InvalidSpec, match="unknown time zone") as caught:
        parse_schedule("* * * * *", zone)
    assert caught.value.field == "trigger.timezone"
    assert not isinstance(caught.value, CronError)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: next_fire_after(s, datetime(2026, 1, 1)),
        lambda s: next_fire_times(s, datetime(2026, 1, 1), 2),
        lambda s: latest_fire_at_or_before(s, datetime(2026, 1, 1), JAN_1),
        lambda s: latest_fire_at_or_before(s, JAN_1, datetime(2026, 1, 2)),
    ],
)
def test_naive_datetimes_are_a_programming_error(call: object) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        call(parse_schedule("* * * * *"))  # type: ignore[operator]


def test_negative_count_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="count"):
        next_fire_times(parse_schedule("* * * * *"), JAN_1, -1)


# --- results -----------------------------------------------------------------


def test_results_are_whole_second_utc_strictly_after() -> None:
    after = datetime(2026, 1, 1, 9, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=8)))
    fire = next_fire_after(parse_schedule("0 * * * *"), after)
    assert fire == utc(2026, 1, 1, 2)
    assert fire.tzinfo is UTC
    assert fire.microsecond == 0
    assert next_fire_after(parse_schedule("0 * * * *"), utc(2026, 1, 1, 2)) == utc(2026, 1, 1, 3)


def test_next_fire_times_zero_count() -> None:
    assert next_fire_times(parse_schedule("* * * * *"), JAN_1, 0) == []


@pytest.mark.parametrize("zone", ["UTC", NEW_YORK, LONDON, "Australia/Lord_Howe"])
@pytest.mark.parametrize("expression", ["* * * * *", "*/7 * * * *", "30 1,2 * * *", "0 * * * *"])
@pytest.mark.parametrize("after", [utc(2026, 3, 8, 5), utc(2026, 10, 25), utc(2026, 11, 1, 4)])
def test_fire_times_strictly_increase_and_agree(
    zone: str, expression: str, after: datetime
) -> None:
    schedule = parse_schedule(expression, zone)
    times = next_fire_times(schedule, after, 200)
    assert all(earlier < later for earlier, later in pairwise(times))
    previous = after
    for fire in times:
        assert latest_fire_at_or_before(schedule, previous, fire) == fire
        assert latest_fire_at_or_before(schedule, previous, fire - timedelta(seconds=1)) is None
        previous = fire


# --- time zones and DST ------------------------------------------------------


def test_wall_clock_is_read_in_the_time_zone() -> None:
    assert fires("0 9 * * *", JAN_1, 2, "Asia/Shanghai") == [
        utc(2026, 1, 1, 1),
        utc(2026, 1, 2, 1),
    ]


def test_spring_forward_gap_fires_once_when_the_gap_ends() -> None:
    # 2026-03-08 02:00 EST jumps to 03:00 EDT (07:00 UTC); 02:30 does not exist.
    assert fires("30 2 * * *", utc(2026, 3, 7, 12), 2, NEW_YORK) == [
        utc(2026, 3, 8, 7),
        utc(2026, 3, 9, 6, 30),
    ]


def test_spring_forward_gap_collapses_every_minute_into_one_firing() -> None:
    times = fires("* 2 * * *", utc(2026, 3, 8, 6, 58), 2, NEW_YORK)
    assert times == [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6)]


def test_every_minute_across_the_gap() -> None:
    times = fires("* * * * *", utc(2026, 3, 8, 6, 58), 4, NEW_YORK)
    # 07:00 UTC is the gap's one firing and 03:00 EDT's own firing at once.
    assert times == [
        utc(2026, 3, 8, 6, 59),
        utc(2026, 3, 8, 7),
        utc(2026, 3, 8, 7, 1),
        utc(2026, 3, 8, 7, 2),
    ]


def test_fall_back_overlap_fires_at_the_first_occurrence() -> None:
    # 2026-11-01 02:00 EDT falls back to 01:00 EST; 01:30 happens at 05:30 and 06:30 UTC.
    assert fires("30 1 * * *", utc(2026, 10, 31, 12), 2, NEW_YORK) == [
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 2, 6, 30),
    ]


def test_hourly_has_no_firing_in_the_repeated_hour() -> None:
    assert fires("0 * * * *", utc(2026, 11, 1, 3, 30), 4, NEW_YORK) == [
        utc(2026, 11, 1, 4),  # 00:00 EDT
        utc(2026, 11, 1, 5),  # 01:00 EDT
        utc(2026, 11, 1, 7),  # 02:00 EST; 01:00 EST (06:00 UTC) already fired
        utc(2026, 11, 1, 8),
    ]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        pytest.param("30 1 * * *", utc(2026, 11, 1, 6), utc(2026, 11, 2, 6, 30), id="daily"),
        pytest.param("* * * * *", utc(2026, 11, 1, 6, 10), utc(2026, 11, 1, 7), id="minute"),
        pytest.param("* * * * * *", utc(2026, 11, 1, 6, 10), utc(2026, 11, 1, 7), id="second"),
        pytest.param("0 2 * * *", utc(2026, 11, 1, 6, 59, 59), utc(2026, 11, 1, 7), id="edge"),
    ],
)
def test_after_inside_the_second_pass_of_an_overlap(
    expression: str, after: datetime, expected: datetime
) -> None:
    assert next_fire_after(parse_schedule(expression, NEW_YORK), after) == expected


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        # 2026-03-29 01:00 GMT jumps to 02:00 BST; 01:30 does not exist.
        pytest.param(
            utc(2026, 3, 28, 12), [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)], id="gap"
        ),
        # 2026-10-25 02:00 BST falls back to 01:00 GMT; 01:30 BST is 00:30 UTC.
        pytest.param(
            utc(2026, 10, 24, 12),
            [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
            id="overlap",
        ),
    ],
)
def test_london(after: datetime, expected: list[datetime]) -> None:
    assert fires("30 1 * * *", after, 2, LONDON) == expected


# --- latest_fire_at_or_before -------------------------------------------------


@pytest.mark.timeout(10)
def test_latest_fire_with_start_a_year_back_steps_back_from_now() -> None:
    now = datetime(2026, 6, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    schedule = parse_schedule("* * * * * *")
    assert latest_fire_at_or_before(schedule, now - timedelta(days=365), now) == utc(2026, 6, 1, 12)


@pytest.mark.parametrize(
    ("expression", "zone", "start", "now", "expected"),
    [
        pytest.param("0 0 * * *", "UTC", JAN_1, utc(2026, 1, 3, 12), utc(2026, 1, 3), id="daily"),
        pytest.param("0 0 * * *", "UTC", JAN_1, utc(2026, 1, 2), utc(2026, 1, 2), id="now-incl"),
        pytest.param(
            "0 0 * * *", "UTC", utc(2026, 1, 2), utc(2026, 1, 2, 5), None, id="start-excl"
        ),
        pytest.param("0 0 1 1 *", "UTC", utc(2026, 2, 1), utc(2026, 12, 1), None, id="none"),
        pytest.param("0 0 * * *", "UTC", utc(2026, 1, 5), utc(2026, 1, 2), None, id="now<start"),
        pytest.param(
            "30 2 * * *",
            NEW_YORK,
            utc(2026, 3, 8),
            utc(2026, 3, 8, 7),
            utc(2026, 3, 8, 7),
            id="gap",
        ),
        pytest.param(
            "* * * * *",
            NEW_YORK,
            utc(2026, 11, 1),
            utc(2026, 11, 1, 6, 10),
            utc(2026, 11, 1, 5, 59),
            id="overlap-second-pass",
        ),
        pytest.param(
            "30 1 * * *",
            NEW_YORK,
            utc(2026, 10, 1),
            utc(2026, 11, 1, 6, 45),
            utc(2026, 11, 1, 5, 30),
            id="overlap-daily",
        ),
        pytest.param(
            "0 9 * * *", "Asia/Shanghai", JAN_1, utc(2026, 1, 2), utc(2026, 1, 1, 1), id="zone"
        ),
    ],
)
def test_latest_fire_at_or_before(
    expression: str, zone: str, start: datetime, now: datetime, expected: datetime | None
) -> None:
    schedule = parse_schedule(expression, zone)
    assert latest_fire_at_or_before(schedule, start, now) == expected


# --- describe ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "zone", "words"),
    [
        ("* * * * *", "UTC", "every minute"),
        ("*/5 * * * *", "UTC", "every 5 minutes"),
        ("0 * * * *", "UTC", "every hour"),
        ("15 * * * *", "UTC", "every hour at minute 15"),
        ("0 */6 * * *", "UTC", "every 6 hours"),
        ("30 9 * * *", "Asia/Shanghai", "every day at 09:30 (Asia/Shanghai)"),
        ("*/10 * * * * *", "UTC", "every 10 seconds"),
        ("@hourly", "UTC", "every hour"),
        ("@daily", LONDON, "every day at 00:00 (Europe/London)"),
        ("*/7 * * * *", "UTC", "cron '*/7 * * * *' in UTC"),
        ("0 0 1 * MON", NEW_YORK, "cron '0 0 1 * MON' in America/New_York"),
    ],
)
def test_describe(expression: str, zone: str, words: str) -> None:
    assert describe(parse_schedule(expression, zone)) == words


@pytest.mark.parametrize(
    "schedule",
    [CronSchedule("garbage", "Nowhere/Zone"), CronSchedule("", "UTC"), CronSchedule("@x y", "")],
)
def test_describe_never_raises(schedule: CronSchedule) -> None:
    assert describe(schedule) == f"cron '{schedule.expression}' in {schedule.timezone}"
