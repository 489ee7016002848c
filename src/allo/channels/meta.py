"""Facebook Pages, Messenger and Instagram: Graph API webhooks and Send API.

A "facebook" channel account is a Page (its feed's comments and visitor posts, and its
Messenger conversations); a "messenger" one is the same Page for Messenger only; an
"instagram" one is an Instagram professional account connected through its Page with Facebook
Login: calls go to graph.facebook.com with the Page token, and DMs leave through the Page's
`/messages` edge (the `page_id` setting, else `me`, which a Page token resolves to the Page).

Webhooks carry `object` "page" or "instagram" and entries of `messaging`/`standby` events
(Messenger Platform) or `changes` (Page feed, Instagram comments and mentions). The feed polled
by `fetch` is a Graph API answer (`{"data": [...]}`), which `parse` reads too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from allo.channels import signatures
from allo.channels.fields import as_object, list_in
from allo.channels.inbound import Author, InboundMessage, Parsed, ParseError, StatusUpdate
from allo.channels.outbound import (
    Connection,
    Fetched,
    Health,
    Lookup,
    Outgoing,
    SendError,
    Sent,
)
from allo.channels.text import clean_json, clean_text

KINDS = (
    "facebook",
    "messenger",
    "instagram",
)
PARSER = "meta"
CREDENTIALS = (
    "access_token",
    "app_secret",
    "verify_token",
)
DEFAULT_API_URL = "https://graph.facebook.com/v21.0"

JSON = dict[str, Any]

# Webhook times are Unix seconds (feed, entry.time of Page changes) or milliseconds
# (messaging): no second count reaches this before the year 5138, every millisecond count
# since 1973 is above it.
MILLISECONDS_FROM = 100_000_000_000

# Messenger events that only move thread control between apps or report settings: no
# customer wrote anything.
TECHNICAL_EVENTS = frozenset(
    {
        "pass_thread_control",
        "take_thread_control",
        "request_thread_control",
        "app_roles",
        "policy_enforcement",
        "account_linking",
        "optin",
        "messaging_handovers",
    }
)
# Instagram (and the dashboard's test button) may deliver a messaging event as a change.
MESSAGING_FIELDS = frozenset(
    {
        "messages",
        "messaging_postbacks",
        "message_reactions",
        "messaging_seen",
        "message_edit",
        "messaging_referral",
    }
)
# Feed items that carry what a person wrote; likes and reactions are not messages.
FEED_CONTENT = frozenset({"comment", "post", "status", "photo", "video", "share"})
# Attachments whose URL is a file on Meta's CDN (a shared link, a template, a postback are not).
DOWNLOADABLE = frozenset(
    {
        "image",
        "video",
        "audio",
        "file",
        "sticker",
        "story",
        "story_mention",
        "share",
        "reel",
        "ig_reel",
        "photo",
    }
)
# Older Messenger reactions name the reaction without its emoji.
REACTION_EMOJI = {
    "like": "👍",
    "dislike": "👎",
    "love": "❤",
    "smile": "😆",
    "wow": "😮",
    "sad": "😢",
    "angry": "😠",
}

# An edit is kept as a message of its own, "<original id>:edited:<digest of the words>".
EDITED = ":edited:"

MESSENGER_TEXT_LIMIT = 2000  # characters
INSTAGRAM_DM_BYTES = 1000  # UTF-8 bytes
COMMENT_LIMIT = 8000  # characters
METADATA_LIMIT = 1000

# Graph API error codes (Messenger Platform "Common Error Codes", Graph API error handling).
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613})
BUSINESS_RATE_LIMITS = range(80000, 80015)
TRANSIENT_CODES = frozenset({1, 2})
WINDOW_SUBCODES = frozenset({2018278, 2534022})
ALREADY_REPLIED = 10900
RECIPIENT_UNAVAILABLE = 551
NO_MATCHING_USER = 2018001
OBJECT_MISSING = 33
TOKEN_INVALID = 190
PERMISSION_CODES = frozenset({10, *range(200, 300)})
DETAIL_LENGTH = 200

# A find_sent match must be no older than the send, less this much clock skew (Graph times
# are whole seconds).
SENT_AT_SLACK = timedelta(seconds=60)
CONVERSATION_MESSAGES = 20
FIRST_FETCH_LOOKBACK = timedelta(days=1)
FETCH_PAGE_SIZE = 25
MAX_FETCH_PAGES = 10
FEED_FIELDS = (
    "id,message,from,created_time,"
    "comments.filter(stream).order(reverse_chronological).limit(100)"
    "{id,message,from,created_time,parent}"
)
MEDIA_FIELDS = (
    "id,caption,timestamp,"
    "comments.limit(100){id,text,from,username,timestamp,parent_id,"
    "replies{id,text,from,username,timestamp,parent_id}}"
)
# Webhook fields a Page must deliver for each kind (Instagram's comments are subscribed on the
# app's instagram object, not the Page).
REQUIRED_FIELDS = {
    "facebook": ("feed", "messages"),
    "messenger": ("messages",),
    "instagram": ("messages",),
}


# --- webhooks -------------------------------------------------------------------------------


def verify(headers: Mapping[str, str], raw: bytes, credentials: Mapping[str, str]) -> None:
    signatures.verify_meta(headers, raw, credentials.get("app_secret", ""))


def handshake(query: Mapping[str, str], credentials: Mapping[str, str]) -> tuple[str, str]:
    return signatures.meta_handshake(query, credentials.get("verify_token", "")), "text/plain"


# --- parsing: pure, on the intake's hot path ---------------------------------------------------


@dataclass(frozen=True)
class _Event:
    """One messaging event's parties and time."""

    where: str
    sender: str
    recipient: str | None
    at: datetime
    own_id: str


def parse(raw: bytes, external_id: str, received_at: datetime, own_id: str) -> Sequence[Parsed]:
    body = _load(raw)
    if "object" not in body and isinstance(body.get("data"), list):
        return list(_graph_page(body, own_id, received_at))
    kind = body.get("object")
    if kind not in ("page", "instagram"):
        raise ParseError(f"object: expected 'page' or 'instagram', got {kind!r}")
    parsed: list[Parsed] = []
    for index, item in enumerate(list_in(body, "entry", "body")):
        where = f"entry[{index}]"
        entry = as_object(item, where)
        # One delivery may batch several Pages' events: each channel account takes its own.
        if _id(entry.get("id"), f"{where}.id") == own_id:
            parsed.extend(_entry(entry, where, own_id, received_at))
    return parsed


def _load(raw: bytes) -> JSON:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ParseError(f"not JSON: {error}") from None
    return as_object(body, "body")


def _entry(entry: JSON, where: str, own_id: str, received_at: datetime) -> Iterator[Parsed]:
    at = _time(entry.get("time"), f"{where}.time", received_at)
    for key in ("messaging", "standby"):
        for index, item in enumerate(list_in(entry, key, where)):
            path = f"{where}.{key}[{index}]"
            yield from _messaging(as_object(item, path), path, own_id, at)
    for index, item in enumerate(list_in(entry, "changes", where)):
        path = f"{where}.changes[{index}]"
        yield from _change(as_object(item, path), path, own_id, at)


def _messaging(event: JSON, where: str, own_id: str, default_at: datetime) -> Iterator[Parsed]:
    sender = _id(as_object(event.get("sender"), f"{where}.sender").get("id"), f"{where}.sender.id")
    recipient = event.get("recipient")
    context = _Event(
        where=where,
        sender=sender,
        recipient=_optional_id(
            as_object(recipient, f"{where}.recipient").get("id") if recipient is not None else None,
            f"{where}.recipient.id",
        ),
        at=_time(event.get("timestamp"), f"{where}.timestamp", default_at),
        own_id=own_id,
    )
    for key, handler in EVENT_HANDLERS:
        if key in event:
            yield from handler(as_object(event[key], f"{where}.{key}"), event, context)
            return
    if "referral" in event or TECHNICAL_EVENTS & event.keys():
        # A bare referral (the customer opened the thread from a link or an ad) and thread
        # control carry no words; a referral that comes with a message is kept on it.
        return
    yield _unsupported(event, context)


def _message(message: JSON, event: JSON, context: _Event) -> Iterator[Parsed]:
    where = f"{context.where}.message"
    mid = _id(message.get("mid"), f"{where}.mid")
    if message.get("is_deleted") is True:
        yield StatusUpdate("deleted", at=context.at, external_id=mid, recipient_id=context.sender)
        return
    echo = message.get("is_echo") is True or context.sender == context.own_id
    attachments = [
        *(
            _attachment(a, f"{where}.attachments[{i}]")
            for i, a in enumerate(list_in(message, "attachments", where))
        ),
        *_extras(message, event, where),
    ]
    reply_to_mid, story = _reply_to(message.get("reply_to"), f"{where}.reply_to")
    if story is not None:
        attachments.append(story)
    text = _text(message.get("text"), f"{where}.text") or ""
    if not text and not attachments:
        text, attachments = (
            "[unsupported: message]",
            [{"type": "unsupported", "raw": clean_json(message)}],
        )
    app_id = message.get("app_id")
    customer = context.recipient if echo else context.sender
    yield InboundMessage(
        external_id=mid,
        contact=Author(platform_id=customer) if customer else None,
        text=text,
        sent_at=context.at,
        direction="out" if echo else "in",
        # An echo sent by another tool (Business Suite, a bot) says which app sent it.
        author_name=f"app {app_id}" if echo and app_id is not None else None,
        reply_to_external_id=reply_to_mid,
        attachments=tuple(attachments),
        outbox_key=_text(message.get("metadata"), f"{where}.metadata") if echo else None,
    )


def _edit(edit: JSON, event: JSON, context: _Event) -> Iterator[Parsed]:
    """An edited message becomes a new message answering the original: the agent sees both
    wordings, and a redelivered edit (same words) keeps its id."""
    where = f"{context.where}.message_edit"
    mid = _id(edit.get("mid"), f"{where}.mid")
    text = _text(edit.get("text"), f"{where}.text") or ""
    echo = context.sender == context.own_id
    customer = context.recipient if echo else context.sender
    yield InboundMessage(
        external_id=_edit_id(mid, text),
        contact=Author(platform_id=customer) if customer else None,
        text=text,
        sent_at=context.at,
        direction="out" if echo else "in",
        reply_to_external_id=mid,
    )


def _postback(postback: JSON, event: JSON, context: _Event) -> Iterator[Parsed]:
    """A tapped button: its title is what the customer "said", its payload is kept."""
    where = f"{context.where}.postback"
    mid = _optional_id(postback.get("mid"), f"{where}.mid")
    title = _text(postback.get("title"), f"{where}.title") or ""
    tapped: JSON = {
        "type": "postback",
        "payload": _text(postback.get("payload"), f"{where}.payload"),
    }
    if title:
        tapped["title"] = title
    referral = postback.get("referral", event.get("referral"))
    attachments = [tapped]
    if referral is not None:
        attachments.append(_referral(referral, f"{where}.referral"))
    yield InboundMessage(
        external_id=mid or _synthetic_id("postback", context),
        contact=Author(platform_id=context.sender),
        text=title,
        sent_at=context.at,
        attachments=tuple(attachments),
    )


def _reaction(reaction: JSON, event: JSON, context: _Event) -> Iterator[Parsed]:
    where = f"{context.where}.reaction"
    name = _text(reaction.get("reaction"), f"{where}.reaction")
    emoji = _text(reaction.get("emoji"), f"{where}.emoji") or REACTION_EMOJI.get(name or "", name)
    yield StatusUpdate(
        "reaction",
        at=context.at,
        external_id=_optional_id(reaction.get("mid"), f"{where}.mid"),
        recipient_id=context.sender,
        reaction=None if reaction.get("action") == "unreact" else emoji,
    )


def _delivery(delivery: JSON, event: JSON, context: _Event) -> Iterator[Parsed]:
    where = f"{context.where}.delivery"
    at = _time(delivery.get("watermark"), f"{where}.watermark", context.at)
    mids = [_id(m, f"{where}.mids[{i}]") for i, m in enumerate(list_in(delivery, "mids", where))]
    if not mids:
        # Everything sent to this customer before the watermark was delivered.
        yield StatusUpdate("delivered", at=at, recipient_id=context.sender)
    for mid in mids:
        yield StatusUpdate("delivered", at=at, external_id=mid, recipient_id=context.sender)


def _read(read: JSON, event: JSON, context: _Event) -> Iterator[Parsed]:
    """Messenger reads up to a watermark; Instagram's messaging_seen names one message."""
    where = f"{context.where}.read"
    if "mid" in read:
        mid = _id(read.get("mid"), f"{where}.mid")
        yield StatusUpdate("read", at=context.at, external_id=mid, recipient_id=context.sender)
    elif "watermark" in read:
        at = _time(read.get("watermark"), f"{where}.watermark", context.at)
        yield StatusUpdate("read", at=at, recipient_id=context.sender)
    else:
        raise ParseError(f"{where}: neither mid nor watermark")


Handler = Callable[[JSON, JSON, _Event], Iterator[Parsed]]
EVENT_HANDLERS: tuple[tuple[str, Handler], ...] = (
    ("message", _message),
    ("message_edit", _edit),
    ("postback", _postback),
    ("reaction", _reaction),
    ("delivery", _delivery),
    ("read", _read),
)


def _unsupported(event: JSON, context: _Event) -> InboundMessage:
    kind = next((k for k in event if k not in ("sender", "recipient", "timestamp")), "event")
    return InboundMessage(
        external_id=_synthetic_id(kind, context),
        contact=Author(platform_id=context.sender),
        text=f"[unsupported: {clean_text(kind)}]",
        sent_at=context.at,
        attachments=({"type": "unsupported", "raw": clean_json(event)},),
    )


def _synthetic_id(kind: str, context: _Event) -> str:
    """For events without a message id: stable across redeliveries of the same event."""
    return f"{kind}:{context.sender}:{int(context.at.timestamp() * 1000)}"


def _attachment(item: Any, where: str) -> JSON:
    found = as_object(item, where)
    payload = found.get("payload")
    payload = as_object(payload, f"{where}.payload") if payload is not None else {}
    kind = _text(found.get("type"), f"{where}.type") or "unknown"
    attachment: JSON = {"type": "sticker" if "sticker_id" in payload else kind}
    url = payload.get("url", found.get("url"))
    if url is not None:
        attachment["url"] = _text(url, f"{where}.payload.url")
    title = payload.get("title", found.get("title"))
    if isinstance(title, str) and title:
        attachment["title"] = clean_text(title)
    for key in ("sticker_id", "reel_video_id", "attachment_id"):
        if key in payload:
            attachment[key] = clean_json(payload[key])
    coordinates = payload.get("coordinates")
    if isinstance(coordinates, dict):
        attachment["latitude"], attachment["longitude"] = (
            coordinates.get("lat"),
            coordinates.get("long"),
        )
    if not attachment.get("url") and payload:
        attachment["payload"] = clean_json(payload)
    return attachment


def _extras(message: JSON, event: JSON, where: str) -> Iterator[JSON]:
    quick_reply = message.get("quick_reply")
    if quick_reply is not None:
        payload = as_object(quick_reply, f"{where}.quick_reply").get("payload")
        yield {"type": "quick_reply", "payload": _text(payload, f"{where}.quick_reply.payload")}
    referral = message.get("referral", event.get("referral"))
    if referral is not None:
        yield _referral(referral, f"{where}.referral")


def _referral(referral: Any, where: str) -> JSON:
    """Where the customer came from (an ad, an m.me link): context for the agent."""
    return {"type": "referral", "referral": clean_json(as_object(referral, where))}


def _reply_to(value: Any, where: str) -> tuple[str | None, JSON | None]:
    """The message answered (a mid), or the story replied to (an attachment)."""
    if value is None:
        return None, None
    reply_to = as_object(value, where)
    story = reply_to.get("story")
    if story is not None:
        story = as_object(story, f"{where}.story")
        attachment: JSON = {"type": "story", "url": _text(story.get("url"), f"{where}.story.url")}
        story_id = _optional_id(story.get("id"), f"{where}.story.id")
        if story_id:
            attachment["story_id"] = story_id
        return None, attachment
    return _optional_id(reply_to.get("mid"), f"{where}.mid"), None


def _change(change: JSON, where: str, own_id: str, default_at: datetime) -> Iterator[Parsed]:
    field = change.get("field")
    value = as_object(change.get("value"), f"{where}.value")
    path = f"{where}.value"
    if field == "feed":
        yield from _feed(value, path, own_id, default_at)
    elif field in ("comments", "live_comments"):
        yield from _instagram_comment(value, path, own_id, default_at)
    elif field == "mentions":
        yield from _mention(value, path, default_at)
    elif field in MESSAGING_FIELDS:
        yield from _messaging(value, path, own_id, default_at)
    # Other fields (ratings, page settings…) are not subscribed by Allo.


def _feed(value: JSON, where: str, own_id: str, default_at: datetime) -> Iterator[Parsed]:
    item, verb = value.get("item"), value.get("verb")
    if item not in FEED_CONTENT:
        return
    is_comment = item == "comment"
    post_id = _id(value.get("post_id"), f"{where}.post_id")
    object_id = _id(value.get("comment_id"), f"{where}.comment_id") if is_comment else post_id
    at = _time(value.get("created_time"), f"{where}.created_time", default_at)
    if verb in ("remove", "delete"):
        yield StatusUpdate("deleted", at=at, external_id=object_id)
        return
    if verb not in ("add", "edited", "edit"):
        return  # hide, unhide, block: moderation by the Page, nothing written
    author = _feed_author(value, where)
    own = author is not None and author.platform_id == own_id
    if not is_comment and (author is None or own):
        return  # the Page's own posts are broadcasts, not conversations
    text = _text(value.get("message"), f"{where}.message") or ""
    parent = _optional_id(value.get("parent_id"), f"{where}.parent_id")
    reply_to = parent if is_comment and parent and parent != post_id else None
    external_id = object_id
    if verb != "add":
        external_id, reply_to = _edit_id(object_id, text), object_id
    yield InboundMessage(
        external_id=external_id,
        contact=None if own else author,
        text=text,
        sent_at=at,
        direction="out" if own else "in",
        visibility="public",
        thread_key=post_id,
        reply_to_external_id=reply_to,
        attachments=tuple(_feed_media(value, item, where)),
    )


def _feed_author(value: JSON, where: str) -> Author | None:
    """`from` in current payloads; `sender_id`/`sender_name` in older ones."""
    if value.get("from") is not None or value.get("sender_id") is None:
        return _from(value, where)
    return Author(
        platform_id=_id(value.get("sender_id"), f"{where}.sender_id"),
        display_name=_text(value.get("sender_name"), f"{where}.sender_name") or None,
    )


def _feed_media(value: JSON, item: str, where: str) -> Iterator[JSON]:
    """A photo or video item's `link` is its file; a shared post's is a web page."""
    link = value.get("link")
    if link is not None:
        kind = item if item in ("photo", "video") else "link"
        yield {"type": kind, "url": _text(link, f"{where}.link")}
    for index, url in enumerate(list_in(value, "photos", where)):
        yield {"type": "photo", "url": _text(url, f"{where}.photos[{index}]")}


def _instagram_comment(
    value: JSON, where: str, own_id: str, default_at: datetime
) -> Iterator[Parsed]:
    media = value.get("media")
    media_id = _optional_id(
        as_object(media, f"{where}.media").get("id") if media is not None else None,
        f"{where}.media.id",
    )
    yield _comment(
        comment_id=_id(value.get("id"), f"{where}.id"),
        author=_from(value, where),
        text=_text(value.get("text"), f"{where}.text") or "",
        at=default_at,  # comment webhooks carry no time of their own: the entry's
        thread_key=media_id,
        parent=_optional_id(value.get("parent_id"), f"{where}.parent_id"),
        own_id=own_id,
    )


def _from(value: JSON, where: str) -> Author | None:
    """The author a comment or post names: `from` {id, name} on Facebook, {id, username} on
    Instagram (whose Graph answers also give `username` beside it)."""
    sender = value.get("from")
    if sender is None:
        return None
    sender = as_object(sender, f"{where}.from")
    username = _text(sender.get("username", value.get("username")), f"{where}.from.username")
    return Author(
        platform_id=_id(sender.get("id"), f"{where}.from.id"),
        handle=username or None,
        display_name=_text(sender.get("name"), f"{where}.from.name") or username or None,
    )


def _mention(value: JSON, where: str, default_at: datetime) -> Iterator[Parsed]:
    """An @mention names only the comment and the media: Instagram leaves its words and author
    to a later `mentioned_comment` query, so the message keeps the ids."""
    media_id = _id(value.get("media_id"), f"{where}.media_id")
    comment_id = _optional_id(value.get("comment_id"), f"{where}.comment_id")
    # Not `media_id`: that names a file to download, and this is a post.
    attachment: JSON = {"type": "mention", "ig_media_id": media_id}
    if comment_id:
        attachment["comment_id"] = comment_id
    yield InboundMessage(
        external_id=comment_id or media_id,
        contact=None,
        text="[mention]",
        sent_at=default_at,
        visibility="public",
        thread_key=media_id,
        attachments=(attachment,),
    )


def _comment(
    comment_id: str,
    author: Author | None,
    text: str,
    at: datetime,
    thread_key: str | None,
    parent: str | None,
    own_id: str,
) -> InboundMessage:
    own = author is not None and author.platform_id == own_id
    return InboundMessage(
        external_id=comment_id,
        contact=None if own else author,
        text=text,
        sent_at=at,
        direction="out" if own else "in",
        visibility="public",
        thread_key=thread_key,
        reply_to_external_id=parent if parent != thread_key else None,
    )


def _graph_page(body: JSON, own_id: str, received_at: datetime) -> Iterator[Parsed]:
    """A page of `/{page}/feed` or `/{ig-user}/media` as `fetch` polled it: the posts' comments
    (and visitors' posts). Facebook names the text `message` and the time `created_time`;
    Instagram `text` and `timestamp`, and nests replies under their comment."""
    for index, item in enumerate(list_in(body, "data", "body")):
        where = f"data[{index}]"
        post = as_object(item, where)
        post_id = _id(post.get("id"), f"{where}.id")
        author = _from(post, where)
        if author is not None and author.platform_id != own_id:
            yield _graph_comment(post, where, post_id, None, own_id, received_at)
        for comment, path, nested_in in _graph_comments(post.get("comments"), where, None):
            yield _graph_comment(comment, path, post_id, nested_in, own_id, received_at)


def _graph_comments(
    comments: Any, where: str, nested_in: str | None
) -> Iterator[tuple[JSON, str, str | None]]:
    if comments is None:
        return
    path = f"{where}.comments"
    for index, item in enumerate(list_in(as_object(comments, path), "data", path)):
        here = f"{path}.data[{index}]"
        comment = as_object(item, here)
        yield comment, here, nested_in
        yield from _graph_comments(comment.get("replies"), here, _id(comment.get("id"), here))


def _graph_comment(
    comment: JSON,
    where: str,
    post_id: str,
    nested_in: str | None,
    own_id: str,
    default_at: datetime,
) -> InboundMessage:
    """A comment (or a visitor's post) from a Graph answer; its parent is named by `parent`
    (Facebook), `parent_id` (Instagram) or the comment it is nested in."""
    parent = comment.get("parent")
    parent_id = (
        as_object(parent, f"{where}.parent").get("id")
        if parent is not None
        else comment.get("parent_id", nested_in)
    )
    text = comment.get("message", comment.get("text"))
    at = comment.get("created_time", comment.get("timestamp"))
    return _comment(
        comment_id=_id(comment.get("id"), f"{where}.id"),
        author=_from(comment, where),
        text=_text(text, f"{where}.message") or "",
        at=_time(at, f"{where}.created_time", default_at),
        thread_key=post_id,
        parent=_optional_id(parent_id, f"{where}.parent.id"),
        own_id=own_id,
    )


def _edit_id(original: str, text: str) -> str:
    return f"{original}{EDITED}{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _graph_id(external_id: str) -> str:
    """Meta's id of a message Allo knows: an edit's id names the comment edited."""
    return external_id.split(EDITED, 1)[0]


# Field readers: a payload of the wrong shape is a ParseError that names the field.


def _text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"{where}: expected text, got {type(value).__name__}")
    return clean_text(value)


def _id(value: Any, where: str) -> str:
    found = _optional_id(value, where)
    if not found:
        raise ParseError(f"{where}: missing")
    return found


def _optional_id(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return clean_text(value) or None
    raise ParseError(f"{where}: expected an id, got {type(value).__name__}")


def _time(value: Any, where: str, default: datetime) -> datetime:
    """Unix seconds or milliseconds (numbers or digit strings) or ISO 8601 ("+0000" too)."""
    if value is None:
        return default
    try:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value / 1000 if value >= MILLISECONDS_FROM else value
            return datetime.fromtimestamp(seconds, UTC)
        if isinstance(value, str):
            found = datetime.fromisoformat(value)
            return found.astimezone(UTC) if found.tzinfo else found.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise ParseError(f"{where}: not a time: {value!r}"[:DETAIL_LENGTH])


# --- Graph API calls ---------------------------------------------------------------------------


class GraphError(SendError):
    """A Graph API error answer, with Meta's code and subcode."""

    def __init__(
        self,
        reason: str,
        detail: str,
        retryable: bool = False,
        retry_after: float | None = None,
        code: int | None = None,
        subcode: int | None = None,
    ) -> None:
        super().__init__(reason, detail, retryable, retry_after)
        self.code = code
        self.subcode = subcode


async def _request(
    connection: Connection,
    method: str,
    path: str,
    params: Mapping[str, str] | None = None,
    json_body: JSON | None = None,
    form: Mapping[str, str] | None = None,
) -> httpx.Response:
    token = connection.credentials.get("access_token", "")
    query = dict(params or {})
    secret = connection.credentials.get("app_secret")
    if secret and token:
        # Required when the app demands "app secret proof"; harmless otherwise.
        query["appsecret_proof"] = hmac.new(secret.encode(), token.encode(), "sha256").hexdigest()
    try:
        response = await connection.http.request(
            method,
            f"{connection.api_url}/{path}",
            params=query,
            json=json_body,
            data=form,
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.TransportError as error:
        detail = f"Graph API unreachable: {type(error).__name__} {error}"
        raise GraphError("unavailable", detail[:DETAIL_LENGTH], retryable=True) from error
    if response.is_success and "error" not in _answer(response):
        return response
    raise _graph_error(response)


async def _call(
    connection: Connection,
    method: str,
    path: str,
    params: Mapping[str, str] | None = None,
    json_body: JSON | None = None,
    form: Mapping[str, str] | None = None,
) -> JSON:
    return _answer(await _request(connection, method, path, params, json_body, form))


def _answer(response: httpx.Response) -> JSON:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _graph_error(response: httpx.Response) -> GraphError:
    """Meta's error answer as the agent is told it; the code decides, the HTTP status only
    where there is no code."""
    error = _answer(response).get("error")
    status = response.status_code
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return _status_error(status, response.text)
    code, subcode = error["code"], error.get("error_subcode")
    message = str(error.get("message", ""))
    # Meta's messages mostly start with their code already: "(#10) This message is sent…"
    detail = (message if message.startswith("(#") else f"(#{code}) {message}")[:DETAIL_LENGTH]

    def failed(
        reason: str, retryable: bool = False, retry_after: float | None = None
    ) -> GraphError:
        return GraphError(reason, detail, retryable, retry_after, code, subcode)

    if code in RATE_LIMIT_CODES or code in BUSINESS_RATE_LIMITS or status == 429:
        return failed("rate_limited", True, _retry_after(response.headers))
    if code in TRANSIENT_CODES or status >= 500:
        return failed("unavailable", True)
    if subcode in WINDOW_SUBCODES:
        return failed("window_closed")
    if code == ALREADY_REPLIED:
        return failed("already_replied")
    if code == RECIPIENT_UNAVAILABLE or subcode == NO_MATCHING_USER:
        return failed("blocked")
    if code == 100 and subcode == OBJECT_MISSING:
        return failed("deleted")
    if code == TOKEN_INVALID or code in PERMISSION_CODES:
        return failed("unauthorized")
    return failed("invalid")


def _status_error(status: int, text: str) -> GraphError:
    detail = f"HTTP {status} {text.strip()}"[:DETAIL_LENGTH]
    if status == 429:
        return GraphError("rate_limited", detail, retryable=True)
    if status >= 500:
        return GraphError("unavailable", detail, retryable=True)
    if status in (401, 403):
        return GraphError("unauthorized", detail)
    return GraphError("invalid", detail)


def _retry_after(headers: httpx.Headers) -> float | None:
    """Retry-After where given; else the longest `estimated_time_to_regain_access` (minutes)
    of the Business Use Case or app usage headers."""
    given = headers.get("retry-after", "")
    if given.isdigit():
        return float(given)
    minutes = 0
    for name in ("x-business-use-case-usage", "x-app-usage"):
        try:
            usage = json.loads(headers.get(name, "{}"))
        except ValueError:
            continue
        minutes = max(minutes, *_regain_minutes(usage))
    return minutes * 60.0 if minutes else None


def _regain_minutes(usage: Any) -> Iterator[int]:
    yield 0
    if isinstance(usage, dict):
        found = usage.get("estimated_time_to_regain_access")
        if isinstance(found, int):
            yield found
        for value in usage.values():
            yield from _regain_minutes(value)
    elif isinstance(usage, list):
        for value in usage:
            yield from _regain_minutes(value)


def _segment(value: str) -> str:
    """An id as one path segment: nothing in it can reach another Graph path."""
    return quote(value, safe="")


def _messages_node(connection: Connection) -> str:
    """Messages leave through the Page: an Instagram account's Page is its `page_id` setting,
    else `me`, which a Page access token resolves to the Page."""
    if connection.kind == "instagram":
        return _segment(str(connection.settings.get("page_id") or "me"))
    return _segment(connection.external_id)


# --- sending -----------------------------------------------------------------------------------


async def send(connection: Connection, outgoing: Outgoing) -> Sent:
    if not outgoing.text.strip():
        raise SendError("invalid", "the message is empty")
    if outgoing.private_reply_to:
        return await _private_reply(connection, outgoing)
    if outgoing.visibility == "public":
        return await _public_reply(connection, outgoing)
    return await _direct_message(connection, outgoing)


async def _private_reply(connection: Connection, outgoing: Outgoing) -> Sent:
    """One message to the author of a comment or visitor post (Private Replies): Meta answers
    with the customer's PSID, which joins them across public and private."""
    _check_message_length(connection, outgoing.text)
    body: JSON = {
        "recipient": {"comment_id": outgoing.private_reply_to},
        "message": _message_body(outgoing),
    }
    answer = await _call(
        connection, "POST", f"{_messages_node(connection)}/messages", json_body=body
    )
    return Sent(_sent_id(answer, "message_id"), recipient_id=_answer_id(answer, "recipient_id"))


async def _direct_message(connection: Connection, outgoing: Outgoing) -> Sent:
    if not outgoing.recipient_id:
        raise SendError("invalid", "a direct message needs the customer's id")
    _check_message_length(connection, outgoing.text)
    body: JSON = {"recipient": {"id": outgoing.recipient_id}, "messaging_type": "RESPONSE"}
    if outgoing.tag:
        # Outside the 24-hour window a human agent may still answer, within 7 days.
        body |= {"messaging_type": "MESSAGE_TAG", "tag": outgoing.tag}
    body["message"] = _message_body(outgoing)
    answer = await _call(
        connection, "POST", f"{_messages_node(connection)}/messages", json_body=body
    )
    return Sent(_sent_id(answer, "message_id"), recipient_id=_answer_id(answer, "recipient_id"))


def _message_body(outgoing: Outgoing) -> JSON:
    # The metadata comes back on the echo: the echo is then known as this send.
    return {"text": outgoing.text, "metadata": outgoing.key[:METADATA_LIMIT]}


async def _public_reply(connection: Connection, outgoing: Outgoing) -> Sent:
    if len(outgoing.text) > COMMENT_LIMIT:
        raise SendError(
            "invalid",
            f"a comment takes at most {COMMENT_LIMIT:,} characters ({len(outgoing.text):,})",
        )
    answer = await _call(
        connection, "POST", _comment_edge(connection, outgoing), form={"message": outgoing.text}
    )
    return Sent(_sent_id(answer, "id"))


def _comment_edge(connection: Connection, outgoing: Outgoing) -> str:
    """Facebook: `/{comment or post}/comments`. Instagram: `/{comment}/replies` to answer a
    comment, `/{media}/comments` for a comment on the post itself."""
    if outgoing.reply_to_external_id:
        edge = "replies" if connection.kind == "instagram" else "comments"
        return f"{_segment(_graph_id(outgoing.reply_to_external_id))}/{edge}"
    if outgoing.thread_key:
        return f"{_segment(outgoing.thread_key)}/comments"
    raise SendError("invalid", "a public reply needs the comment or post it answers")


def _check_message_length(connection: Connection, text: str) -> None:
    if connection.kind == "instagram":
        size = len(text.encode())
        if size > INSTAGRAM_DM_BYTES:
            raise SendError(
                "invalid", f"Instagram takes at most {INSTAGRAM_DM_BYTES:,} bytes ({size:,})"
            )
    elif len(text) > MESSENGER_TEXT_LIMIT:
        raise SendError(
            "invalid",
            f"Messenger takes at most {MESSENGER_TEXT_LIMIT:,} characters ({len(text):,})",
        )


def _sent_id(answer: JSON, key: str) -> str:
    found = _answer_id(answer, key)
    if found is None:
        # Not an answer Meta documents: treated as the network failing.
        raise SendError("unavailable", f"the answer names no {key}", retryable=True)
    return found


def _answer_id(answer: JSON, key: str) -> str | None:
    value = answer.get(key)
    return str(value) if isinstance(value, str | int) and value != "" else None


# --- after an interrupted send -----------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    id: str
    author_id: str | None
    text: str
    created: datetime | None


async def find_sent(connection: Connection, outgoing: Outgoing) -> Lookup:
    if outgoing.private_reply_to:
        # Graph shows whether a comment *has* a private reply (can_reply_privately), not which
        # message or who sent it, and Instagram not even that. A second try cannot duplicate
        # (Meta refuses it with 10900), but whether this one landed is a person's call.
        return Lookup(None, certain=False)
    if outgoing.visibility == "public":
        try:
            candidates = await _own_comments(connection, outgoing)
        except GraphError as error:
            if error.reason != "deleted":
                raise
            # The comment answered is gone, and every reply to it with it.
            return Lookup(None, certain=True)
    else:
        candidates = await _own_messages(connection, outgoing)
    since = outgoing.sent_at - SENT_AT_SLACK if outgoing.sent_at else None
    for candidate in candidates:
        if (
            candidate.author_id == connection.external_id
            and candidate.text.strip() == outgoing.text.strip()
            and (since is None or candidate.created is None or candidate.created >= since)
        ):
            return Lookup(candidate.id, certain=True)
    return Lookup(None, certain=True)


async def _own_comments(connection: Connection, outgoing: Outgoing) -> list[_Candidate]:
    path = _comment_edge(connection, outgoing)
    if connection.kind == "instagram":
        fields = "id,text,from,username,timestamp"
    else:
        fields = "id,message,from,created_time"
    params = {"fields": fields, "order": "reverse_chronological", "limit": "100"}
    answer = await _call(connection, "GET", path, params=params)
    return _candidates(answer.get("data"))


async def _own_messages(connection: Connection, outgoing: Outgoing) -> list[_Candidate]:
    if not outgoing.recipient_id:
        return []
    params = {
        "user_id": outgoing.recipient_id,
        "fields": f"messages.limit({CONVERSATION_MESSAGES}){{id,message,created_time,from}}",
    }
    if connection.kind == "instagram":
        params["platform"] = "instagram"
    path = f"{_messages_node(connection)}/conversations"
    answer = await _call(connection, "GET", path, params=params)
    found: list[_Candidate] = []
    for conversation in answer.get("data") or []:
        if isinstance(conversation, dict) and isinstance(conversation.get("messages"), dict):
            found.extend(_candidates(conversation["messages"].get("data")))
    return found


def _candidates(items: Any) -> list[_Candidate]:
    found = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        sender = item.get("from")
        text = item.get("message", item.get("text"))
        found.append(
            _Candidate(
                id=item["id"],
                author_id=str(sender.get("id")) if isinstance(sender, dict) else None,
                text=text if isinstance(text, str) else "",
                created=_maybe_time(item),
            )
        )
    return found


# --- polling what webhooks missed --------------------------------------------------------------


async def fetch(connection: Connection, cursor: str | None) -> Fetched:
    """The feed's posts and comments since `cursor` (Unix seconds), one event per page of the
    Graph answer, exactly as it came. Webhooks miss comments while the app is unsubscribed;
    posts older than the cursor that got new comments are not listed by `since` (a limit of
    the feed edge), so this catches up rather than replaces the webhooks."""
    since = _cursor_time(cursor)
    if connection.kind == "messenger":
        return Fetched(cursor=str(since))
    edge, fields = (
        ("media", MEDIA_FIELDS) if connection.kind == "instagram" else ("feed", FEED_FIELDS)
    )
    node = _segment(connection.external_id)
    events: list[tuple[str, bytes]] = []
    newest = since
    after: str | None = None
    for _ in range(MAX_FETCH_PAGES):
        params = {"fields": fields, "since": str(since), "limit": str(FETCH_PAGE_SIZE)}
        if after:
            params["after"] = after
        response = await _request(connection, "GET", f"{node}/{edge}", params=params)
        body = _answer(response)
        page_newest = _newest(body.get("data"))
        if page_newest is None:
            break
        digest = hashlib.sha256(response.content).hexdigest()[:16]
        events.append(
            (f"meta:{edge}:{connection.external_id}:{page_newest}:{digest}", response.content)
        )
        newest = max(newest, page_newest)
        after = _next_cursor(body)
        if after is None:
            break
    return Fetched(events=events, cursor=str(newest))


def _cursor_time(cursor: str | None) -> int:
    if cursor and cursor.isdigit():
        return int(cursor)
    return int((datetime.now(UTC) - FIRST_FETCH_LOOKBACK).timestamp())


def _newest(items: Any) -> int | None:
    """The latest time of a page's posts and comments, in Unix seconds; None when empty."""
    if not isinstance(items, list) or not items:
        return None
    times = [0]
    pending = list(items)
    while pending:
        item = pending.pop()
        if not isinstance(item, dict):
            continue
        at = _maybe_time(item)
        if at is not None:
            times.append(int(at.timestamp()))
        for edge in ("comments", "replies"):
            nested = item.get(edge)
            if isinstance(nested, dict) and isinstance(nested.get("data"), list):
                pending.extend(nested["data"])
    return max(times)


def _maybe_time(item: JSON) -> datetime | None:
    """A Graph object's time (Facebook `created_time`, Instagram `timestamp`), if readable."""
    value = item.get("created_time", item.get("timestamp"))
    if value is None:
        return None
    try:
        return _time(value, "created_time", datetime.now(UTC))
    except ParseError:
        return None


def _next_cursor(body: JSON) -> str | None:
    """Graph's `after` cursor when there is a next page. Its `next` URL is not followed: the
    token goes only to the configured API address."""
    paging = body.get("paging")
    if not isinstance(paging, dict) or not paging.get("next"):
        return None
    cursors = paging.get("cursors")
    after = cursors.get("after") if isinstance(cursors, dict) else None
    return after if isinstance(after, str) and after else None


# --- health ------------------------------------------------------------------------------------


async def check(connection: Connection) -> Health:
    now = datetime.now(UTC)
    problems: list[str] = []
    expires_at = _token_expiry(connection.settings, problems)
    if expires_at is not None and expires_at <= now:
        problems.append(f"the access token expired on {expires_at:%Y-%m-%d}: reconnect the channel")
    subscribed: bool | None = None
    try:
        page_id = await _check_identity(connection, problems)
        if page_id is not None:
            subscribed = await _check_subscription(connection, page_id, problems)
    except GraphError as error:
        problems.append(_health_problem(error))
    return Health(
        ok=not problems,
        problems=tuple(problems),
        token_expires_at=expires_at,
        subscribed=subscribed,
        checked_at=now,
    )


def _token_expiry(settings: Mapping[str, Any], problems: list[str]) -> datetime | None:
    value = settings.get("token_expires_at")
    if not value:
        return None
    try:
        found = datetime.fromisoformat(str(value))
    except ValueError:
        problems.append(f"token_expires_at is not an ISO date: {value!r}")
        return None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


async def _check_identity(connection: Connection, problems: list[str]) -> str | None:
    """The token must be the Page's (for Instagram: the Page connected to the account).
    Returns the Page id whose subscriptions to check."""
    instagram = connection.kind == "instagram"
    fields = "id,name,instagram_business_account" if instagram else "id,name"
    me = await _call(connection, "GET", "me", params={"fields": fields})
    page_id = _answer_id(me, "id")
    if instagram:
        account = me.get("instagram_business_account")
        account_id = _answer_id(account, "id") if isinstance(account, dict) else None
        if account_id != connection.external_id:
            problems.append(
                f"the token's Page {page_id} is not connected to Instagram account "
                f"{connection.external_id} (it has {account_id or 'none'})"
            )
        expected_page = connection.settings.get("page_id")
        if expected_page and str(expected_page) != page_id:
            problems.append(
                f"the token is Page {page_id}'s, the page_id setting is {expected_page}"
            )
    elif page_id != connection.external_id:
        problems.append(f"the token is Page {page_id}'s, not Page {connection.external_id}'s")
    return page_id


async def _check_subscription(connection: Connection, page_id: str, problems: list[str]) -> bool:
    answer = await _call(connection, "GET", f"{_segment(page_id)}/subscribed_apps")
    apps = [a for a in answer.get("data") or [] if isinstance(a, dict)]
    app_id = connection.settings.get("app_id")
    if app_id:
        apps = [a for a in apps if str(a.get("id")) == str(app_id)]
    if not apps:
        problems.append(f"Page {page_id} has no app subscribed to its webhooks")
        return False
    fields = {f for a in apps for f in a.get("subscribed_fields") or [] if isinstance(f, str)}
    missing = [f for f in REQUIRED_FIELDS.get(connection.kind, ()) if f not in fields]
    if missing:
        problems.append(f"webhook fields not subscribed: {', '.join(missing)}")
    return True


def _health_problem(error: GraphError) -> str:
    if error.code == TOKEN_INVALID:
        return f"the access token expired or was revoked: reconnect the channel {error.detail}"
    if error.reason == "unauthorized":
        return f"a permission is missing: {error.detail}"
    if error.reason == "unavailable":
        return f"the Graph API could not be reached: {error.detail}"
    return f"{error.reason}: {error.detail}"


# --- media -------------------------------------------------------------------------------------


async def media_request(
    connection: Connection, attachment: Mapping[str, Any]
) -> tuple[str, dict[str, str]] | None:
    """Messenger and Instagram files are signed CDN URLs: fetched as they are, without the
    token (which must not leave for another host). Links a customer shared are not files."""
    url = attachment.get("url")
    if attachment.get("type") not in DOWNLOADABLE or not isinstance(url, str):
        return None
    if urlsplit(url).scheme not in ("https", "http"):
        return None
    return url, {}
