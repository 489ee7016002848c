"""Arrival traces for `allo simulate`: a trace CSV, a Customer Support on Twitter export, or a
synthetic Poisson day; and, for a TWCS export, what the brand really did.

A trace CSV has a header and one customer message per row: `arrived_at` (ISO 8601 with a time
zone) and, optionally, `channel`, `urgent`, `sentiment` (-1 to 1), `churn`, `spam`,
`needs_answer` and `followers`. A TWCS export (its own header) is read as the customers' tweets,
each read by Allo's triage (the fast path) for the fields above.
"""

from __future__ import annotations

import csv
import math
import random
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from allo.analytics.simulation import Arrival
from allo.channels import twcs
from allo.channels.inbound import ParseError

TRUE = {"1", "true", "yes", "y", "t"}
FALSE = {"0", "false", "no", "n", "f", ""}
# The hours of a day (UTC) as a share of the daily mean: quiet nights, a morning ramp, a long
# day and an evening peak. An assumption for synthetic days; real traces bring their own shape.
INTRADAY = (
    0.35, 0.25, 0.2, 0.2, 0.25, 0.4, 0.65, 0.95, 1.2, 1.35, 1.4, 1.4,
    1.35, 1.35, 1.35, 1.3, 1.3, 1.3, 1.35, 1.45, 1.45, 1.25, 0.95, 0.6,
)  # fmt: skip
# The mix of a synthetic day, as Allo's triage read the 20,820 customer tweets of the TWCS
# sample (see docs/routing.md).
SYNTHETIC_MIX = {
    "urgent": 0.0043,
    "negative": 0.1498,
    "churn": 0.0023,
    "spam": 0.0022,
    "no_answer": 0.0817,
}


class TraceError(ValueError):
    """A trace that cannot be read; the message names the line and the field."""


@dataclass(frozen=True)
class BrandRecord:
    """How a brand really answered the customer tweets of a TWCS export."""

    brand: str
    customer_tweets: int
    answered: int
    answered_within_hour: int
    median_first_response_s: float | None

    @property
    def within_hour_of_answered(self) -> float:
        return self.answered_within_hour / self.answered if self.answered else 0.0


def read(path: Path, brand: str | None = None) -> list[Arrival]:
    """The arrivals of a trace CSV or a TWCS export (told apart by the header), in time order."""
    with path.open(newline="", encoding="utf-8") as file:
        rows = csv.DictReader(file)
        header = tuple(rows.fieldnames or ())
        if set(twcs.COLUMNS) <= set(header):
            return from_twcs(list(rows), brand)
        if brand is not None:
            raise TraceError("--brand applies to a TWCS export only")
        if "arrived_at" not in header:
            raise TraceError(f"{path}: a trace needs an arrived_at column (header: {header})")
        return sorted(_trace_rows(rows), key=lambda arrival: arrival.at)


def _trace_rows(rows: Iterable[dict[str, str]]) -> Iterator[Arrival]:
    for line, row in enumerate(rows, start=2):
        try:
            yield Arrival(
                at=_instant(row["arrived_at"]),
                channel=(row.get("channel") or "x").strip(),
                urgent=_flag(row.get("urgent")),
                sentiment=_sentiment(row.get("sentiment")),
                churn=_flag(row.get("churn")),
                spam=_flag(row.get("spam")),
                needs_answer=_flag(row.get("needs_answer"), default=True),
                followers=int(row.get("followers") or 0),
            )
        except (ValueError, TypeError) as error:
            raise TraceError(f"line {line}: {error}") from error


def _instant(value: str | None) -> datetime:
    moment = datetime.fromisoformat((value or "").strip())
    if moment.tzinfo is None:
        raise ValueError(f"arrived_at {value!r} has no time zone")
    return moment.astimezone(UTC)


def _flag(value: str | None, default: bool = False) -> bool:
    text = (value or "").strip().lower()
    if not text:
        return default
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(f"{value!r} is not a yes/no value")


def _sentiment(value: str | None) -> float:
    score = float(value or 0.0)
    if not -1.0 <= score <= 1.0:
        raise ValueError(f"sentiment {score} is outside -1 to 1")
    return score


def from_twcs(rows: Sequence[dict[str, str]], brand: str | None = None) -> list[Arrival]:
    """The customer tweets (to `brand`, or to any brand), read by triage's fast path."""
    tweets = _customer_tweets(rows, brand)
    if not tweets:
        raise TraceError(f"no customer tweet {'to ' + brand if brand else ''} in the export")
    from allo.triage.assessor import Assessor

    assessments = Assessor().assess([row["text"] for row in tweets], ("fr", "en"), fast=True)
    arrivals = [
        Arrival(
            at=twcs.created_at(row),
            urgent=assessment.urgent,
            sentiment=assessment.sentiment.score,
            churn="churn" in assessment.intents,
            spam=assessment.spam,
            needs_answer=assessment.needs_answer,
        )
        for row, assessment in zip(tweets, assessments, strict=True)
    ]
    return sorted(arrivals, key=lambda arrival: arrival.at)


def brand_record(rows: Sequence[dict[str, str]], brand: str | None = None) -> BrandRecord:
    """What the brand (or every brand) did with the customer tweets of the export."""
    by_id = {twcs.tweet_id(row["tweet_id"]): row for row in rows}
    delays = []
    tweets = _customer_tweets(rows, brand)
    for row in tweets:
        replies = [
            by_id[reply]
            for reply in _ids(row.get("response_tweet_id"))
            if reply in by_id and _is_brand_reply(by_id[reply], brand)
        ]
        if replies:
            first = min(twcs.created_at(reply) for reply in replies)
            delays.append((first - twcs.created_at(row)).total_seconds())
    return BrandRecord(
        brand=brand or "all brands",
        customer_tweets=len(tweets),
        answered=len(delays),
        answered_within_hour=sum(delay <= 3600 for delay in delays),
        median_first_response_s=statistics.median(delays) if delays else None,
    )


def read_twcs_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _customer_tweets(rows: Sequence[dict[str, str]], brand: str | None) -> list[dict[str, str]]:
    """Inbound tweets with a valid date; to `brand` when named: it is mentioned at the start,
    it answers one of the brand's tweets, or one of the brand's tweets answers it."""
    try:
        by_id = {twcs.tweet_id(row["tweet_id"]): row for row in rows}
        inbound = [row for row in rows if twcs.is_inbound(row)]
        for row in inbound:
            twcs.created_at(row)
    except (KeyError, ParseError) as error:
        raise TraceError(f"not a readable TWCS export: {error}") from error
    if brand is None:
        return inbound
    wanted = brand.casefold()

    def to_brand(row: dict[str, str]) -> bool:
        if wanted in (name.casefold() for name in twcs.leading_mentions(row.get("text", ""))):
            return True
        linked = [*_ids(row.get("response_tweet_id")), *_ids(row.get("in_response_to_tweet_id"))]
        return any(
            other in by_id and by_id[other]["author_id"].casefold() == wanted for other in linked
        )

    return [row for row in inbound if to_brand(row)]


def _is_brand_reply(row: dict[str, str], brand: str | None) -> bool:
    if row.get("inbound", "").strip() != "False":
        return False
    return brand is None or row["author_id"].casefold() == brand.casefold()


def _ids(value: str | None) -> list[str]:
    return [twcs.tweet_id(part) for part in (value or "").split(",") if part.strip()]


def is_twcs(path: Path) -> bool:
    with path.open(newline="", encoding="utf-8") as file:
        header = next(csv.reader(file), [])
    return set(twcs.COLUMNS) <= set(header)


def synthetic_work_seconds(handle_s: float, dismiss_s: float) -> float:
    """The mean work one arrival of a synthetic day brings, in agent-seconds."""
    dismissed = SYNTHETIC_MIX["spam"] + SYNTHETIC_MIX["no_answer"]
    return (1 - dismissed) * handle_s + dismissed * dismiss_s


def one_day(arrivals: Sequence[Arrival], day: date) -> list[Arrival]:
    """The arrivals of one UTC day."""
    return [arrival for arrival in arrivals if arrival.at.date() == day]


def busiest_day(arrivals: Sequence[Arrival]) -> date:
    if not arrivals:
        raise TraceError("the trace is empty")
    counts: dict[date, int] = {}
    for arrival in arrivals:
        counts[arrival.at.date()] = counts.get(arrival.at.date(), 0) + 1
    return max(counts, key=lambda day: (counts[day], day))


def synthetic_day(
    day: date, count: int, seed: int = 0, profile: Sequence[float] = INTRADAY
) -> list[Arrival]:
    """About `count` arrivals over one UTC day: a Poisson process whose rate follows `profile`
    (hours, mean 1), with the triage mix of SYNTHETIC_MIX."""
    if count < 0:
        raise ValueError("the number of arrivals cannot be negative")
    generator = random.Random(seed)
    mean = sum(profile) / len(profile)
    start = datetime.combine(day, time(0), UTC)
    arrivals = []
    for hour, weight in enumerate(profile):
        expected = count / len(profile) * weight / mean
        for _ in range(_poisson(generator, expected)):
            at = start + timedelta(hours=hour, seconds=generator.uniform(0, 3600))
            arrivals.append(_synthetic_arrival(generator, at))
    return sorted(arrivals, key=lambda arrival: arrival.at)


def _synthetic_arrival(generator: random.Random, at: datetime) -> Arrival:
    draw = generator.random
    negative = draw() < SYNTHETIC_MIX["negative"]
    return Arrival(
        at=at,
        urgent=draw() < SYNTHETIC_MIX["urgent"],
        sentiment=-0.8 if negative else 0.1,
        churn=draw() < SYNTHETIC_MIX["churn"],
        spam=draw() < SYNTHETIC_MIX["spam"],
        needs_answer=draw() >= SYNTHETIC_MIX["no_answer"],
    )


def _poisson(generator: random.Random, mean: float) -> int:
    """A Poisson draw (normal approximation above 500, where Knuth's method underflows)."""
    if mean > 500:
        return max(0, round(generator.gauss(mean, math.sqrt(mean))))
    limit, product, count = math.exp(-mean), generator.random(), 0
    while product > limit:
        product *= generator.random()
        count += 1
    return count
