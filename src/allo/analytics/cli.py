"""`allo staffing` (how many agents a volume of contacts needs) and `allo simulate` (a day
of arrivals through the routing code, policy against policy), from the command line."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

_DURATION = re.compile(
    r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?"
)
_SECONDS_IN = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """Seconds in `30m`, `180s`, `1h`, `1h30m` (units in that order, decimals allowed, spaces
    ignored) or a bare number of seconds, as people write durations. Zero is a duration (a
    target of answering without waiting); negatives are not."""
    cleaned = "".join(text.split()).lower()
    match = _DURATION.fullmatch(cleaned)
    if cleaned and match:
        return sum(
            float(value) * _SECONDS_IN[unit] for unit, value in match.groupdict().items() if value
        )
    try:
        seconds = float(cleaned)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise typer.BadParameter(
            f"{text!r} is not a duration: write 30m, 180s, 1h30m or a number of seconds"
        )
    return seconds


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds == 0:
        raise typer.BadParameter("must be longer than 0")
    return seconds


def _level(text: str) -> float:
    try:
        share = float(text)
    except ValueError:
        share = math.nan
    if not 0 < share <= 1:
        raise typer.BadParameter(f"{text!r} is not a share above 0 and at most 1, e.g. 0.8")
    return share


def staffing(
    contacts: Annotated[
        float, typer.Option(min=0, help="Contacts offered in each period, e.g. 100.")
    ],
    per: Annotated[
        float,
        typer.Option(
            parser=_positive_duration, metavar="DURATION", help="The period, e.g. 30m or 1h."
        ),
    ],
    handle: Annotated[
        float,
        typer.Option(
            parser=_positive_duration,
            metavar="DURATION",
            help="Average handle time of a contact (with --concurrency, the elapsed time of one "
            "conversation), e.g. 180s.",
        ),
    ],
    target: Annotated[
        float,
        typer.Option(
            parser=parse_duration,
            metavar="DURATION",
            help="Target answer time, e.g. 20s (0: answered without waiting).",
        ),
    ],
    level: Annotated[
        float,
        typer.Option(
            parser=_level,
            metavar="SHARE",
            help="Share of all offered contacts to answer within the target, e.g. 0.8.",
        ),
    ],
    patience: Annotated[
        float | None,
        typer.Option(
            parser=_positive_duration,
            metavar="DURATION",
            help="Average patience before a waiting contact gives up: Erlang A instead of "
            "Erlang C.",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Conversations an agent holds at once (chat).")
    ] = 1,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of the table.")
    ] = False,
) -> None:
    """How many agents answer LEVEL of the contacts within TARGET: Erlang C, or Erlang A with
    --patience.

    Example: allo staffing --contacts 100 --per 30m --handle 180s --target 20s --level 0.8
    """
    # Imported here so that only this command pays for loading scipy, not every `allo` command.
    from allo.analytics.staffing import agents_needed

    try:
        result = agents_needed(
            contacts, per, handle, target, level, patience_s=patience, concurrency=concurrency
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if as_json:
        figures = dataclasses.asdict(result)
        if result.abandonment is None:
            del figures["abandonment"]
        typer.echo(json.dumps(figures))
        return
    rows = [
        ("agents needed", str(result.agents)),
        ("service level", f"{result.service_level:.4f}"),
        ("probability of waiting", f"{result.probability_of_waiting:.4f}"),
    ]
    if result.abandonment is not None:
        rows.append(("abandonment", f"{result.abandonment:.4f}"))
    rows += [
        ("occupancy", f"{result.occupancy:.4f}"),
        ("average speed of answer", f"{result.average_speed_of_answer_s:.1f} s"),
        ("offered load", f"{result.offered_load_erlangs:.2f} erlangs"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        typer.echo(f"{label:<{width}}  {value}")


def _option_duration(option: str, text: str) -> float:
    try:
        return _positive_duration(text)
    except typer.BadParameter as error:
        raise typer.BadParameter(str(error), param_hint=option) from None


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a day written YYYY-MM-DD") from None


def simulate(
    trace: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Arrivals: a trace CSV (arrived_at, channel, urgent, sentiment, churn, spam, "
            "needs_answer, followers) or a Customer Support on Twitter export. Without it, a "
            "synthetic Poisson day.",
        ),
    ] = None,
    brand: Annotated[
        str | None, typer.Option(help="With a TWCS export: the customer tweets to this brand.")
    ] = None,
    day: Annotated[
        date | None,
        typer.Option(parser=_day, metavar="YYYY-MM-DD", help="Replay this UTC day of the trace."),
    ] = None,
    busiest: Annotated[bool, typer.Option(help="Replay the trace's busiest day.")] = False,
    agents: Annotated[
        int | None, typer.Option(min=1, help="Agents, all day (else sized by --load).")
    ] = None,
    load: Annotated[
        float,
        typer.Option(
            parser=_level,
            metavar="SHARE",
            help="Without --agents: size the team so the day keeps it this busy (hour by hour, "
            "or --flat). With --agents and no trace: the synthetic day's load.",
        ),
    ] = 0.85,
    flat: Annotated[
        bool, typer.Option(help="With --load: one head count for the whole day, no shifts.")
    ] = False,
    arrivals: Annotated[
        int | None, typer.Option(min=0, help="Synthetic day: about this many arrivals.")
    ] = None,
    handle: Annotated[
        str, typer.Option(metavar="DURATION", help="Mean handling time per answer.")
    ] = "5m",
    handle_cv: Annotated[
        float, typer.Option(min=0, help="Variation of handling times (lognormal).")
    ] = 1.0,
    concurrency: Annotated[int, typer.Option(min=1, help="Conversations per agent.")] = 1,
    calendar: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="Business hours (JSON) during which agents work."
        ),
    ] = None,
    target: Annotated[str, typer.Option(metavar="DURATION", help="First-response target.")] = "1h",
    urgent_target: Annotated[
        str, typer.Option(metavar="DURATION", help="Target for urgent messages.")
    ] = "15m",
    policy: Annotated[str, typer.Option(help="fifo, allo, or both side by side.")] = "both",
    seed: Annotated[int, typer.Option(help="Seed of the synthetic day and handling times.")] = 0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the results to this JSON file.")
    ] = None,
) -> None:
    """Replay a day of arrivals against a team through the real routing code, and compare
    policies: FIFO with round robin (what Chatwoot does) against Allo's.

    Example: allo simulate --trace twcs.csv --brand SpotifyCares --busiest --load 0.85
    """
    from allo.analytics import simulation, traces
    from allo.routing.calendars import BusinessCalendar, CalendarError

    handle_s = _option_duration("--handle", handle)
    target_s = _option_duration("--target", target)
    urgent_s = _option_duration("--urgent-target", urgent_target)

    policies = list(simulation.POLICIES) if policy == "both" else [policy]
    if not set(policies) <= set(simulation.POLICIES):
        raise typer.BadParameter(f"--policy: one of fifo, allo, both (not {policy!r})")
    try:
        business = (
            BusinessCalendar.from_json(json.loads(calendar.read_text())) if calendar else None
        )
    except (CalendarError, json.JSONDecodeError) as error:
        raise typer.BadParameter(f"--calendar: {error}") from None
    record = None
    try:
        if trace is not None:
            played = traces.read(trace, brand)
            if busiest or day is not None:
                chosen = day or traces.busiest_day(played)
                played = traces.one_day(played, chosen)
            if brand is not None or traces.is_twcs(trace):
                record = traces.brand_record(traces.read_twcs_rows(trace), brand)
        else:
            count = arrivals
            if count is None:
                per_arrival = traces.synthetic_work_seconds(handle_s, 30.0)
                count = round(load * (agents or 10) * concurrency * 86400 / per_arrival)
            played = traces.synthetic_day(day or date(2026, 3, 4), count, seed)
        options: dict[str, object] = {
            "handle_cv": handle_cv,
            "concurrency": concurrency,
            "calendar": business,
        }
        team = (
            simulation.Team(agents, timedelta(seconds=handle_s), **options)  # type: ignore[arg-type]
            if agents
            else simulation.size_team(
                played, load, timedelta(seconds=handle_s), hourly=not flat, **options
            )
        )
        targets = simulation.FirstResponseTargets(
            normal=timedelta(seconds=target_s), urgent=timedelta(seconds=urgent_s)
        )
        outcomes = [
            simulation.simulate(played, team, name, targets, seed=seed) for name in policies
        ]
    except (traces.TraceError, ValueError) as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(_simulation_table(outcomes, team, record))
    if json_out is not None:
        json_out.write_text(
            json.dumps(
                {
                    "arrivals": len(played),
                    "agents": team.agents,
                    "shifts": list(team.shifts) if team.shifts else None,
                    "handle_s": handle_s,
                    "concurrency": concurrency,
                    "outcomes": [outcome.to_json() for outcome in outcomes],
                    "brand_record": dataclasses.asdict(record) if record else None,
                },
                indent=2,
            )
            + "\n"
        )


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def _simulation_table(outcomes: list[Any], team: Any, record: Any) -> str:
    shifts = f", shifts by hour (UTC) {list(team.shifts)}" if team.shifts else ""
    lines = [
        f"{outcomes[0].arrivals if outcomes else 0} arrivals; {team.agents} agents{shifts}",
        "",
        "| policy | to answer | within 1 h | response rate | median first response "
        "| p90 first response | breaches | urgent breaches | occupancy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for outcome in outcomes:
        lines.append(
            f"| {outcome.policy} | {outcome.to_answer:,} | {outcome.within_hour:.1%} "
            f"| {outcome.response_rate:.1%} | {_minutes(outcome.percentile(0.5))} "
            f"| {_minutes(outcome.percentile(0.9))} | {outcome.breaches:,} "
            f"| {outcome.urgent_breaches:,} | {outcome.occupancy:.0%} |"
        )
    if record is not None:
        lines += [
            "",
            f"What {record.brand} really did, over the whole export: "
            f"{record.answered:,} of {record.customer_tweets:,} answered, "
            f"{record.within_hour_of_answered:.1%} of those within the hour, "
            f"median {_minutes(record.median_first_response_s)}.",
        ]
    return "\n".join(lines)
