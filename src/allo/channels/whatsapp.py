"""WhatsApp Business Cloud API: `messages` webhooks, the Graph send API, health and media.

One channel account is one business phone number (its `phone_number_id`). A Meta app subscribed
to a WhatsApp Business Account receives the webhooks of every number of that account; each
channel account keeps only the changes addressed to its own number.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from allo.channels import signatures
from allo.channels.fields import as_object, list_in
from allo.channels.inbound import (
    Author,
    InboundMessage,
    Parsed,
    ParseError,
    StatusUpdate,
    UpdateKind,
)
from allo.channels.outbound import Connection, Fetched, Health, Lookup, Outgoing, SendError, Sent
from allo.channels.text import clean_json, clean_text

KINDS = ("whatsapp",)
PARSER = "whatsapp"
CREDENTIALS = (
    "access_token",
    "app_secret",
    "verify_token",
)
DEFAULT_API_URL = "https://graph.facebook.com/v21.0"

JSON = dict[str, Any]
Content = tuple[str, list[JSON]]
"""A message's text and attachments."""

MAX_TEXT = 4096
MAX_DETAIL = 300
PHONE_NUMBER_FIELDS = (
    "display_phone_number,verified_name,quality_rating,name_status,code_verification_status"
)
ECHOES_FIELD = "smb_message_echoes"
GRAPH_ID = re.compile(r"[0-9]+")
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
STATUS_KINDS: dict[str, UpdateKind] = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    # A voice message the customer listened to has been read.
    "played": "read",
    "failed": "failed",
    "deleted": "deleted",
}

# Graph error codes (WhatsApp Cloud API error codes reference) by what the agent is told.
SEND_REASON_BY_CODE: dict[int, str] = {
    131047: "window_closed",  # re-engagement: 24 hours since the customer last wrote
    131026: "blocked",  # undeliverable: not on WhatsApp, old app, terms not accepted
    131050: "blocked",  # the customer stopped marketing messages from the business
    130472: "blocked",  # the customer's number is part of a Meta experiment
    4: "rate_limited",  # app-level call rate
    17: "rate_limited",
    32: "rate_limited",
    613: "rate_limited",
    80007: "rate_limited",  # WhatsApp Business Account rate limit
    130429: "rate_limited",  # Cloud API throughput
    131048: "rate_limited",  # spam rate limit
    131049: "rate_limited",  # per-user marketing limit: "do not retry immediately"
    131056: "rate_limited",  # business/customer pair rate limit
    0: "unauthorized",
    3: "unauthorized",
    10: "unauthorized",
    190: "unauthorized",  # access token expired or revoked
    33: "unauthorized",  # the business phone number was deleted
    368: "unauthorized",  # temporarily blocked for policy violations
    131005: "unauthorized",  # access denied
    131031: "unauthorized",  # business account locked
    131042: "unauthorized",  # business payment issue
    1: "unavailable",
    2: "unavailable",
    131000: "unavailable",  # something went wrong
    131016: "unavailable",  # service unavailable
    100: "invalid",
    131008: "invalid",
    131009: "invalid",
    131021: "invalid",  # the recipient is the sender
    131051: "invalid",
    131052: "invalid",
    131053: "invalid",
}
TEMPLATE_CODES = range(132000, 133000)
PERMISSION_CODES = range(200, 300)
RETRYABLE = ("rate_limited", "unavailable")
# Meta asks not to retry a message it held back for the customer's marketing limit right away;
# an hour keeps the outbox from hammering a limit that lasts for a varying time.
MARKETING_LIMIT_PAUSE = 3600.0


def verify(headers: Mapping[str, str], raw: bytes, credentials: Mapping[str, str]) -> None:
    signatures.verify_meta(headers, raw, credentials.get("app_secret", ""))


def handshake(query: Mapping[str, str], credentials: Mapping[str, str]) -> tuple[str, str]:
    return signatures.meta_handshake(query, credentials.get("verify_token", "")), "text/plain"


# --- Webhooks ---------------------------------------------------------------------------------


def parse(raw: bytes, external_id: str, received_at: datetime, own_id: str) -> Sequence[Parsed]:
    body = as_object(_loads(raw), "body")
    if body.get("object") != "whatsapp_business_account":
        raise ParseError(
            f"object: expected 'whatsapp_business_account', got {body.get('object')!r}"
        )
    parsed: list[Parsed] = []
    seen: set[object] = set()
    for entry in list_in(body, "entry", "body"):
        for change in list_in(as_object(entry, "entry[]"), "changes", "entry[]"):
            for item in _change(as_object(change, "changes[]"), received_at, own_id):
                # Meta may repeat a message or status inside one delivery: keep the first.
                key = ("message", item.external_id) if isinstance(item, InboundMessage) else item
                if key not in seen:
                    seen.add(key)
                    parsed.append(item)
    return parsed


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ParseError(f"not JSON: {error}") from None


def _change(change: JSON, received_at: datetime, own_id: str) -> list[Parsed]:
    field = change.get("field")
    if field not in ("messages", ECHOES_FIELD):
        # Template, quality and account updates say nothing about a conversation.
        return []
    value = as_object(change.get("value"), "changes[].value")
    metadata = as_object(value.get("metadata"), "value.metadata")
    if _string(metadata, "phone_number_id", "value.metadata") != own_id:
        # Another number of the same business account: its own channel account parses it.
        return []
    names = _profile_names(list_in(value, "contacts", "value"))
    if field == ECHOES_FIELD:
        business_number = metadata.get("display_phone_number")
        return [
            _echo(as_object(echo, "message_echoes[]"), names, business_number, received_at)
            for echo in list_in(value, "message_echoes", "value")
        ]
    errors = list_in(value, "errors", "value")
    found: list[Parsed] = [
        _customer_message(as_object(message, "messages[]"), names, errors, received_at)
        for message in list_in(value, "messages", "value")
    ]
    for status in list_in(value, "statuses", "value"):
        update = _status(as_object(status, "statuses[]"), received_at)
        if update is not None:
            found.append(update)
    return found


def _profile_names(contacts: list[Any]) -> dict[str, str]:
    """The customers' WhatsApp profile names, by wa_id and by business-scoped user id."""
    names: dict[str, str] = {}
    for contact in contacts:
        if not isinstance(contact, dict):
            continue
        profile = contact.get("profile")
        name = profile.get("name") if isinstance(profile, dict) else None
        if not isinstance(name, str) or not name:
            continue
        for key in ("wa_id", "user_id"):
            if isinstance(contact.get(key), str):
                names[contact[key]] = clean_text(name)
    return names


def _customer_message(
    message: JSON, names: Mapping[str, str], errors: list[Any], received_at: datetime
) -> Parsed:
    wamid = _string(message, "id", "messages[]")
    sender = _sender(message)
    sent_at = _time(message.get("timestamp"), received_at, "messages[]")
    kind = message.get("type")
    if kind == "reaction":
        return _reaction(message, sender, sent_at)
    if kind == "revoke":
        return _revoked(message, sent_at)
    text, attachments = _content(message, errors)
    return InboundMessage(
        external_id=wamid,
        contact=_author(sender, names),
        text=text,
        sent_at=sent_at,
        reply_to_external_id=_replied_to(message),
        attachments=_attachments(attachments + _context_attachments(message)),
    )


def _echo(
    echo: JSON, names: Mapping[str, str], business_number: Any, received_at: datetime
) -> Parsed:
    """A message the business sent from the WhatsApp Business app (coexistence): the brand's
    own message, addressed to the customer."""
    wamid = _string(echo, "id", "message_echoes[]")
    sent_at = _time(echo.get("timestamp"), received_at, "message_echoes[]")
    if echo.get("type") == "revoke":
        return _revoked(echo, sent_at)
    customer = echo.get("to")
    if customer == business_number or not isinstance(customer, str) or not customer:
        customer = echo.get("from")
    if not isinstance(customer, str) or not customer:
        raise ParseError("message_echoes[]: no customer in 'to'")
    text, attachments = _content(echo, [])
    return InboundMessage(
        external_id=wamid,
        contact=_author(customer, names),
        text=text,
        sent_at=sent_at,
        direction="out",
        reply_to_external_id=_replied_to(echo),
        attachments=_attachments(attachments + _context_attachments(echo)),
    )


def _sender(message: JSON) -> str:
    for key in ("from", "from_user_id"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    raise ParseError("messages[]: no sender in 'from'")


def _author(wa_id: str, names: Mapping[str, str]) -> Author:
    return Author(
        platform_id=wa_id,
        handle=wa_id,
        display_name=names.get(wa_id),
        # A business-scoped user id ("US.…") stands in for customers who hide their number.
        phone="+" + wa_id if wa_id.isdigit() else None,
    )


def _replied_to(message: JSON) -> str | None:
    context = message.get("context")
    replied = context.get("id") if isinstance(context, dict) else None
    return replied if isinstance(replied, str) and replied else None


def _reaction(message: JSON, sender: str, at: datetime) -> StatusUpdate:
    reaction = as_object(message.get("reaction"), "messages[].reaction")
    emoji = reaction.get("emoji")
    return StatusUpdate(
        kind="reaction",
        at=at,
        external_id=_string(reaction, "message_id", "messages[].reaction"),
        recipient_id=sender,
        reaction=clean_text(emoji) if isinstance(emoji, str) and emoji else None,
    )


def _revoked(message: JSON, at: datetime) -> StatusUpdate:
    revoke = as_object(message.get("revoke"), "revoke")
    return StatusUpdate(
        kind="deleted", at=at, external_id=_string(revoke, "original_message_id", "revoke")
    )


def _status(status: JSON, received_at: datetime) -> StatusUpdate | None:
    kind = STATUS_KINDS.get(str(status.get("status")))
    if kind is None:
        return None  # a state Allo does not follow
    errors = status.get("errors")
    recipient = status.get("recipient_id")
    callback = status.get("biz_opaque_callback_data")
    return StatusUpdate(
        kind=kind,
        at=_time(status.get("timestamp"), received_at, "statuses[]"),
        external_id=_string(status, "id", "statuses[]"),
        recipient_id=recipient if isinstance(recipient, str) and recipient else None,
        error=_errors_text(errors) if isinstance(errors, list) else None,
        outbox_key=callback if isinstance(callback, str) and callback else None,
    )


def _errors_text(errors: list[Any]) -> str | None:
    """`131047: Re-engagement message — Message failed to send because…`, one per error."""
    described = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        title = error.get("title") or error.get("message") or "error"
        data = error.get("error_data")
        details = data.get("details") if isinstance(data, dict) else None
        text = f"{error.get('code', '?')}: {title}"
        described.append(f"{text} — {details}" if details and details != title else text)
    return clean_text("; ".join(described)) if described else None


# --- What a message holds ---------------------------------------------------------------------


def _content(message: JSON, errors: list[Any]) -> Content:
    kind = message.get("type")
    reader = READERS.get(kind) if isinstance(kind, str) else None
    found = reader(message[kind]) if reader is not None and kind in message else None
    return found if found is not None else _unsupported(message, errors)


def _unsupported(message: JSON, errors: list[Any]) -> Content:
    """What Allo cannot read still reaches the agent, with the raw message kept."""
    unsupported = message.get("unsupported")
    kind = unsupported.get("type") if isinstance(unsupported, dict) else None
    if not kind and message.get("type") != "unsupported":
        kind = message.get("type")
    kind = str(kind or "unknown")
    own_errors = message.get("errors")
    reasons = _errors_text(own_errors if isinstance(own_errors, list) else errors)
    attachment = {"type": "unsupported", "message_type": kind, "errors": reasons, "raw": message}
    return f"[unsupported: {kind}]", [attachment]


def _text(detail: Any) -> Content | None:
    body = detail.get("body") if isinstance(detail, dict) else None
    return (clean_text(body), []) if isinstance(body, str) else None


def _media(kind: str) -> Callable[[Any], Content | None]:
    def read(detail: Any) -> Content | None:
        if not isinstance(detail, dict) or not isinstance(detail.get("id"), str):
            return None
        attachment = {
            "type": kind,
            # A webhook may also give a URL, but it needs the token and expires: the id is
            # traded for a fresh one when the file is downloaded (media_request).
            "media_id": detail.get("id"),
            "content_type": detail.get("mime_type"),
            "sha256": detail.get("sha256"),
            "filename": detail.get("filename"),
            "voice": detail.get("voice") if kind == "audio" else None,
            "animated": detail.get("animated") if kind == "sticker" else None,
        }
        caption = detail.get("caption")
        return clean_text(caption) if isinstance(caption, str) else "", [attachment]

    return read


def _location(detail: Any) -> Content | None:
    if not isinstance(detail, dict):
        return None
    latitude, longitude = detail.get("latitude"), detail.get("longitude")
    if not all(isinstance(v, int | float) for v in (latitude, longitude)):
        return None
    place = ", ".join(str(detail[k]) for k in ("name", "address") if detail.get(k))
    text = f"📍 {place} ({latitude}, {longitude})" if place else f"📍 ({latitude}, {longitude})"
    attachment = {
        "type": "location",
        "latitude": latitude,
        "longitude": longitude,
        "name": detail.get("name"),
        "address": detail.get("address"),
        # A map page, not a file to download: kept apart from "url".
        "link": _web_link(detail.get("url")),
    }
    return clean_text(text), [attachment]


def _web_link(value: Any) -> str | None:
    """An http(s) link only: a `javascript:` one must never become clickable."""
    if isinstance(value, str) and value.lower().startswith(("https://", "http://")):
        return value
    return None


def _contacts(detail: Any) -> Content | None:
    """Contact cards the customer shared: one line each, and the cards as sent."""
    if not isinstance(detail, list) or not detail or not all(isinstance(c, dict) for c in detail):
        return None
    lines, attachments = [], []
    for card in detail:
        name = _card_name(card)
        reachable = [
            str(entry[key])
            for field, key in (("phones", "phone"), ("emails", "email"))
            for entry in (card.get(field) if isinstance(card.get(field), list) else [])
            if isinstance(entry, dict) and entry.get(key)
        ]
        lines.append("👤 " + " — ".join(part for part in (name, ", ".join(reachable)) if part))
        attachments.append({"type": "contact", "name": name or None, "card": card})
    return clean_text("\n".join(lines)), attachments


def _card_name(card: JSON) -> str:
    name = card.get("name")
    if not isinstance(name, dict):
        return ""
    formatted = name.get("formatted_name")
    if isinstance(formatted, str) and formatted:
        return formatted
    return " ".join(str(name[k]) for k in ("first_name", "last_name") if name.get(k))


def _interactive(detail: Any) -> Content | None:
    """A tap on a reply button or a list row the business sent, or a submitted form."""
    if not isinstance(detail, dict):
        return None
    kind = detail.get("type")
    chosen = detail.get(kind) if isinstance(kind, str) else None
    if not isinstance(chosen, dict):
        return None
    if kind == "nfm_reply":
        body = chosen.get("body") or "[form reply]"
        return clean_text(str(body)), [
            {
                "type": "form_reply",
                "name": chosen.get("name"),
                "response": chosen.get("response_json"),
            }
        ]
    if kind not in ("button_reply", "list_reply"):
        return None
    title = chosen.get("title")
    description = chosen.get("description")
    text = "\n".join(str(part) for part in (title, description) if part)
    return clean_text(text), [{"type": kind, "payload": chosen.get("id"), "title": title}]


def _button(detail: Any) -> Content | None:
    """A quick-reply button of a template message."""
    if not isinstance(detail, dict) or not isinstance(detail.get("text"), str):
        return None
    return clean_text(detail["text"]), [{"type": "button", "payload": detail.get("payload")}]


def _order(detail: Any) -> Content | None:
    if not isinstance(detail, dict) or not isinstance(detail.get("product_items"), list):
        return None
    items = [_order_line(item) for item in detail["product_items"] if isinstance(item, dict)]
    note = detail.get("text")
    text = "🛒 " + ", ".join(items) + (f"\n{note}" if isinstance(note, str) and note else "")
    attachment = {
        "type": "order",
        "catalog_id": detail.get("catalog_id"),
        "product_items": detail["product_items"],
    }
    return clean_text(text), [attachment]


def _order_line(item: JSON) -> str:
    line = f"{item.get('quantity', '?')} × {item.get('product_retailer_id', '?')}"
    price, currency = item.get("item_price"), item.get("currency")
    if price is None:
        return line
    return f"{line} ({price} {currency})" if currency else f"{line} ({price})"


def _system(detail: Any) -> Content | None:
    """The customer changed number or identity: WhatsApp's own notice, shown as it words it."""
    if not isinstance(detail, dict) or not isinstance(detail.get("body"), str):
        return None
    attachment = {
        "type": "system",
        "system_type": detail.get("type"),
        "new_wa_id": detail.get("new_wa_id") or detail.get("wa_id"),
    }
    return clean_text(detail["body"]), [attachment]


def _edit(detail: Any) -> Content | None:
    """A new version of an earlier message: its text, and which message it replaces."""
    if not isinstance(detail, dict) or not isinstance(detail.get("message"), dict):
        return None
    text, attachments = _content(detail["message"], [])
    return text, [
        *attachments,
        {"type": "edit", "original_message_id": detail.get("original_message_id")},
    ]


READERS: dict[str, Callable[[Any], Content | None]] = {
    "text": _text,
    **{kind: _media(kind) for kind in MEDIA_TYPES},
    "location": _location,
    "contacts": _contacts,
    "interactive": _interactive,
    "button": _button,
    "order": _order,
    "system": _system,
    "edit": _edit,
}


def _context_attachments(message: JSON) -> list[JSON]:
    """What surrounds the message: the ad it answers, a product asked about, a forward."""
    found: list[JSON] = []
    referral = message.get("referral")
    if isinstance(referral, dict):
        found.append({"type": "referral", **referral})
    context = message.get("context")
    if isinstance(context, dict):
        product = context.get("referred_product")
        if isinstance(product, dict):
            found.append({"type": "product", **product})
        if context.get("forwarded") or context.get("frequently_forwarded"):
            found.append(
                {"type": "forwarded", "frequently": bool(context.get("frequently_forwarded"))}
            )
    return found


def _attachments(found: list[JSON]) -> tuple[JSON, ...]:
    return tuple(
        clean_json({key: value for key, value in attachment.items() if value is not None})
        for attachment in found
    )


# --- Shape checks -----------------------------------------------------------------------------


def _string(container: JSON, key: str, where: str) -> str:
    value = container.get(key)
    if not isinstance(value, str) or not value:
        raise ParseError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value


def _time(value: Any, fallback: datetime, where: str) -> datetime:
    if value is None:
        return fallback
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ParseError(f"{where}.timestamp: expected Unix seconds, got {value!r}")
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (ValueError, OverflowError, OSError):
        raise ParseError(f"{where}.timestamp: expected Unix seconds, got {value!r}") from None


# --- Sending ----------------------------------------------------------------------------------


async def send(connection: Connection, outgoing: Outgoing) -> Sent:
    body = _message_body(outgoing)
    response = await _graph(connection, "POST", f"{connection.external_id}/messages", body=body)
    if not response.is_success:
        raise _send_error(response)
    return _sent(response)


def _message_body(outgoing: Outgoing) -> JSON:
    if not outgoing.recipient_id:
        raise SendError("invalid", "no WhatsApp recipient (wa_id) to send to")
    body: JSON = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": outgoing.recipient_id,
    }
    if outgoing.template is not None:
        template: JSON = {
            "name": outgoing.template.name,
            "language": {"policy": "deterministic", "code": outgoing.template.language},
        }
        if outgoing.template.parameters:
            parameters = [{"type": "text", "text": p} for p in outgoing.template.parameters]
            template["components"] = [{"type": "body", "parameters": parameters}]
        body |= {"type": "template", "template": template}
    else:
        if not outgoing.text.strip():
            raise SendError("invalid", "an empty message cannot be sent")
        if len(outgoing.text) > MAX_TEXT:
            raise SendError(
                "invalid",
                f"WhatsApp text messages hold at most {MAX_TEXT:,} characters; "
                f"this one has {len(outgoing.text):,}",
            )
        body |= {"type": "text", "text": {"preview_url": False, "body": outgoing.text}}
        if outgoing.reply_to_external_id:
            # Templates show no quoted bubble, so only free-form replies carry the context.
            body["context"] = {"message_id": outgoing.reply_to_external_id}
    # Comes back on every status of this message: ties it to the outbox row.
    body["biz_opaque_callback_data"] = outgoing.key
    return body


def _sent(response: httpx.Response) -> Sent:
    data = _response_json(response)
    messages = data.get("messages") if isinstance(data, dict) else None
    first = messages[0] if isinstance(messages, list) and messages else None
    wamid = first.get("id") if isinstance(first, dict) else None
    if not isinstance(wamid, str) or not wamid:
        # Accepted but unnamed: sending again could deliver twice, so no retry.
        raise SendError("unavailable", "WhatsApp accepted the message without naming it")
    contacts = data.get("contacts")
    contact = contacts[0] if isinstance(contacts, list) and contacts else None
    wa_id = contact.get("wa_id") if isinstance(contact, dict) else None
    return Sent(wamid, recipient_id=wa_id if isinstance(wa_id, str) else None)


def _send_error(response: httpx.Response) -> SendError:
    code, message = _graph_error(response)
    reason = _reason(response.status_code, code)
    retry_after = _retry_after(response.headers) if reason == "rate_limited" else None
    if code == 131049 and retry_after is None:
        retry_after = MARKETING_LIMIT_PAUSE
    return SendError(reason, message, retryable=reason in RETRYABLE, retry_after=retry_after)


def _reason(status: int, code: int | None) -> str:
    if code is not None:
        if code in SEND_REASON_BY_CODE:
            return SEND_REASON_BY_CODE[code]
        if code in TEMPLATE_CODES:
            return "invalid"
        if code in PERMISSION_CODES:
            return "unauthorized"
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "unauthorized"
    return "unavailable" if status >= 500 else "invalid"


def _graph_error(response: httpx.Response) -> tuple[int | None, str]:
    """The Graph error's code and a short description: `(#131047) Re-engagement message — …`."""
    data = _response_json(response)
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, f"HTTP {response.status_code}"
    code = error.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    message = str(error.get("message") or f"HTTP {response.status_code}")
    if code is not None and not message.startswith("(#"):
        message = f"(#{code}) {message}"
    data_part = error.get("error_data")
    details = data_part.get("details") if isinstance(data_part, dict) else None
    if isinstance(details, str) and details and details not in message:
        message = f"{message} — {details}"
    return code, message[:MAX_DETAIL]


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait: Retry-After, or the Business Use Case header's minutes to regain access."""
    given = headers.get("retry-after")
    if given:
        try:
            seconds = float(given)
        except ValueError:
            pass
        else:
            return max(seconds, 0.0) if math.isfinite(seconds) else None
        try:
            return max((parsedate_to_datetime(given) - datetime.now(UTC)).total_seconds(), 0.0)
        except (TypeError, ValueError):
            pass
    usage = headers.get("x-business-use-case-usage")
    try:
        accounts = json.loads(usage) if usage else {}
    except ValueError:
        return None
    minutes = [
        entry.get("estimated_time_to_regain_access")
        for entries in (accounts.values() if isinstance(accounts, dict) else [])
        if isinstance(entries, list)
        for entry in entries
        if isinstance(entry, dict)
    ]
    waits = [float(m) * 60 for m in minutes if isinstance(m, int | float) and m > 0]
    return max(waits) if waits else None


def _bearer(connection: Connection) -> dict[str, str]:
    return {"Authorization": f"Bearer {connection.credentials.get('access_token', '')}"}


async def _graph(
    connection: Connection,
    method: str,
    path: str,
    params: Mapping[str, str] | None = None,
    body: JSON | None = None,
) -> httpx.Response:
    """One Graph API call; unreachable is a retryable SendError, any answer is returned."""
    query = dict(params or {})
    token = connection.credentials.get("access_token", "")
    secret = connection.credentials.get("app_secret", "")
    if token and secret:
        # Required when the app demands "app secret proof"; harmless otherwise.
        query["appsecret_proof"] = hmac.new(secret.encode(), token.encode(), "sha256").hexdigest()
    try:
        return await connection.http.request(
            method,
            f"{connection.api_url}/{quote(path, safe='/')}",
            params=query,
            json=body,
            headers=_bearer(connection),
        )
    except httpx.TransportError as error:
        detail = f"Graph API unreachable: {type(error).__name__} {error}"
        raise SendError("unavailable", detail[:MAX_DETAIL], retryable=True) from error


def _response_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


async def find_sent(connection: Connection, outgoing: Outgoing) -> Lookup:
    # The Cloud API cannot list sent messages; statuses carrying biz_opaque_callback_data
    # reconcile an interrupted send once they arrive.
    return Lookup(None, certain=False)


async def fetch(connection: Connection, cursor: str | None) -> Fetched:
    # Webhooks deliver everything; there is nothing to poll.
    return Fetched(events=[], cursor=cursor)


# --- Health and media -------------------------------------------------------------------------


class _Problem(Exception):
    """A check that failed, worded for the admin."""


async def check(connection: Connection) -> Health:
    problems: list[str] = []
    ok = True
    try:
        number = await _graph_get(
            connection, connection.external_id, {"fields": PHONE_NUMBER_FIELDS}
        )
    except _Problem as problem:
        ok = False
        problems.append(str(problem))
    else:
        if number.get("quality_rating") == "RED":
            # Still sending, but Meta may lower the number's messaging limit.
            problems.append("quality rating RED: customers block or report this number")
    subscribed = None
    waba_id = connection.settings.get("waba_id")
    if waba_id:
        try:
            apps = await _graph_get(connection, f"{waba_id}/subscribed_apps")
        except _Problem as problem:
            problems.append(str(problem))
        else:
            subscribed = bool(apps.get("data"))
            if not subscribed:
                ok = False
                problems.append("no app subscribed to the business account: no webhooks arrive")
    expires_at, expiry_problem = _token_expiry(connection.settings.get("token_expires_at"))
    if expiry_problem:
        ok = False
        problems.append(expiry_problem)
    return Health(
        ok=ok,
        problems=tuple(problems),
        token_expires_at=expires_at,
        subscribed=subscribed,
        checked_at=datetime.now(UTC),
    )


async def _graph_get(
    connection: Connection, path: str, params: Mapping[str, str] | None = None
) -> JSON:
    try:
        response = await _graph(connection, "GET", path, params)
    except SendError as error:
        raise _Problem(error.detail) from error
    if not response.is_success:
        code, message = _graph_error(response)
        if response.status_code == 401 or code == 190:
            raise _Problem(f"access token rejected, reconnect the channel: {message}")
        raise _Problem(f"GET /{path}: {message}")
    data = _response_json(response)
    if not isinstance(data, dict):
        raise _Problem(f"GET /{path}: the answer is not a JSON object")
    return data


def _token_expiry(value: Any) -> tuple[datetime | None, str | None]:
    """A system user token usually never expires; a user token's expiry is kept in settings."""
    if not value:
        return None, None
    try:
        expires_at = datetime.fromisoformat(str(value))
    except ValueError:
        return None, f"token_expires_at is not an ISO 8601 time: {value!r}"
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    if expires_at <= datetime.now(UTC):
        return expires_at, f"access token expired at {expires_at.isoformat()}"
    return expires_at, None


async def media_request(
    connection: Connection, attachment: Mapping[str, Any]
) -> tuple[str, dict[str, str]] | None:
    """The media's short-lived download URL, fetched with the same bearer token. None when the
    media is gone (WhatsApp keeps a received file for a limited time); a SendError when the
    lookup may succeed later (rate limit, outage) or the token was refused."""
    media_id = attachment.get("media_id")
    if not isinstance(media_id, str) or not GRAPH_ID.fullmatch(media_id):
        return None
    response = await _graph(connection, "GET", media_id)
    if not response.is_success:
        error = _send_error(response)
        if error.retryable or error.reason == "unauthorized":
            raise error
        return None
    data = _response_json(response)
    url = data.get("url") if isinstance(data, dict) else None
    return (url, _bearer(connection)) if isinstance(url, str) and url else None
