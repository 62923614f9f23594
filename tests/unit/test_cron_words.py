"""Plain words for cron expressions, as the console and the API show them."""

from __future__ import annotations

import pytest

from jobyard.cron_words import describe
from jobyard.errors import InvalidSpec


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("0 9 * * *", "every day at 09:00 (UTC)"),
        ("30 9 * * MON-FRI", "at 09:30 on weekdays (Monday to Friday) (UTC)"),
        ("*/5 * * * *", "every 5 minutes (UTC)"),
        ("0 */6 * * *", "every 6 hours at minute 0 (UTC)"),
        ("0 0 1 * *", "at 00:00 on day 1 of every month (UTC)"),
        ("0 0 L * *", "at 00:00 on the last day of every month (UTC)"),
        ("15 10 * * 1,3,5", "at 10:15 every Monday, Wednesday and Friday (UTC)"),
        ("0 9 1 JAN *", "at 09:00 on day 1 of January (UTC)"),
        ("0 0 9 * * *", "every day at 09:00 (UTC)"),
        ("*/10 * * * * *", "every 10 seconds"),
        ("@hourly", "every hour"),
    ],
)
def test_common_shapes_read_as_words(expression: str, words: str) -> None:
    assert describe(expression, "UTC") == words


def test_the_time_zone_is_named() -> None:
    assert describe("0 9 * * *", "Asia/Shanghai") == "every day at 09:00 (Asia/Shanghai)"


def test_unusual_shapes_fall_back_without_failing() -> None:
    assert "15W" in describe("0 0 15W * *", "UTC")


def test_invalid_expressions_are_refused() -> None:
    with pytest.raises(InvalidSpec):
        describe("61 * * * *", "UTC")
