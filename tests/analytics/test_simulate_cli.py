"""`allo simulate`, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ALLO = str(Path(sys.executable).parent / "allo")


def allo(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ALLO, *arguments], capture_output=True, text=True, timeout=300, check=False
    )


def test_a_trace_is_played_through_both_policies_side_by_side(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    lines = ["arrived_at,urgent"] + [
        f"2026-03-04T10:{minute:02d}:00Z,{'yes' if minute == 30 else 'no'}"
        for minute in range(0, 60, 2)
    ]
    trace.write_text("\n".join(lines) + "\n")
    result = allo(
        "simulate", "--trace", str(trace), "--agents", "1", "--handle", "4m",
        "--handle-cv", "0", "--json", str(tmp_path / "out.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "30 arrivals; 1 agents" in result.stdout
    assert "| fifo |" in result.stdout and "| allo |" in result.stdout
    saved = json.loads((tmp_path / "out.json").read_text())
    fifo, ours = saved["outcomes"]
    assert (fifo["policy"], ours["policy"]) == ("fifo", "allo")
    assert fifo["arrivals"] == ours["arrivals"] == 30
    assert ours["urgent_breaches"] <= fifo["urgent_breaches"]


def test_a_synthetic_day_is_sized_by_its_load() -> None:
    result = allo("simulate", "--agents", "4", "--load", "0.85", "--policy", "allo")
    assert result.returncode == 0, result.stderr
    assert "4 agents" in result.stdout and "| allo |" in result.stdout
    assert "| fifo |" not in result.stdout


def test_bad_options_are_named(tmp_path: Path) -> None:
    assert allo("simulate", "--policy", "lifo").returncode == 2
    bad_handle = allo("simulate", "--handle", "soon")
    assert bad_handle.returncode == 2 and "--handle" in bad_handle.stderr
    broken = tmp_path / "broken.csv"
    broken.write_text("arrived_at\nnot a time\n")
    refused = allo("simulate", "--trace", str(broken))
    assert refused.returncode == 2 and "line 2" in refused.stderr
    calendar = tmp_path / "hours.json"
    calendar.write_text('{"time_zone": "Mars/Olympus", "hours": {"mon": [["09:00", "17:00"]]}}')
    assert allo("simulate", "--calendar", str(calendar)).returncode == 2
