"""`allo staffing`, as a user runs it, and the durations it reads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from allo.analytics.cli import parse_duration

ALLO = str(Path(sys.executable).parent / "allo")
EXAMPLE = ("--contacts", "100", "--per", "30m", "--handle", "180s", "--target", "20s")
BOX = re.compile(r"[│╭╮╰╯─]")


def staffing(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ALLO, "staffing", *arguments], capture_output=True, text=True, timeout=60, check=False
    )


def table(output: str) -> dict[str, str]:
    """Label to value, from the aligned two-column table."""
    return dict(
        (label.strip(), value.strip())
        for label, value in (line.split("  ", 1) for line in output.splitlines())
    )


def flat(text: str) -> str:
    """Output without rich's boxes and line wrapping, so messages read on one line."""
    return " ".join(BOX.sub(" ", text).split())


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("30m", 1800),
        ("180s", 180),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("2m30s", 150),
        ("1.5h", 5400),
        ("90", 90),
        ("12.5", 12.5),
        ("0", 0),
        ("0s", 0),
    ],
)
def test_durations_read_as_people_write_them(written: str, seconds: float) -> None:
    assert parse_duration(written) == seconds


@pytest.mark.parametrize("written", ["", "m", "3min", "30x", "-5s", "-5", "30m1h", "nan", "inf"])
def test_what_is_not_a_duration_is_a_bad_parameter(written: str) -> None:
    with pytest.raises(typer.BadParameter, match="not a duration"):
        parse_duration(written)


def test_staffing_prints_the_issues_example_as_a_table() -> None:
    result = staffing(*EXAMPLE, "--level", "0.8")

    assert result.returncode == 0, result.stderr
    assert table(result.stdout) == {
        "agents needed": "14",
        "service level": "0.8884",
        "probability of waiting": "0.1741",
        "occupancy": "0.7143",
        "average speed of answer": "7.8 s",
        "offered load": "10.00 erlangs",
    }


def test_staffing_prints_one_json_object_with_json() -> None:
    result = staffing(*EXAMPLE, "--level", "0.8", "--json")

    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["agents"] == 14
    assert round(figures["service_level"], 4) == 0.8884
    assert round(figures["probability_of_waiting"], 4) == 0.1741
    assert set(figures) == {
        "agents",
        "service_level",
        "probability_of_waiting",
        "occupancy",
        "average_speed_of_answer_s",
        "offered_load_erlangs",
    }


def test_staffing_with_patience_uses_erlang_a_and_shows_abandonment() -> None:
    shown = staffing(*EXAMPLE, "--level", "0.8", "--patience", "120s")
    printed = staffing(*EXAMPLE, "--level", "0.8", "--patience", "2m", "--json")

    assert shown.returncode == 0, shown.stderr
    assert table(shown.stdout) == {
        "agents needed": "12",
        "service level": "0.8256",
        "probability of waiting": "0.2798",
        "abandonment": "0.0616",
        "occupancy": "0.7820",
        "average speed of answer": "6.3 s",
        "offered load": "10.00 erlangs",
    }
    assert printed.returncode == 0, printed.stderr
    figures = json.loads(printed.stdout)
    assert figures["agents"] == 12 and round(figures["abandonment"], 4) == 0.0616


def test_staffing_with_two_chats_at_once_needs_half_the_agents() -> None:
    result = staffing(*EXAMPLE, "--level", "0.8", "--concurrency", "2", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["agents"] == 7


def test_a_malformed_duration_is_refused_naming_the_option() -> None:
    result = staffing(
        "--contacts",
        "100",
        "--per",
        "30m",
        "--handle",
        "3 minutes",
        "--target",
        "20s",
        "--level",
        "0.8",
    )

    assert result.returncode == 2
    assert "Invalid value for '--handle'" in flat(result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("level", ["0", "1.5", "80%"])
def test_a_level_that_is_not_a_share_is_refused_naming_the_option(level: str) -> None:
    result = staffing(*EXAMPLE, "--level", level)

    assert result.returncode == 2
    assert "Invalid value for '--level'" in flat(result.stderr)


def test_an_unreachable_level_is_refused_with_the_reason() -> None:
    result = staffing(*EXAMPLE, "--level", "1")

    assert result.returncode == 2
    assert "a service level of 1 cannot be reached" in flat(result.stderr)
    assert "Traceback" not in result.stderr
