"""Arrival traces: trace CSVs, TWCS exports (and what the brand did), synthetic days."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from allo.analytics import traces
from tests.conftest import SHARED

UNION = SHARED / "data" / "twcs" / "union.csv"
TWCS_HEADER = list(
    ("tweet_id", "author_id", "inbound", "created_at", "text", "response_tweet_id",
     "in_response_to_tweet_id")
)  # fmt: skip


def write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_a_trace_csv_gives_arrivals_in_time_order_with_defaults(tmp_path: Path) -> None:
    trace = write(
        tmp_path / "t.csv",
        ["arrived_at", "channel", "urgent", "sentiment", "spam", "needs_answer"],
        [
            ["2026-03-04T10:05:00+01:00", "whatsapp", "yes", "-0.9", "", ""],
            ["2026-03-04T08:00:00Z", "", "", "", "true", "no"],
        ],
    )
    first, second = traces.read(trace)
    assert first.at == datetime(2026, 3, 4, 8, 0, tzinfo=UTC)
    assert (first.channel, first.spam, first.needs_answer, first.answerable) == (
        "x",
        True,
        False,
        False,
    )
    assert second.at == datetime(2026, 3, 4, 9, 5, tzinfo=UTC)
    assert (second.channel, second.urgent, second.sentiment) == ("whatsapp", True, -0.9)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (["2026-03-04T10:05:00", "no"], "line 2: .*no time zone"),
        (["yesterday", "no"], "line 2"),
        (["2026-03-04T10:05:00Z", "perhaps"], "line 2: 'perhaps' is not a yes/no value"),
    ],
)
def test_a_bad_row_is_named_by_its_line(tmp_path: Path, row: list[str], message: str) -> None:
    trace = write(tmp_path / "t.csv", ["arrived_at", "urgent"], [row])
    with pytest.raises(traces.TraceError, match=message):
        traces.read(trace)


def test_a_trace_without_times_or_with_a_sentiment_off_the_scale_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(traces.TraceError, match="arrived_at column"):
        traces.read(write(tmp_path / "a.csv", ["when"], [["2026-03-04T10:05:00Z"]]))
    off_scale = write(
        tmp_path / "b.csv", ["arrived_at", "sentiment"], [["2026-03-04T10:05:00Z", "3"]]
    )
    with pytest.raises(traces.TraceError, match="outside -1 to 1"):
        traces.read(off_scale)
    with pytest.raises(traces.TraceError, match="TWCS export only"):
        traces.read(off_scale, brand="Brand")


def twcs_export(tmp_path: Path) -> Path:
    rows = [
        [
            "1",
            "101",
            "True",
            "Mon Oct 02 10:00:00 +0000 2017",
            "@AcmeCares my order is late",
            "2",
            "",
        ],
        ["2", "AcmeCares", "False", "Mon Oct 02 10:20:00 +0000 2017", "@101 sorry!", "", "1"],
        ["3", "102", "True", "Mon Oct 02 11:00:00 +0000 2017", "@AcmeCares still broken?", "4", ""],
        ["4", "AcmeCares", "False", "Mon Oct 02 13:00:00 +0000 2017", "@102 fixed", "", "3"],
        ["5", "103", "True", "Tue Oct 03 09:00:00 +0000 2017", "@OtherBrand hello", "", ""],
        ["6", "104", "True", "Tue Oct 03 09:30:00 +0000 2017", "@AcmeCares no reply", "", ""],
    ]
    return write(tmp_path / "twcs.csv", TWCS_HEADER, rows)


def test_a_twcs_export_gives_the_brands_customer_tweets_read_by_triage(tmp_path: Path) -> None:
    export = twcs_export(tmp_path)
    arrivals = traces.read(export, brand="acmecares")
    assert [a.at.hour for a in arrivals] == [10, 11, 9]
    assert len(traces.read(export)) == 4
    assert traces.busiest_day(arrivals) == date(2017, 10, 2)
    assert len(traces.one_day(arrivals, date(2017, 10, 3))) == 1


def test_what_the_brand_really_did_is_counted_from_its_replies(tmp_path: Path) -> None:
    record = traces.brand_record(traces.read_twcs_rows(twcs_export(tmp_path)), "AcmeCares")
    assert (record.customer_tweets, record.answered, record.answered_within_hour) == (3, 2, 1)
    assert record.median_first_response_s == (20 * 60 + 120 * 60) / 2
    assert record.within_hour_of_answered == 0.5


def test_spotifycares_answered_79_percent_of_its_answered_tweets_within_the_hour() -> None:
    rows = traces.read_twcs_rows(UNION)
    spotify = traces.brand_record(rows, "SpotifyCares")
    assert spotify.answered == 3_609
    assert round(spotify.within_hour_of_answered, 3) == 0.794
    everyone = traces.brand_record(rows)
    assert round(everyone.within_hour_of_answered, 3) == 0.786
    assert 11 * 60 < (everyone.median_first_response_s or 0) < 13 * 60


def test_an_export_that_is_not_twcs_is_refused(tmp_path: Path) -> None:
    broken = write(tmp_path / "x.csv", TWCS_HEADER, [["1", "a", "maybe", "now", "t", "", ""]])
    with pytest.raises(traces.TraceError, match="not a readable TWCS export"):
        traces.read(broken)


def test_a_synthetic_day_follows_its_profile_and_its_seed() -> None:
    day = traces.synthetic_day(date(2026, 3, 4), 2_400, seed=5)
    assert day == traces.synthetic_day(date(2026, 3, 4), 2_400, seed=5)
    assert day != traces.synthetic_day(date(2026, 3, 4), 2_400, seed=6)
    assert 2_200 < len(day) < 2_600
    by_hour = [sum(a.at.hour == hour for a in day) for hour in range(24)]
    assert by_hour[20] > 4 * by_hour[3]
    assert all(a.at.date() == date(2026, 3, 4) for a in day)
    assert traces.synthetic_day(date(2026, 3, 4), 0) == []
    with pytest.raises(ValueError):
        traces.synthetic_day(date(2026, 3, 4), -1)
