"""X: Account Activity / X Activity API webhooks and API v2.

Intake comes three ways, all through `parse`:
- the Account Activity API (AAA) posts v1.1-shaped events for each subscribed account
  (`tweet_create_events`, `direct_message_events`, `tweet_delete_events`, …);
- the X Activity API (XAA) posts `{"data": {"event_type", "payload", "includes"}}` envelopes
  holding API v2 objects;
- where neither webhook is available, `fetch` polls the v2 mentions timeline (and a recent
  search) and records each page as it came, so a polled mention is parsed like a pushed one.

Text is kept whole: the leading @mentions of a reply (outside `display_text_range`) stay, as
they name everyone in the conversation and the polled v2 text has them too. X escapes `&`, `<`
and `>` in post text as HTML entities; they are turned back into the characters the customer
typed (the text is stored as plain text, never as HTML). Direct messages are kept as delivered.

Outbound uses API v2 with an OAuth 2.0 user-context token (`Authorization: Bearer`). X limits
each user token per endpoint and announces the limit on every answer (`x-rate-limit-*`, and
`x-user-limit-24hour-*` for posting): the last limits seen are kept in RATE_LIMITS, so a call
that could only earn a 429 is not made.
"""

from __future__ import annotations

import json
import mimetypes
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from allo.channels import signatures
from allo.channels.fields import as_list, as_object
from allo.channels.inbound import (
    Author,
    Direction,
    InboundMessage,
    Parsed,
    ParseError,
    StatusUpdate,
)
from allo.channels.outbound import Connection, Fetched, Health, Lookup, Outgoing, SendError, Sent
from allo.channels.text import clean_text
from allo.replies import rules

KINDS = ("x",)
PARSER = "x"
CREDENTIALS = (
    "access_token",
    "consumer_secret",
)
DEFAULT_API_URL = "https://api.x.com"

MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
X_ENTITY = re.compile(r"&(amp|lt|gt);")
X_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}
MEDIA_TYPES = {"photo": "image", "video": "video", "animated_gif": "video"}
# Events that tell nothing about a message: likes, follows, blocks, mutes, typing, revoked
# authorisations, replay jobs.
QUIET_EVENTS = (
    "favorite_events",
    "follow_events",
    "unfollow_events",
    "block_events",
    "unblock_events",
    "mute_events",
    "unmute_events",
    "direct_message_indicate_typing_events",
    "user_event",
    "replay_job_status",
)
ACCOUNT_ACTIVITY_EVENTS = (
    "tweet_create_events",
    "direct_message_events",
    "tweet_delete_events",
    "direct_message_mark_read_events",
    *QUIET_EVENTS,
)

# Media sent in a direct message is only served to a participant: TON URLs map onto the v2
# endpoint that takes the OAuth 2.0 user token.
TON_MEDIA = re.compile(r"^https://ton\.twitter\.com/1\.1/ton/data/dm/(\d+)/(\d+)/([^/?#]+)")
X_MEDIA_HOSTS = ("twimg.com", "twitter.com", "x.com")

POST = "POST /2/tweets"
DIRECT_MESSAGE = "POST /2/dm_conversations/with/:participant_id/messages"
OWN_POSTS = "GET /2/users/:id/tweets"
CONVERSATION_EVENTS = "GET /2/dm_conversations/with/:participant_id/dm_events"
ME = "GET /2/users/me"
SUBSCRIPTION = "GET /2/account_activity/webhooks/:webhook_id/subscriptions/all"
TWEET_FIELDS = (
    "author_id,conversation_id,created_at,in_reply_to_user_id,referenced_tweets,attachments,"
    "note_tweet"
)
PAGE_FIELDS = {
    "expansions": "author_id,attachments.media_keys",
    "tweet.fields": TWEET_FIELDS,
    "user.fields": "username,name,public_metrics,verified",
    "media.fields": "url,type,preview_image_url,variants",
    "max_results": "100",
}
PAGES_PER_POLL = 5
PAGES_PER_LOOKUP = 5
# How long before the send the lookup starts: clocks differ, and X dates posts to the second.
LOOKUP_MARGIN = timedelta(minutes=2)
EXPIRY_WARNING = timedelta(hours=24)
URL = re.compile(r"https?://\S+")
LEADING_MENTIONS = re.compile(r"^(?:@\w+\s+)+")

RATE_LIMITS: dict[tuple[int, str], tuple[int, float]] = {}
"""The last limit X announced per (channel account, endpoint): calls remaining, and the epoch
second the window resets. Process-wide on purpose: every worker of this process sends with the
same tokens; a restart forgets them and the next answer teaches them again."""


def verify(headers: Mapping[str, str], raw: bytes, credentials: Mapping[str, str]) -> None:
    signatures.verify_x(headers, raw, credentials.get("consumer_secret", ""))


def handshake(query: Mapping[str, str], credentials: Mapping[str, str]) -> tuple[str, str]:
    token = signatures.x_crc_response(
        query.get("crc_token", ""), credentials.get("consumer_secret", "")
    )
    return json.dumps({"response_token": token}), "application/json"


# Parsing: pure, from the exact bytes X sent.


def parse(raw: bytes, external_id: str, received_at: datetime, own_id: str) -> list[Parsed]:
    body = as_object(_json(raw), "body")
    if "for_user_id" in body or any(key in body for key in ACCOUNT_ACTIVITY_EVENTS):
        return _account_activity(body, received_at, own_id)
    data = body.get("data")
    if isinstance(data, dict) and "event_type" in data:
        return _activity_event(data, received_at, own_id)
    if isinstance(data, list) or "meta" in body:
        return _api_page(body, received_at, own_id)
    raise ParseError(
        f"not an X webhook event nor an API v2 page (keys: {', '.join(sorted(body)[:10])})"
    )


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ParseError(f"not JSON: {error}") from error


def _account_activity(body: dict[str, Any], received_at: datetime, own_id: str) -> list[Parsed]:
    users = as_object(body.get("users", {}), "users")
    parsed: list[Parsed] = []
    for tweet in _events(body, "tweet_create_events"):
        message = _v1_tweet(tweet, own_id)
        if message is not None:
            parsed.append(message)
    for event in _events(body, "direct_message_events"):
        parsed.append(_direct_message(event, users, own_id))
    for event in _events(body, "tweet_delete_events"):
        status = as_object(event.get("status"), "tweet_delete_events[].status")
        at = _ms_time(event.get("timestamp_ms"), received_at)
        parsed.append(StatusUpdate("deleted", at, external_id=_id(status.get("id"), "status.id")))
    for event in _events(body, "direct_message_mark_read_events"):
        update = _read(event, received_at, own_id)
        if update is not None:
            parsed.append(update)
    return parsed


def _events(body: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    return [as_object(event, f"{key}[]") for event in as_list(body.get(key, []), key)]


def _v1_tweet(tweet: dict[str, Any], own_id: str) -> InboundMessage | None:
    """A post in the v1.1 shape of the Account Activity API; None for a repost (a retweet
    repeats a post without a word of its own: nothing to answer)."""
    if "retweeted_status" in tweet:
        return None
    tweet_id = _id(tweet.get("id_str"), "tweet.id_str")
    author = _author(as_object(tweet.get("user"), "tweet.user"))
    extended = as_object(tweet.get("extended_tweet", {}), "tweet.extended_tweet")
    text = extended.get("full_text") or tweet.get("full_text") or tweet.get("text")
    direction: Direction = "out" if author.platform_id == own_id else "in"
    return InboundMessage(
        external_id=tweet_id,
        contact=_v1_replied_user(tweet, own_id) if direction == "out" else author,
        text=_tweet_text(text, "tweet.text"),
        sent_at=_v1_time(tweet.get("created_at")),
        direction=direction,
        visibility="public",
        author_name=author.handle if direction == "out" else None,
        reply_to_external_id=_optional_id(tweet.get("in_reply_to_status_id_str")),
        attachments=tuple(_v1_media(m, private=False) for m in _v1_media_list(tweet, extended)),
    )


def _v1_replied_user(tweet: Mapping[str, Any], own_id: str) -> Author | None:
    """The customer a brand post answers (a brand post that answers nobody names none)."""
    user_id = _optional_id(tweet.get("in_reply_to_user_id_str"))
    if user_id is None or user_id == own_id:
        return None
    return Author(platform_id=user_id, handle=_optional_text(tweet.get("in_reply_to_screen_name")))


def _v1_media_list(tweet: Mapping[str, Any], extended: Mapping[str, Any]) -> list[dict[str, Any]]:
    for holder in (extended, tweet):
        for key in ("extended_entities", "entities"):
            entities = as_object(holder.get(key, {}), f"tweet.{key}")
            if "media" in entities:
                return [as_object(m, "media[]") for m in as_list(entities["media"], "media")]
    return []


def _v1_media(media: Mapping[str, Any], private: bool) -> dict[str, Any]:
    kind = str(media.get("type", ""))
    attachment: dict[str, Any] = {
        "type": MEDIA_TYPES.get(kind, "file"),
        "media_id": _optional_id(media.get("id_str") or media.get("id")),
        "url": _optional_text(media.get("media_url_https")),
    }
    variant = _best_variant(as_object(media.get("video_info", {}), "media.video_info"), "bitrate")
    if variant is not None:
        attachment["preview_url"] = attachment["url"]
        attachment["url"], attachment["content_type"] = variant
    elif attachment["url"]:
        attachment["content_type"] = _content_type(attachment["url"])
    if private:
        attachment["visibility"] = "private"
    return {key: value for key, value in attachment.items() if value is not None}


def _best_variant(holder: Mapping[str, Any], rate_key: str) -> tuple[str, str] | None:
    """The best MP4 of a video (streaming playlists cannot be stored as one file)."""
    variants = [as_object(v, "variants[]") for v in as_list(holder.get("variants", []), "variants")]
    mp4 = [v for v in variants if v.get("content_type") == "video/mp4" and v.get("url")]
    if not mp4:
        return None
    best = max(mp4, key=lambda v: _rate(v.get(rate_key)))
    return str(best["url"]), "video/mp4"


def _rate(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _direct_message(
    event: Mapping[str, Any], users: Mapping[str, Any], own_id: str
) -> InboundMessage:
    event_id = _id(event.get("id"), "direct_message_events[].id")
    created = as_object(event.get("message_create", {}), "message_create")
    sender_id = _optional_id(created.get("sender_id"))
    if sender_id is None:
        raise ParseError(f"direct message {event_id}: no sender_id")
    target = as_object(created.get("target", {}), "message_create.target")
    recipient_id = _optional_id(target.get("recipient_id"))
    direction: Direction = "out" if sender_id == own_id else "in"
    customer_id = recipient_id if direction == "out" else sender_id
    contact = _known_user(users, customer_id) if customer_id else None
    data = as_object(created.get("message_data", {}), "message_create.message_data")
    text = clean_text(_string(data.get("text", ""), "message_data.text"))
    attachments: tuple[dict[str, Any], ...] = ()
    if event.get("type") != "message_create":
        text = f"[unsupported: {event.get('type')}]"
        attachments = ({"type": "unsupported", "raw": dict(event)},)
    elif "attachment" in data:
        text, attachments = _dm_attachment(as_object(data["attachment"], "attachment"), text)
    return InboundMessage(
        external_id=event_id,
        contact=contact,
        text=text,
        sent_at=_ms_time(event.get("created_timestamp"), None),
        direction=direction,
        visibility="private",
        attachments=attachments,
    )


def _dm_attachment(
    attachment: Mapping[str, Any], text: str
) -> tuple[str, tuple[dict[str, Any], ...]]:
    if attachment.get("type") == "media":
        media = as_object(attachment.get("media"), "attachment.media")
        return text, (_v1_media(media, private=True),)
    kind = attachment.get("type")
    unsupported = {"type": "unsupported", "raw": dict(attachment)}
    return (f"{text}\n[unsupported: {kind}]".strip(), (unsupported,))


def _known_user(users: Mapping[str, Any], user_id: str) -> Author:
    """A participant as the event's `users` map describes them, or by id alone."""
    user = users.get(user_id)
    return _author(user) if isinstance(user, dict) else Author(platform_id=user_id)


def _read(event: Mapping[str, Any], received_at: datetime, own_id: str) -> StatusUpdate | None:
    """The customer read the brand's messages up to one; the brand's own reads say nothing."""
    reader = _optional_id(event.get("sender_id"))
    last_read = _optional_id(event.get("last_read_event_id"))
    if reader == own_id or last_read is None:
        return None
    at = _ms_time(event.get("created_timestamp"), received_at)
    return StatusUpdate("read", at, external_id=last_read, recipient_id=reader)


def _activity_event(data: Mapping[str, Any], received_at: datetime, own_id: str) -> list[Parsed]:
    """An X Activity API delivery; events other than posts and messages carry nothing to
    answer (likes, follows, profile changes, Spaces, revoked authorisations)."""
    kind = data.get("event_type")
    payload = as_object(data.get("payload", {}), "data.payload")
    includes = as_object(data.get("includes", {}), "data.includes")
    if kind in ("post.create", "post.mention.create"):
        message = _v2_tweet(payload, _v2_includes(includes), received_at, own_id)
        return [message] if message is not None else []
    if kind == "post.delete":
        return [StatusUpdate("deleted", received_at, external_id=_id(payload.get("id"), "id"))]
    if kind in ("dm.received", "dm.sent"):
        return _account_activity(payload, received_at, own_id)
    if kind == "chat.received":
        return [_encrypted_chat(payload, received_at)]
    return []


def _encrypted_chat(payload: Mapping[str, Any], received_at: datetime) -> InboundMessage:
    """XChat messages are end-to-end encrypted: Allo cannot read them, but shows that the
    customer wrote, rather than losing it."""
    sender_id = _id(payload.get("sender_id"), "payload.sender_id")
    return InboundMessage(
        external_id=_id(payload.get("id"), "payload.id"),
        contact=Author(platform_id=sender_id),
        text="[unsupported: chat.received]",
        sent_at=_ms_time(payload.get("created_at_msec"), received_at),
        visibility="private",
        attachments=({"type": "unsupported", "raw": dict(payload)},),
    )


@dataclass(frozen=True)
class Includes:
    users: dict[str, dict[str, Any]]
    media: dict[str, dict[str, Any]]


def _v2_includes(includes: Mapping[str, Any]) -> Includes:
    users = [as_object(u, "includes.users[]") for u in as_list(includes.get("users", []), "users")]
    media = [as_object(m, "includes.media[]") for m in as_list(includes.get("media", []), "media")]
    return Includes(
        users={str(_unwrapped(u).get("id")): _unwrapped(u) for u in users},
        media={str(m.get("media_key")): m for m in media},
    )


def _api_page(body: Mapping[str, Any], received_at: datetime, own_id: str) -> list[Parsed]:
    """A page of API v2 posts, as `fetch` recorded it."""
    includes = _v2_includes(as_object(body.get("includes", {}), "includes"))
    tweets = [as_object(t, "data[]") for t in as_list(body.get("data", []), "data")]
    messages = (_v2_tweet(tweet, includes, received_at, own_id) for tweet in tweets)
    return [message for message in messages if message is not None]


def _v2_tweet(
    tweet: Mapping[str, Any], includes: Includes, received_at: datetime, own_id: str
) -> InboundMessage | None:
    references = _references(tweet)
    if "retweeted" in references:
        return None
    tweet_id = _id(tweet.get("id"), "data[].id")
    author_id = _id(tweet.get("author_id"), f"post {tweet_id}: author_id")
    author = _v2_user(includes, author_id)
    note = as_object(tweet.get("note_tweet", {}), "note_tweet")
    direction: Direction = "out" if author_id == own_id else "in"
    contact: Author | None = author
    if direction == "out":
        replied = _optional_id(tweet.get("in_reply_to_user_id"))
        contact = _v2_user(includes, replied) if replied and replied != own_id else None
    created_at = tweet.get("created_at")
    return InboundMessage(
        external_id=tweet_id,
        contact=contact,
        text=_tweet_text(note.get("text") or tweet.get("text"), f"post {tweet_id}: text"),
        sent_at=_iso_time(created_at) if created_at is not None else received_at,
        direction=direction,
        visibility="public",
        author_name=author.handle if direction == "out" else None,
        reply_to_external_id=references.get("replied_to"),
        thread_key=_optional_id(tweet.get("conversation_id")),
        attachments=_v2_media(tweet, includes),
    )


def _references(tweet: Mapping[str, Any]) -> dict[str, str]:
    """The posts this one answers, quotes or reposts, by kind (replied_to, quoted, retweeted)."""
    listed = as_list(tweet.get("referenced_tweets", []), "referenced_tweets")
    found = (as_object(reference, "referenced_tweets[]") for reference in listed)
    return {str(r.get("type")): _id(r.get("id"), "referenced_tweets[].id") for r in found}


def _v2_user(includes: Includes, user_id: str) -> Author:
    user = includes.users.get(user_id)
    return _author(user) if user is not None else Author(platform_id=user_id)


def _v2_media(tweet: Mapping[str, Any], includes: Includes) -> tuple[dict[str, Any], ...]:
    attached = as_object(tweet.get("attachments", {}), "attachments")
    keys = as_list(attached.get("media_keys", []), "attachments.media_keys")
    found = []
    for key in keys:
        media = includes.media.get(str(key), {"media_key": str(key)})
        attachment: dict[str, Any] = {
            "type": MEDIA_TYPES.get(str(media.get("type")), "file"),
            "media_id": str(key).rpartition("_")[2],
            "url": _optional_text(media.get("url")),
            "preview_url": _optional_text(media.get("preview_image_url")),
        }
        variant = _best_variant(media, "bit_rate")
        if variant is not None:
            attachment["url"], attachment["content_type"] = variant
        elif attachment["url"]:
            attachment["content_type"] = _content_type(attachment["url"])
        found.append({k: v for k, v in attachment.items() if v is not None})
    return tuple(found)


def _content_type(url: str) -> str | None:
    return mimetypes.guess_type(urlsplit(url).path)[0]


def _author(user: dict[str, Any]) -> Author:
    """A user in any of X's shapes: v1.1 (`id_str`, `screen_name`, `followers_count`), v2
    (`id`, `username`, `public_metrics`), or v2 wrapped in `data` (X Activity API)."""
    user = _unwrapped(user)
    metrics = as_object(user.get("public_metrics", {}), "user.public_metrics")
    followers = user.get("followers_count", metrics.get("followers_count"))
    return Author(
        platform_id=_id(user.get("id_str") or user.get("id"), "user.id"),
        handle=_optional_text(user.get("screen_name") or user.get("username")),
        display_name=_optional_text(user.get("name")),
        followers=followers if type(followers) is int and followers >= 0 else None,
        verified=user.get("verified") is True,
    )


def _unwrapped(user: dict[str, Any]) -> dict[str, Any]:
    inner = user.get("data")
    return inner if isinstance(inner, dict) else user


def _tweet_text(value: Any, where: str) -> str:
    return _unescaped(clean_text(_string(value, where)))


def _unescaped(text: str) -> str:
    """In one pass, so `&amp;lt;` (a customer typing `&lt;`) stays `&lt;`."""
    return X_ENTITY.sub(lambda m: X_ENTITIES[m.group(1)], text)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ParseError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _id(value: Any, where: str) -> str:
    found = _optional_id(value)
    if found is None:
        raise ParseError(f"{where}: expected an id, got {value!r:.40}")
    return found


def _optional_id(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return clean_text(value.strip())
    return None


def _optional_text(value: Any) -> str | None:
    return clean_text(value) if isinstance(value, str) and value else None


def _v1_time(value: Any) -> datetime:
    """X's v1.1 dates ("Wed Oct 10 20:19:24 +0000 2018"), read by hand: `strptime` was a
    fifth of the time a mention takes to parse, on the intake hot path."""
    try:
        _, month, day, clock, offset, year = _string(value, "created_at").split()
        if len(offset) != 5 or offset[0] not in "+-":
            raise ValueError(offset)
        iso = f"{year}-{MONTHS[month]:02d}-{int(day):02d}T{clock}{offset[:3]}:{offset[3:]}"
        return datetime.fromisoformat(iso).astimezone(UTC)
    except (KeyError, ValueError) as error:
        raise ParseError(f"created_at: not an X date: {value!r:.60}") from error


def _iso_time(value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(_string(value, "created_at"))
    except ValueError as error:
        raise ParseError(f"created_at: not an ISO 8601 date: {value!r:.60}") from error
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _ms_time(value: Any, default: datetime | None) -> datetime:
    """X's millisecond timestamps, sent as strings or numbers."""
    if value is None and default is not None:
        return default
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError) as error:
        raise ParseError(f"timestamp: not milliseconds since 1970: {value!r:.40}") from error


# Sending, looking up, polling and checking: API v2 with the user's bearer token.


async def send(connection: Connection, outgoing: Outgoing) -> Sent:
    _refuse_unsendable(outgoing)
    if outgoing.visibility == "public":
        reply_to = outgoing.reply_to_external_id or outgoing.thread_key
        body = {"text": outgoing.text, "reply": {"in_reply_to_tweet_id": reply_to}}
        answer = await _call(connection, POST, "/2/tweets", "public", body=body)
        return Sent(external_id=_answer_id(answer, "id"))
    recipient = quote(str(outgoing.recipient_id), safe="")
    path = f"/2/dm_conversations/with/{recipient}/messages"
    answer = await _call(connection, DIRECT_MESSAGE, path, "private", body={"text": outgoing.text})
    return Sent(external_id=_answer_id(answer, "dm_event_id"))


def _refuse_unsendable(outgoing: Outgoing) -> None:
    """What X would refuse anyway is refused here, without spending a call of the limit."""
    if not outgoing.text.strip():
        raise SendError("invalid", "X needs some text")
    if outgoing.visibility == "public" and not (
        outgoing.reply_to_external_id or outgoing.thread_key
    ):
        # A reply without the post it answers would go out as a post to every follower.
        raise SendError("invalid", "a public reply needs the post it answers")
    if outgoing.visibility == "private" and not outgoing.recipient_id:
        raise SendError("invalid", "a direct message needs its recipient")
    length = rules.length_of("x", outgoing.text, outgoing.visibility)
    limit = rules.limit_of("x", outgoing.visibility)
    if limit is not None and length > limit:
        raise SendError("invalid", f"too long for X: {length} characters, at most {limit}")


def _answer_id(answer: httpx.Response, key: str) -> str:
    data = _answer_json(answer).get("data")
    found = data.get(key) if isinstance(data, dict) else None
    if not isinstance(found, str) or not found:
        raise SendError("unavailable", f"X answered {answer.status_code} without {key}", True)
    return found


async def find_sent(connection: Connection, outgoing: Outgoing) -> Lookup:
    """Whether the reply or message is on X: looked for from a little before it was sent
    (certain unless that stretch held more than the pages looked at). Raises SendError where
    X cannot be asked now."""
    since = outgoing.sent_at - LOOKUP_MARGIN if outgoing.sent_at is not None else None
    if outgoing.visibility == "public":
        path = f"/2/users/{quote(connection.external_id, safe='')}/tweets"
        params = {"tweet.fields": "referenced_tweets,created_at,text", "max_results": "100"}
        if since is not None:
            params["start_time"] = _x_time(since)
        return await _look_for(
            connection, OWN_POSTS, path, params, lambda item: _is_our_post(item, outgoing), since
        )
    recipient = quote(str(outgoing.recipient_id), safe="")
    path = f"/2/dm_conversations/with/{recipient}/dm_events"
    params = {
        "dm_event.fields": "id,text,sender_id,created_at,event_type",
        "event_types": "MessageCreate",
        "max_results": "100",
    }
    own = connection.external_id
    return await _look_for(
        connection,
        CONVERSATION_EVENTS,
        path,
        params,
        lambda item: _is_our_message(item, own, outgoing),
        since,
    )


async def _look_for(
    connection: Connection,
    endpoint: str,
    path: str,
    params: Mapping[str, str],
    matches: Callable[[Mapping[str, Any]], bool],
    since: datetime | None,
) -> Lookup:
    """Pages newest first until the message, or anything older than `since`, is found."""
    token: str | None = None
    for _ in range(PAGES_PER_LOOKUP):
        answer = await _call(connection, endpoint, path, "public", params=_paged(params, token))
        page = _answer_json(answer)
        for item in _page_items(page):
            if matches(item):
                return Lookup(str(item["id"]), certain=True)
            if since is not None and _created_before(item, since):
                return Lookup(None, certain=True)
        token = _next_token(page)
        if token is None:
            return Lookup(None, certain=True)
    return Lookup(None, certain=False)


def _created_before(item: Mapping[str, Any], moment: datetime) -> bool:
    try:
        return _iso_time(item.get("created_at")) < moment
    except ParseError:
        return False


def _is_our_post(item: Mapping[str, Any], outgoing: Outgoing) -> bool:
    answered = outgoing.reply_to_external_id or outgoing.thread_key
    references = item.get("referenced_tweets")
    replied = [
        r.get("id")
        for r in (references if isinstance(references, list) else [])
        if isinstance(r, dict) and r.get("type") == "replied_to"
    ]
    return answered in replied and _same_text(item.get("text"), outgoing.text)


def _is_our_message(item: Mapping[str, Any], own_id: str, outgoing: Outgoing) -> bool:
    return item.get("sender_id") == own_id and _same_text(item.get("text"), outgoing.text)


def _same_text(found: Any, sent: str) -> bool:
    """X shortens links, escapes `&<>` and puts the @names of the conversation first."""
    if not isinstance(found, str):
        return False
    return _comparable(_unescaped(found)) == _comparable(sent)


def _comparable(text: str) -> str:
    return " ".join(URL.sub("<link>", LEADING_MENTIONS.sub("", text.strip())).split())


@dataclass(frozen=True)
class Source:
    """A timeline `fetch` polls, and the name its pages are recorded under."""

    name: str
    endpoint: str
    path: str
    params: dict[str, str]
    token_param: str


def _sources(connection: Connection) -> list[Source]:
    own = quote(connection.external_id, safe="")
    sources = [
        Source(
            "mentions",
            "GET /2/users/:id/mentions",
            f"/2/users/{own}/mentions",
            dict(PAGE_FIELDS),
            "pagination_token",
        )
    ]
    query = connection.settings.get("search_query")
    if isinstance(query, str) and query.strip():
        sources.append(
            Source(
                "search",
                "GET /2/tweets/search/recent",
                "/2/tweets/search/recent",
                {"query": query.strip(), **PAGE_FIELDS},
                "next_token",
            )
        )
    return sources


async def fetch(connection: Connection, cursor: str | None) -> Fetched:
    """Mentions (and the recent search of settings["search_query"]) since the cursor.

    The cursor holds, per source, `since_id` (the newest post seen), and while a backlog is
    longer than PAGES_PER_POLL pages, where the paging stopped (`next_token`) and the newest
    post of the backlog (`newest_id`, the next `since_id`). The first poll starts from the
    newest page: history from before the channel was connected is not imported.
    """
    state = _cursor(cursor)
    events: list[tuple[str, bytes]] = []
    for source in _sources(connection):
        polled, state[source.name] = await _poll(connection, source, state.get(source.name, {}))
        events.extend(polled)
    return Fetched(events=events, cursor=json.dumps(state, sort_keys=True))


def _cursor(cursor: str | None) -> dict[str, dict[str, str]]:
    """The saved cursor; one that cannot be read starts over, like a first poll."""
    try:
        saved = json.loads(cursor) if cursor else {}
    except json.JSONDecodeError:
        return {}
    if not isinstance(saved, dict):
        return {}
    return {
        name: {k: v for k, v in value.items() if isinstance(v, str)}
        for name, value in saved.items()
        if isinstance(value, dict)
    }


async def _poll(
    connection: Connection, source: Source, state: Mapping[str, str]
) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    since, token, newest = state.get("since_id"), state.get("next_token"), state.get("newest_id")
    first_poll = since is None and token is None
    events: list[tuple[str, bytes]] = []
    for _ in range(PAGES_PER_POLL):
        params = dict(source.params)
        if since:
            params["since_id"] = since
        if token:
            params[source.token_param] = token
        answer = await _call(connection, source.endpoint, source.path, "public", params=params)
        page = _answer_json(answer)
        items = _page_items(page)
        if items:
            page_newest = _newest_id(page, items)
            events.append((f"x:{source.name}:{page_newest}", answer.content))
            newest = newest or page_newest
        token = _next_token(page)
        if token is None or first_poll:
            break
    if token is not None and not first_poll:
        left = {"since_id": since, "next_token": token, "newest_id": newest}
        return events, {k: v for k, v in left.items() if v}
    caught_up = newest or since
    return events, {"since_id": caught_up} if caught_up else {}


def _page_items(page: Mapping[str, Any]) -> list[dict[str, Any]]:
    data = page.get("data")
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _newest_id(page: Mapping[str, Any], items: list[dict[str, Any]]) -> str:
    """The page's newest post, as meta says, or by the first post (X lists newest first)."""
    meta = page.get("meta")
    newest = meta.get("newest_id") if isinstance(meta, dict) else None
    return newest if isinstance(newest, str) and newest else str(items[0].get("id"))


def _next_token(page: Mapping[str, Any]) -> str | None:
    meta = page.get("meta")
    token = meta.get("next_token") if isinstance(meta, dict) else None
    return token if isinstance(token, str) and token else None


def _paged(params: Mapping[str, str], token: str | None) -> dict[str, str]:
    return {**params, "pagination_token": token} if token else dict(params)


async def check(connection: Connection) -> Health:
    now = datetime.now(UTC)
    expires_at = _token_expiry(connection.settings)
    problems = _expiry_problems(expires_at, connection.credentials, now)
    subscribed: bool | None = None
    try:
        me = _answer_json(await _call(connection, ME, "/2/users/me", "public"))
        problems.extend(_identity_problems(me, connection.external_id))
        webhook_id = connection.settings.get("webhook_id")
        if isinstance(webhook_id, str) and webhook_id:
            subscribed = await _subscribed(connection, webhook_id)
            if not subscribed:
                problems.append(f"webhook {webhook_id} does not deliver this account's events")
    except SendError as error:
        problems.append(_health_problem(error))
    return Health(
        ok=not problems,
        problems=tuple(problems),
        token_expires_at=expires_at,
        subscribed=subscribed,
        checked_at=now,
    )


def _token_expiry(settings: Mapping[str, Any]) -> datetime | None:
    value = settings.get("token_expires_at")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _expiry_problems(
    expires_at: datetime | None, credentials: Mapping[str, str], now: datetime
) -> list[str]:
    """An expired token is a problem; one about to expire too, unless it can be renewed
    (OAuth 2.0 user tokens last two hours: a refresh token and the client id renew them)."""
    if expires_at is None:
        return []
    if expires_at <= now:
        return [f"token expired at {expires_at.isoformat()}"]
    renewable = bool(credentials.get("refresh_token") and credentials.get("client_id"))
    if expires_at - now < EXPIRY_WARNING and not renewable:
        return [f"token expires at {expires_at.isoformat()} and cannot be refreshed"]
    return []


def _identity_problems(me: Mapping[str, Any], external_id: str) -> list[str]:
    data = me.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        return ["X did not say whose token this is"]
    if data["id"] != external_id:
        return [f"token belongs to another account (@{data.get('username')}, id {data['id']})"]
    return []


async def _subscribed(connection: Connection, webhook_id: str) -> bool:
    path = f"/2/account_activity/webhooks/{quote(webhook_id, safe='')}/subscriptions/all"
    data = _answer_json(await _call(connection, SUBSCRIPTION, path, "public")).get("data")
    return isinstance(data, dict) and data.get("subscribed") is True


def _health_problem(error: SendError) -> str:
    if error.reason == "unauthorized":
        return f"token rejected: {error.detail}"
    return f"{error.reason}: {error.detail}"


async def media_request(
    connection: Connection, attachment: Mapping[str, Any]
) -> tuple[str, dict[str, str]] | None:
    url = attachment.get("url")
    if not isinstance(url, str) or not url:
        return None
    if attachment.get("visibility") != "private":
        return url, {}
    ton = TON_MEDIA.match(url)
    if ton is not None:
        url = f"{connection.api_url}/2/dm_conversations/media/{'/'.join(ton.groups())}"
    elif not _is_x_host(urlsplit(url).hostname or ""):
        # The user's token is for X alone, whatever a payload names.
        return url, {}
    return url, {"Authorization": f"Bearer {connection.credentials.get('access_token', '')}"}


def _is_x_host(host: str) -> bool:
    return any(host == name or host.endswith("." + name) for name in X_MEDIA_HOSTS)


# One call to X: the limits it announces are remembered, its refusals become SendErrors.


async def _call(
    connection: Connection,
    endpoint: str,
    path: str,
    visibility: str,
    *,
    body: Any = None,
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    _refuse_when_spent(connection, endpoint)
    method = endpoint.partition(" ")[0]
    headers = {"Authorization": f"Bearer {connection.credentials.get('access_token', '')}"}
    try:
        answer = await connection.http.request(
            method, connection.api_url + path, headers=headers, json=body, params=params
        )
    except httpx.TransportError as error:
        raise SendError("unavailable", f"X cannot be reached ({error!r:.120})", True) from error
    _remember_limits(connection, endpoint, answer)
    if answer.is_success:
        return answer
    raise _refusal(answer, visibility, _spent_for(connection, endpoint))


def _refuse_when_spent(connection: Connection, endpoint: str) -> None:
    wait = _spent_for(connection, endpoint)
    if wait is not None and wait > 0:
        raise SendError("rate_limited", f"{endpoint}: X's limit is spent", True, wait)


def _spent_for(connection: Connection, endpoint: str) -> float | None:
    """Seconds until X's spent limit for this endpoint resets; None when calls remain."""
    known = RATE_LIMITS.get((connection.channel_account_id, endpoint))
    if known is None or known[0] > 0:
        return None
    return max(0.0, known[1] - time.time())


def _remember_limits(connection: Connection, endpoint: str, answer: httpx.Response) -> None:
    """The tightest of the 15-minute and 24-hour limits X announced (after a 429 without
    headers: spent until Retry-After)."""
    limits = [
        (int(remaining), float(reset))
        for prefix in ("x-rate-limit", "x-user-limit-24hour")
        if (remaining := answer.headers.get(f"{prefix}-remaining", "")).isdigit()
        and (reset := answer.headers.get(f"{prefix}-reset", "")).isdigit()
    ]
    if not limits and answer.status_code == 429:
        wait = _retry_after(answer)
        limits = [(0, time.time() + wait)] if wait is not None else []
    if limits:
        RATE_LIMITS[(connection.channel_account_id, endpoint)] = min(
            limits, key=lambda limit: (limit[0], -limit[1])
        )


def _refusal(answer: httpx.Response, visibility: str, spent_for: float | None) -> SendError:
    kind, detail = _problem(answer)
    status = answer.status_code
    if status == 429:
        wait = spent_for if spent_for is not None else _retry_after(answer)
        return SendError("rate_limited", detail, True, wait)
    if status >= 500:
        return SendError("unavailable", detail, True, _retry_after(answer))
    if status == 401:
        return SendError("unauthorized", detail)
    if status == 403:
        return SendError(_forbidden(kind, detail, visibility), detail)
    if status == 404:
        return SendError("deleted", detail)
    return SendError("invalid", detail)


def _forbidden(kind: str, detail: str, visibility: str) -> str:
    """X answers 403 for many things: a token or app not allowed, a duplicate, a reply to a
    post gone or restricted, a customer who does not take direct messages from the brand."""
    said = detail.lower()
    if kind.endswith(("client-forbidden", "unsupported-authentication", "oauth1-permissions")):
        return "unauthorized"
    if "duplicate" in said:
        return "invalid"
    if visibility == "private":
        return "blocked"
    if "deleted" in said or "not visible" in said or "not found" in said:
        return "deleted"
    if "not allowed" in said or "not permitted" in said or "mentioned" in said:
        return "blocked"
    return "invalid"


def _problem(answer: httpx.Response) -> tuple[str, str]:
    """The problem type and X's own words for it, short enough to show an agent."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return "", f"HTTP {answer.status_code}"
    errors = body.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    # An invalid request's `errors` say which part; other problems say it in `detail`.
    said = first.get("message") or first.get("detail") or body.get("detail") or body.get("title")
    kind = body.get("type") or first.get("type") or ""
    words = said if isinstance(said, str) and said else f"HTTP {answer.status_code}"
    return str(kind), clean_text(words)[:300]


def _retry_after(answer: httpx.Response) -> float | None:
    value = answer.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _answer_json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError as error:
        raise SendError(
            "unavailable", f"X answered {answer.status_code} without JSON", True
        ) from error
    if not isinstance(body, dict):
        raise SendError("unavailable", f"X answered {answer.status_code} without an object", True)
    return body


def _x_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
