"""FIFO against Allo's routing on real and synthetic days, at 85% of the team's capacity.

Real days: the customer tweets of the Customer Support on Twitter sample (../shared/data/twcs/
union.csv), each read by Allo's triage (fast path), replayed day by day for the busiest days. The
team is sized so that the day keeps it 85% busy: an hourly shift plan from the day's own volumes
(a perfect forecast), and, as a harder case, one flat head count all day. Synthetic days: Poisson
arrivals at 85% of a flat team, constant through the day and with an intraday profile.

    .venv/bin/python bench/simulation.py

It prints the tables and writes bench/results/simulation.json (and .md).
"""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import figures
from allo.analytics import simulation, traces
from allo.analytics.simulation import Arrival, Outcome, Team

BENCH = Path(__file__).resolve().parent
UNION = BENCH.parent.parent / "shared" / "data" / "twcs" / "union.csv"
LOAD = 0.85
HANDLE = timedelta(minutes=5)
MEDIAN, P90 = "median_first_response_s", "p90_first_response_s"


def compare(arrivals: list[Arrival], team: Team) -> dict[str, Outcome]:
    return {name: simulation.simulate(arrivals, team, name, seed=1) for name in simulation.POLICIES}


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summed: Counter[str] = Counter()
    for row in rows:
        for policy in simulation.POLICIES:
            outcome = row[policy]
            summed[f"{policy}_to_answer"] += outcome["to_answer"]
            summed[f"{policy}_within"] += round(outcome["within_hour"] * outcome["to_answer"])
            summed[f"{policy}_breaches"] += outcome["breaches"]
            summed[f"{policy}_urgent_breaches"] += outcome["urgent_breaches"]
    return {
        policy: {
            "within_hour": summed[f"{policy}_within"] / max(1, summed[f"{policy}_to_answer"]),
            "breaches": summed[f"{policy}_breaches"],
            "urgent_breaches": summed[f"{policy}_urgent_breaches"],
        }
        for policy in simulation.POLICIES
    }


def real_days(days: int, hourly: bool) -> list[dict[str, Any]]:
    arrivals = traces.read(UNION)
    busiest = [day for day, _ in Counter(a.at.date() for a in arrivals).most_common(days)]
    rows = []
    for day in busiest:
        played = traces.one_day(arrivals, day)
        team = simulation.size_team(played, LOAD, HANDLE, hourly=hourly)
        outcomes = compare(played, team)
        rows.append(
            {
                "day": day.isoformat(),
                "arrivals": len(played),
                "agents": team.agents,
                "agent_hours": sum(team.shifts) if team.shifts else team.agents * 24,
                **{name: outcome.to_json() for name, outcome in outcomes.items()},
            }
        )
    return rows


def synthetic_days(agent_counts: list[int]) -> list[dict[str, Any]]:
    rows = []
    per_arrival = traces.synthetic_work_seconds(HANDLE.total_seconds(), 30.0)
    for profile_name, profile in (("constant", (1.0,) * 24), ("intraday", traces.INTRADAY)):
        for agents in agent_counts:
            count = round(LOAD * agents * 86400 / per_arrival)
            played = traces.synthetic_day(date(2026, 3, 4), count, seed=1, profile=profile)
            outcomes = compare(played, Team(agents, HANDLE))
            rows.append(
                {
                    "day": f"synthetic, {profile_name}",
                    "arrivals": len(played),
                    "agents": agents,
                    "agent_hours": agents * 24,
                    **{name: outcome.to_json() for name, outcome in outcomes.items()},
                }
            )
    return rows


def render(title: str, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"### {title}",
        "",
        "| day | arrivals | agents (agent-hours) | within 1 h: FIFO / Allo | breaches: FIFO / Allo "
        "| urgent breaches: FIFO / Allo | median first response: FIFO / Allo (min) "
        "| p90: FIFO / Allo (min) | occupancy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        fifo, ours = row["fifo"], row["allo"]

        def minutes(outcome: dict[str, Any], key: str) -> str:
            value = outcome[key]
            return "-" if value is None else f"{value / 60:.1f}"

        lines.append(
            f"| {row['day']} | {row['arrivals']:,} | {row['agents']} ({row['agent_hours']}) "
            f"| {fifo['within_hour']:.1%} / **{ours['within_hour']:.1%}** "
            f"| {fifo['breaches']} / **{ours['breaches']}** "
            f"| {fifo['urgent_breaches']} / **{ours['urgent_breaches']}** "
            f"| {minutes(fifo, MEDIAN)} / {minutes(ours, MEDIAN)} "
            f"| {minutes(fifo, P90)} / {minutes(ours, P90)} "
            f"| {ours['occupancy']:.0%} |"
        )
    summary = totals(rows)
    lines.append(
        f"| **all** | | | {summary['fifo']['within_hour']:.1%} / "
        f"**{summary['allo']['within_hour']:.1%}** | {summary['fifo']['breaches']} / "
        f"**{summary['allo']['breaches']}** | {summary['fifo']['urgent_breaches']} / "
        f"**{summary['allo']['urgent_breaches']}** | | | |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=12, help="the busiest real days replayed")
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "simulation.json")
    args = parser.parse_args()
    sections = {
        "Real days (TWCS), hourly shifts at 85%": real_days(args.days, hourly=True),
        "Real days (TWCS), one flat head count at 85%": real_days(args.days, hourly=False),
        "Synthetic Poisson days, flat team at 85%": synthetic_days([3, 10, 30]),
    }
    rendered = "\n\n".join(render(title, rows) for title, rows in sections.items())
    print(rendered)
    document = {"load": LOAD, "handle_s": HANDLE.total_seconds(), "sections": sections}
    figures.write(args.json, document, rendered)


if __name__ == "__main__":
    main()
