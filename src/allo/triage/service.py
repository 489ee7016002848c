"""Triage of stored messages: read every customer message once, after it reached the inbox.

Intake stores messages first; triage reads them in batches right after, in the job worker
(`triage.assess`, deferred when intake created messages and by the periodic sweep). A message
is in the inbox whether or not triage succeeds: a batch that fails is retried message by
message, and a message that still fails is marked read with no assessment, and logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession

from allo.accounts.models import Account
from allo.conversations.models import Conversation, Message
from allo.db import bulk
from allo.db.engine import Database
from allo.db.keys import among
from allo.triage.assessor import Assessor, CustomIntents, pack_intent_model
from allo.triage.intents import train_intent_model
from allo.triage.models import IntentLabel, IntentModelVersion, TriageCorrection
from allo.triage.schemas import SENTIMENT_LABELS, SENTIMENT_SCORES, Assessment

logger = logging.getLogger(__name__)

DEFAULT_LANGUAGES = ("fr", "en")
BATCH_SIZE = 200
# Past this many messages waiting, triage reads without embeddings (about ten times faster)
# until it has caught up: late full triage helps nobody, a fast one keeps routing informed.
FAST_PATH_BACKLOG = 2000


@dataclass
class TriageReport:
    assessed: int = 0
    failed: int = 0
    fast: int = 0
    stepped_aside: bool = False


@dataclass(frozen=True)
class Unread:
    message_id: int
    account_id: int
    conversation_id: int
    text: str
    conversation_language: str | None


async def triage_pending(
    db: Database,
    assessor: Assessor,
    batch_size: int = BATCH_SIZE,
    embeddings: bool = True,
    step_aside: Callable[[], Awaitable[bool]] | None = None,
) -> TriageReport:
    """Assess every customer message not read yet, batch after batch.

    Before each batch `step_aside` may say that more urgent work waits (intake): triage then
    stops, to be deferred again when that work is done (the unread stay in the queue).
    """
    report = TriageReport()
    while True:
        if step_aside is not None and await step_aside():
            report.stepped_aside = True
            return report
        batch = await _triage_batch(db, assessor, batch_size, embeddings)
        report.assessed += batch.assessed
        report.failed += batch.failed
        report.fast += batch.fast
        if batch.assessed + batch.failed < batch_size:
            return report


async def _triage_batch(
    db: Database, assessor: Assessor, batch_size: int, embeddings: bool
) -> TriageReport:
    async with db.transaction() as session:
        unread = await _unread(session, batch_size)
        if not unread:
            return TriageReport()
        fast = not embeddings or await _backlog(session) >= FAST_PATH_BACKLOG
        languages = await _account_languages(session, {u.account_id for u in unread})
        custom = await active_custom_intents(session, {u.account_id for u in unread})
        results = await asyncio.to_thread(_assess_all, assessor, unread, languages, custom, fast)
        now = datetime.now(UTC)
        await bulk.update_rows(
            session,
            Message,
            [
                {
                    "id": u.message_id,
                    "language": a.language if a else None,
                    "triage": a.model_dump() if a else None,
                    "triaged_at": now,
                }
                for u, a in zip(unread, results, strict=True)
            ],
        )
        await _set_conversation_languages(session, unread, results)
        await _route_again(session, {u.conversation_id for u in unread})
    failed = sum(a is None for a in results)
    return TriageReport(
        assessed=len(results) - failed, failed=failed, fast=len(results) - failed if fast else 0
    )


async def _unread(session: AsyncSession, limit: int) -> list[Unread]:
    rows = await session.execute(
        select(
            Message.id,
            Message.account_id,
            Message.conversation_id,
            Message.text,
            Conversation.language,
        )
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Message.triaged_at.is_(None), Message.direction == "in")
        .order_by(Message.id)
        .limit(limit)
        .with_for_update(of=Message, skip_locked=True)
    )
    return [Unread(*row) for row in rows.all()]


async def _backlog(session: AsyncSession) -> int:
    waiting = (
        select(Message.id)
        .where(Message.triaged_at.is_(None), Message.direction == "in")
        .limit(FAST_PATH_BACKLOG)
        .subquery()
    )
    return int(await session.scalar(select(func.count()).select_from(waiting)) or 0)


async def _account_languages(
    session: AsyncSession, account_ids: set[int]
) -> dict[int, tuple[str, ...]]:
    rows = await session.execute(
        select(Account.id, Account.settings).where(Account.id.in_(account_ids))
    )
    return {account_id: account_languages(settings) for account_id, settings in rows.all()}


def account_languages(settings: dict[str, Any]) -> tuple[str, ...]:
    """The languages an account works in (its settings' `languages`), French and English else."""
    languages = settings.get("languages")
    if isinstance(languages, list) and languages and all(isinstance(x, str) for x in languages):
        return tuple(languages)
    return DEFAULT_LANGUAGES


async def active_custom_intents(
    session: AsyncSession, account_ids: set[int]
) -> dict[int, CustomIntents]:
    rows = await session.scalars(
        select(IntentModelVersion).where(
            IntentModelVersion.account_id.in_(account_ids), IntentModelVersion.active
        )
    )
    return {row.account_id: CustomIntents.of(row.version, row.artifact) for row in rows}


def _assess_all(
    assessor: Assessor,
    unread: Sequence[Unread],
    languages: dict[int, tuple[str, ...]],
    custom: dict[int, CustomIntents],
    fast: bool,
) -> list[Assessment | None]:
    """Per account (languages and custom intents differ); one message at a time on failure."""
    results: dict[int, Assessment | None] = {}
    for account_id in sorted({u.account_id for u in unread}):
        mine = [u for u in unread if u.account_id == account_id]
        assessed = _assess_group(
            assessor, mine, languages[account_id], custom.get(account_id), fast
        )
        for u, assessment in zip(mine, assessed, strict=True):
            results[u.message_id] = assessment
    return [results[u.message_id] for u in unread]


def _assess_group(
    assessor: Assessor,
    unread: Sequence[Unread],
    languages: tuple[str, ...],
    custom: CustomIntents | None,
    fast: bool,
) -> list[Assessment | None]:
    texts = [u.text for u in unread]
    fallbacks = [u.conversation_language for u in unread]
    try:
        return list(assessor.assess(texts, languages, fallbacks, fast=fast, custom=custom))
    except Exception:
        logger.warning("triage of a batch failed; one message at a time", exc_info=True)
    single: list[Assessment | None] = []
    for text, fallback, u in zip(texts, fallbacks, unread, strict=True):
        try:
            single += assessor.assess([text], languages, [fallback], fast=fast, custom=custom)
        except Exception:
            logger.exception("triage of message %s failed", u.message_id)
            single.append(None)
    return single


async def _set_conversation_languages(
    session: AsyncSession, unread: Sequence[Unread], results: Sequence[Assessment | None]
) -> None:
    """A conversation takes the language of its first customer message that has one."""
    first: dict[int, str] = {}
    for u, assessment in zip(unread, results, strict=True):
        if u.conversation_language is None and assessment and assessment.language:
            first.setdefault(u.conversation_id, assessment.language)
    await bulk.update_rows(
        session, Conversation, [{"id": cid, "language": lang} for cid, lang in first.items()]
    )


async def _route_again(session: AsyncSession, conversation_ids: set[int]) -> None:
    """Conversations routed before triage read them (it waits for triage only so long) are
    routed again with what triage found: spam leaves the clocks, urgency moves up."""
    await session.execute(
        update(Conversation)
        .where(among(Conversation.id, conversation_ids), Conversation.routed_at.is_not(None))
        .values(routed_at=None)
        .execution_options(synchronize_session=False)
    )


async def pending_exists(session: AsyncSession) -> bool:
    found = await session.scalar(
        select(Message.id).where(Message.triaged_at.is_(None), Message.direction == "in").limit(1)
    )
    return found is not None


class TriageError(ValueError):
    """A request about triage that cannot be carried out, with why (a 4xx for the API)."""


# --- an account's own intents ------------------------------------------------------------


async def list_intent_labels(session: AsyncSession, account_id: int) -> list[IntentLabel]:
    rows = await session.scalars(
        select(IntentLabel).where(IntentLabel.account_id == account_id).order_by(IntentLabel.name)
    )
    return list(rows)


async def save_intent_label(
    session: AsyncSession, account_id: int, name: str, description: str, examples: list[str]
) -> IntentLabel:
    """Create the label, or replace its description and examples."""
    label = await session.scalar(
        select(IntentLabel).where(IntentLabel.account_id == account_id, IntentLabel.name == name)
    )
    if label is None:
        label = IntentLabel(account_id=account_id, name=name)
        session.add(label)
    label.description = description
    label.examples = [e.strip() for e in examples if e.strip()]
    await session.flush()
    return label


async def delete_intent_label(session: AsyncSession, account_id: int, label_id: int) -> bool:
    label = await session.get(IntentLabel, label_id)
    if label is None or label.account_id != account_id:
        return False
    await session.delete(label)
    return True


async def correct(
    session: AsyncSession,
    account_id: int,
    message_id: int,
    field: str,
    value: Any,
    user_id: int | None = None,
) -> TriageCorrection:
    """An agent's correction: shown at once on the message, kept for the next training."""
    message = await session.get(Message, message_id, with_for_update=True)
    if message is None or message.account_id != account_id:
        raise LookupError(f"no message {message_id} in this account")
    if message.triage is None:
        raise TriageError("this message has not been read by triage yet")
    key, checked = _corrected(field, value)
    previous = message.triage.get(key)
    message.triage = {**message.triage, key: checked}
    if field == "language":
        message.language = checked
    correction = TriageCorrection(
        account_id=account_id,
        message_id=message_id,
        field=field,
        previous=previous,
        value=checked,
        user_id=user_id,
    )
    session.add(correction)
    # What the customer waits on changed (spam or not, urgent, angry): routing reads the
    # conversation again, so its clocks and place follow the correction.
    await _route_again(session, {message.conversation_id})
    await session.flush()
    return correction


def _corrected(field: str, value: Any) -> tuple[str, Any]:
    """The key of the assessment a correction changes, and its value, checked."""
    if field == "intent":
        intents = [value] if isinstance(value, str) else value
        if not isinstance(intents, list) or not all(isinstance(i, str) and i for i in intents):
            raise TriageError("intent: a label or a list of labels")
        return "intents", intents
    if field == "sentiment":
        if value not in SENTIMENT_LABELS:
            raise TriageError(f"sentiment: one of {', '.join(SENTIMENT_LABELS)}")
        return "sentiment", {"label": value, "score": SENTIMENT_SCORES[value]}
    if field == "language":
        if not isinstance(value, str) or not 2 <= len(value) <= 3 or not value.isalpha():
            raise TriageError("language: an ISO 639-1 code such as fr or en")
        return "language", value.lower()
    if not isinstance(value, bool):
        raise TriageError(f"{field}: true or false")
    return field, value


async def training_examples(
    session: AsyncSession, account_id: int
) -> tuple[list[str], list[str], int]:
    """The admin's examples, then the texts agents corrected to one label (the latest wins)."""
    texts: list[str] = []
    labels: list[str] = []
    for label in await list_intent_labels(session, account_id):
        texts += label.examples
        labels += [label.name] * len(label.examples)
    known = set(labels)
    rows = await session.execute(
        select(Message.text, TriageCorrection.value)
        .join(Message, Message.id == TriageCorrection.message_id)
        .where(TriageCorrection.account_id == account_id, TriageCorrection.field == "intent")
        .order_by(TriageCorrection.message_id, TriageCorrection.id.desc())
        .ext(distinct_on(TriageCorrection.message_id))
    )
    corrections = 0
    for text, value in rows.all():
        chosen = [v for v in value if v in known]
        if len(chosen) == 1 and text.strip():
            texts.append(text)
            labels.append(chosen[0])
            corrections += 1
    return texts, labels, corrections


async def train_account_intents(session: AsyncSession, account_id: int) -> IntentModelVersion:
    """A new version of the account's intent model, made active; the previous ones are kept."""
    texts, labels, corrections = await training_examples(session, account_id)
    try:
        model = await asyncio.to_thread(train_intent_model, texts, labels)
    except ValueError as error:
        raise TriageError(str(error)) from error
    latest = await session.scalar(
        select(func.max(IntentModelVersion.version)).where(
            IntentModelVersion.account_id == account_id
        )
    )
    await session.execute(
        update(IntentModelVersion)
        .where(IntentModelVersion.account_id == account_id, IntentModelVersion.active)
        .values(active=False)
    )
    version = IntentModelVersion(
        account_id=account_id,
        version=(latest or 0) + 1,
        active=True,
        labels=sorted(set(labels)),
        examples=len(texts),
        corrections=corrections,
        metrics={"examples_per_label": model.counts},
        artifact=pack_intent_model(model),
        trained_at=datetime.now(UTC),
    )
    session.add(version)
    await session.flush()
    return version


async def intent_model_versions(session: AsyncSession, account_id: int) -> list[IntentModelVersion]:
    rows = await session.scalars(
        select(IntentModelVersion)
        .where(IntentModelVersion.account_id == account_id)
        .order_by(IntentModelVersion.version.desc())
    )
    return list(rows)
