"""What each network lets a brand send, checked in the composer and again before a reply is
queued: length limits (X counts by weight: most scripts one, CJK and emoji two, every link 23),
and the messaging windows (WhatsApp 24 hours after the customer's last message, then templates
only; Messenger and Instagram 24 hours, then 7 days with the human-agent tag, then nothing)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from twitter_text import parse_tweet

STANDARD_WINDOW = timedelta(hours=24)
HUMAN_AGENT_WINDOW = timedelta(days=7)
# Characters a message may hold, per network (X posts: weighted, the others: plain).
MAX_LENGTH = {
    "x": 280,
    "messenger": 2_000,
    "instagram": 1_000,
    "whatsapp": 4_096,
    "facebook": 8_000,
}
# A private message where the network allows more than in public (X direct messages).
MAX_PRIVATE_LENGTH = {"x": 10_000}
WINDOWED = ("whatsapp", "messenger", "instagram")


@dataclass(frozen=True)
class ChannelCheck:
    """What the composer shows and what the outbox needs to know about one reply."""

    length: int
    limit: int | None
    window: str  # none (no window applies), open, human_agent, template_only, closed
    window_ends_at: datetime | None = None
    problems: list[str] = field(default_factory=list)  # too_long, window_closed


def _network_rules(channel: str, visibility: str) -> str:
    """A Facebook page's private messages are Messenger's, with Messenger's rules."""
    return "messenger" if channel == "facebook" and visibility == "private" else channel


def length_of(channel: str, text: str, visibility: str = "public") -> int:
    if channel == "x" and visibility == "public":
        return int(parse_tweet(text).weightedLength)
    return len(text)


def limit_of(channel: str, visibility: str) -> int | None:
    channel = _network_rules(channel, visibility)
    if visibility == "private" and channel in MAX_PRIVATE_LENGTH:
        return MAX_PRIVATE_LENGTH[channel]
    return MAX_LENGTH.get(channel)


def window_of(
    channel: str, visibility: str, last_inbound_at: datetime | None, now: datetime
) -> tuple[str, datetime | None]:
    """Whether a private message may be sent now, and until when."""
    channel = _network_rules(channel, visibility)
    if channel not in WINDOWED or visibility == "public" or last_inbound_at is None:
        return "none", None
    standard = last_inbound_at + STANDARD_WINDOW
    if now < standard:
        return "open", standard
    if channel == "whatsapp":
        return "template_only", None
    tagged = last_inbound_at + HUMAN_AGENT_WINDOW
    if now < tagged:
        return "human_agent", tagged
    return "closed", None


def check(
    channel: str, visibility: str, text: str, last_inbound_at: datetime | None, now: datetime
) -> ChannelCheck:
    limit = limit_of(channel, visibility)
    length = length_of(channel, text, visibility)
    window, ends_at = window_of(channel, visibility, last_inbound_at, now)
    problems = []
    if limit is not None and length > limit:
        problems.append("too_long")
    if window in ("template_only", "closed"):
        problems.append("window_closed")
    return ChannelCheck(length, limit, window, ends_at, problems)
