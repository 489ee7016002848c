"""`allo import`: the Customer Support on Twitter CSV, loaded through the intake path.

Every row becomes an inbound event of the brand's X channel account (raw bytes: the row as
JSON), recorded idempotently on the tweet id, then processed like any webhook delivery. A
customer tweet belongs to the brand it answers, else to the brand that answered it, else to
the brand it @-mentions; one that names no brand at all is counted and left out.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allo.accounts import service as accounts
from allo.channels import service as channels
from allo.channels import twcs
from allo.channels.inbound import ParseError
from allo.channels.models import ChannelAccount
from allo.db.engine import connect
from allo.intake import service as intake
from allo.settings import Settings

ACCOUNT_NAME = "Customer Support on Twitter (import)"


@dataclass
class ImportResult:
    rows: int = 0
    brands: int = 0
    without_brand: int = 0
    invalid_rows: list[str] = field(default_factory=list)
    new_events: int = 0
    report: intake.ProcessReport = field(default_factory=intake.ProcessReport)
    account_id: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        recorded = self.rows - self.without_brand - len(self.invalid_rows)
        report = self.report
        lines = [
            f"account {self.account_id}: {self.rows} rows, {self.brands} brands",
            f"events: {self.new_events} new, {recorded - self.new_events} already imported",
            f"processed {report.processed}, failed {report.failed}, skipped {report.skipped}"
            f" (brand posts answering no known customer); {report.messages} messages",
            f"left out: {self.without_brand} customer tweets naming no brand, "
            f"{len(self.invalid_rows)} invalid rows",
            f"{self.seconds:.1f} s",
        ]
        lines += [f"  invalid: {reason}" for reason in self.invalid_rows[:10]]
        return "\n".join(lines)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as source:
        reader = csv.DictReader(source)
        missing = set(twcs.COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path}: not a TWCS file, missing columns {', '.join(sorted(missing))}"
            )
        return [{c: row.get(c) or "" for c in twcs.COLUMNS} for row in reader]


def brand_of(
    row: dict[str, str], by_id: dict[str, dict[str, str]], brands: dict[str, str]
) -> str | None:
    """The brand handle a row belongs to (see the module's rules)."""
    if row["inbound"] == "False":
        return row["author_id"]
    parent = by_id.get(twcs.tweet_id(row["in_response_to_tweet_id"]))
    if parent is not None and parent["inbound"] == "False":
        return parent["author_id"]
    for response_id in row["response_tweet_id"].split(","):
        response = by_id.get(twcs.tweet_id(response_id))
        if response is not None and response["inbound"] == "False":
            return response["author_id"]
    for mention in twcs.MENTION.findall(row["text"]):
        if mention.lower() in brands:
            return brands[mention.lower()]
    return None


async def import_csv(
    settings: Settings, database_url: str, path: Path, account_id: int | None
) -> ImportResult:
    started = time.monotonic()
    result = ImportResult()
    rows = read_rows(path)
    result.rows = len(rows)
    by_id = {twcs.tweet_id(r["tweet_id"]): r for r in rows}
    brands = {r["author_id"].lower(): r["author_id"] for r in rows if r["inbound"] == "False"}
    result.brands = len(brands)
    ordered: list[tuple[datetime, dict[str, str], str]] = []
    for row in rows:
        try:
            sent_at = twcs.created_at(row)
            twcs.is_inbound(row)
        except ParseError as error:
            result.invalid_rows.append(f"tweet {row['tweet_id']}: {error}")
            continue
        brand = brand_of(row, by_id, brands)
        if brand is None:
            result.without_brand += 1
            continue
        ordered.append((sent_at, row, brand))
    ordered.sort(key=lambda entry: (entry[0], int(twcs.tweet_id(entry[1]["tweet_id"]) or 0)))

    db = connect(database_url, pool_size=2)
    try:
        async with db.transaction() as session:
            if account_id is None:
                account_id = (await accounts.create_account(session, ACCOUNT_NAME)).id
            inboxes = await _brand_inboxes(
                session, account_id, sorted(set(b for _, _, b in ordered))
            )
            result.account_id = account_id
            recorded = await intake.record_many(
                session,
                [
                    intake.NewEvent(
                        account_id=account_id,
                        channel_account_id=inboxes[brand],
                        parser=twcs.PARSER,
                        external_id=twcs.tweet_id(row["tweet_id"]),
                        raw=json.dumps(row, ensure_ascii=False).encode(),
                        content_type="application/json",
                        headers={"source": path.name},
                    )
                    for _, row, brand in ordered
                ],
            )
            result.new_events = sum(not r.duplicate for r in recorded)
        result.report = await intake.process_all(
            db, settings.intake_batch_size, settings.reopen_window
        )
    finally:
        await db.dispose()
    result.seconds = time.monotonic() - started
    return result


async def _brand_inboxes(
    session: AsyncSession, account_id: int, brands: list[str]
) -> dict[str, int]:
    existing = await session.scalars(
        select(ChannelAccount).where(
            ChannelAccount.account_id == account_id, ChannelAccount.kind == "x"
        )
    )
    inboxes = {c.external_id: c.id for c in existing}
    for brand in brands:
        if brand not in inboxes:
            created = await channels.create_channel_account(
                session, account_id, "x", f"@{brand}", external_id=brand
            )
            inboxes[brand] = created.id
    return inboxes
