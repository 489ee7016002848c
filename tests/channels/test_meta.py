"""Facebook Pages, Messenger and Instagram: webhooks, parsing, and the Graph API calls, against a
local fake of graph.facebook.com that checks what Allo sends."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from allo.channels import meta, signatures
from allo.channels.inbound import Author, InboundMessage, Parsed, ParseError, StatusUpdate
from allo.channels.outbound import Connection, Outgoing, SendError
from allo.channels.registry import network_for, parser_for
from tests.fakes.meta_graph import (
    APP_ID,
    APP_SECRET,
    IG_ID,
    PAGE_ID,
    TOKEN,
    VERSION,
    MetaGraph,
    graph_error,
)
from tests.fakes.server import free_port, serving

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
RECEIVED_AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
OWN = PAGE_ID
CUSTOMER = "6543210987654321"
PSID = "24023456789012345"
IGSID = "1234567890123456"
POST = f"{PAGE_ID}_1164870100259578"
COMMENT = "1164870100259578_987654321012345"
MEDIA = "17887498072083520"
IG_COMMENT = "17865799348089039"


# --- helpers ----------------------------------------------------------------------------------


def parse(body: dict[str, Any] | bytes, own: str = OWN) -> list[Parsed]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return list(meta.parse(raw, "event-1", RECEIVED_AT, own))


def refused(body: dict[str, Any] | bytes) -> str:
    with pytest.raises(ParseError) as caught:
        parse(body)
    return str(caught.value)


def messaging(*events: dict[str, Any], kind: str = "page", page: str = OWN) -> dict[str, Any]:
    return {
        "object": kind,
        "entry": [{"id": page, "time": 1700000000000, "messaging": list(events)}],
    }


def message_event(
    message: dict[str, Any], sender: str = PSID, recipient: str = OWN, **extra: Any
) -> dict[str, Any]:
    return {
        "sender": {"id": sender},
        "recipient": {"id": recipient},
        "timestamp": 1700000000123,
        "message": {"mid": "m_1", **message},
        **extra,
    }


def changes(
    *values: dict[str, Any], field: str = "feed", kind: str = "page", page: str = OWN
) -> dict[str, Any]:
    return {
        "object": kind,
        "entry": [
            {
                "id": page,
                "time": 1700000000,
                "changes": [{"field": field, "value": v} for v in values],
            }
        ],
    }


def feed_comment(**value: Any) -> dict[str, Any]:
    return {
        "from": {"id": CUSTOMER, "name": "Jane Customer"},
        "item": "comment",
        "verb": "add",
        "post_id": POST,
        "comment_id": COMMENT,
        "parent_id": POST,
        "message": "Where is my refund?",
        "created_time": 1700000000,
    } | value


def ig_comment(**value: Any) -> dict[str, Any]:
    return {
        "id": IG_COMMENT,
        "from": {"id": IGSID, "username": "jane_customer"},
        "media": {"id": MEDIA, "media_product_type": "FEED"},
        "text": "@brand my parcel is late",
    } | value


def only(parsed: list[Parsed]) -> Parsed:
    assert len(parsed) == 1, parsed
    return parsed[0]


def only_message(parsed: list[Parsed]) -> InboundMessage:
    found = only(parsed)
    assert isinstance(found, InboundMessage)
    return found


def only_update(parsed: list[Parsed]) -> StatusUpdate:
    found = only(parsed)
    assert isinstance(found, StatusUpdate)
    return found


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / "meta" / name).read_text())
    return loaded


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


# --- the fake Graph API, served on loopback ---------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[MetaGraph, str]]:
    fake = MetaGraph()
    with serving(fake.app) as base_url:
        yield fake, f"{base_url}/{VERSION}"


@pytest.fixture
def graph(served: tuple[MetaGraph, str]) -> MetaGraph:
    fake, _ = served
    fake.reset()
    return fake


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def api_url(served: tuple[MetaGraph, str]) -> str:
    return served[1]


def connect(
    http: httpx.AsyncClient,
    api_url: str,
    kind: str = "facebook",
    token: str = TOKEN,
    **settings: Any,
) -> Connection:
    return Connection(
        channel_account_id=1,
        kind=kind,
        external_id=IG_ID if kind == "instagram" else PAGE_ID,
        credentials={"access_token": token, "app_secret": APP_SECRET, "verify_token": "vt"},
        settings=settings,
        api_url=api_url,
        http=http,
    )


def reply(text: str = "Thanks, we're on it!", **fields: Any) -> Outgoing:
    values: dict[str, Any] = {
        "key": "outbox-7",
        "text": text,
        "visibility": "private",
        "recipient_id": PSID,
    } | fields
    return Outgoing(**values)


async def refusal(connection: Connection, outgoing: Outgoing) -> SendError:
    with pytest.raises(SendError) as caught:
        await meta.send(connection, outgoing)
    return caught.value


# --- the module as the registry sees it -------------------------------------------------------


def test_the_three_meta_kinds_and_the_parser_are_this_module() -> None:
    for kind in ("facebook", "messenger", "instagram"):
        assert getattr(network_for(kind), "__name__", None) == "allo.channels.meta"
    assert parser_for("meta") is meta.parse


# --- webhook signatures and the subscription handshake ----------------------------------------


SIGNATURES = json.loads((FIXTURES / "signatures" / "signature_vectors.json").read_text())[
    "meta_x_hub_signature"
]


@pytest.mark.parametrize("case", SIGNATURES["cases"], ids=lambda c: c["body_file"])
def test_a_body_signed_with_the_app_secret_is_genuine(case: dict[str, str]) -> None:
    raw = (FIXTURES / case["body_file"]).read_bytes()
    headers = {"x-hub-signature-256": case["X-Hub-Signature-256"]}

    meta.verify(headers, raw, {"app_secret": SIGNATURES["app_secret"]})


def test_a_signature_over_re_encoded_json_is_refused() -> None:
    case = SIGNATURES["cases"][1]
    raw = (FIXTURES / case["body_file"]).read_bytes()
    reencoded = json.dumps(json.loads(raw), ensure_ascii=False).encode()

    with pytest.raises(signatures.SignatureInvalid):
        meta.verify(
            {"x-hub-signature-256": case["X-Hub-Signature-256"]},
            reencoded,
            {"app_secret": SIGNATURES["app_secret"]},
        )


def test_a_body_without_signature_or_with_another_secret_is_refused() -> None:
    case = SIGNATURES["cases"][0]
    raw = (FIXTURES / case["body_file"]).read_bytes()

    with pytest.raises(signatures.SignatureMissing):
        meta.verify({}, raw, {"app_secret": SIGNATURES["app_secret"]})
    with pytest.raises(signatures.SignatureInvalid):
        meta.verify({"x-hub-signature-256": case["X-Hub-Signature-256"]}, raw, {"app_secret": "x"})
    with pytest.raises(signatures.SignatureInvalid):
        meta.verify({"x-hub-signature-256": case["X-Hub-Signature-256"]}, raw, {})


def test_the_subscription_handshake_echoes_the_challenge_as_plain_text() -> None:
    query = {
        "hub.mode": "subscribe",
        "hub.challenge": "1158201444",
        "hub.verify_token": "meatyhamhock",
    }

    assert meta.handshake(query, {"verify_token": "meatyhamhock"}) == ("1158201444", "text/plain")


@pytest.mark.parametrize(
    "query",
    [
        {"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "guess"},
        {"hub.mode": "unsubscribe", "hub.challenge": "1", "hub.verify_token": "meatyhamhock"},
        {"hub.challenge": "1"},
    ],
)
def test_a_handshake_without_our_verify_token_is_refused(query: dict[str, str]) -> None:
    with pytest.raises(signatures.SignatureInvalid):
        meta.handshake(query, {"verify_token": "meatyhamhock"})


# --- every recorded payload -------------------------------------------------------------------


# What each fixture becomes: "in"/"out" messages and status update kinds, in order.
EXPECTED = {
    "constructed_fb_feed_comment_add.json": ("in",),
    "constructed_ig_comment.json": ("in",),
    "cw_fb_messaging_delivery.json": ("delivered",),
    "cw_fb_messaging_read.json": ("read",),
    "cw_fb_messaging_text.json": ("in",),
    "cw_ig_attachment_share.json": ("in",),
    "cw_ig_dashboard_test_event_changes.json": ("in",),
    "cw_ig_message_standby.json": ("in",),
    "cw_ig_message_text.json": ("in",),
    "cw_ig_message_unsend.json": ("deleted",),
    "cw_ig_messaging_seen.json": ("read",),
    "cw_ig_story_mention.json": ("in",),
    "cw_ig_story_mention_echo.json": ("out",),
    "cw_ig_story_reply.json": ("in",),
    "fbm_delivery.json": ("delivered", "delivered"),
    "fbm_feed_change_status_post.json": (),
    "fbm_message_echo.json": ("out",),
    "fbm_message_with_quick_reply_and_image.json": ("in",),
    "fbm_postback_with_referral.json": ("in",),
    "fbm_reaction.json": ("reaction",),
    "fbm_read.json": ("read",),
}


def recorded(name: str) -> tuple[dict[str, Any], str]:
    """A fixture as Meta delivers it, and the account it is for: bare messaging events and
    changes (as the libraries' specs keep them) go into the webhook envelope."""
    body = fixture(name)
    if "object" in body:
        return body, str(body["entry"][0]["id"])
    if "field" in body:
        page = str(body["value"]["post_id"]).split("_")[0]
        return {"object": "page", "entry": [{"id": page, "time": 1, "changes": [body]}]}, page
    return messaging(body), OWN


def shape(parsed: list[Parsed]) -> tuple[str, ...]:
    return tuple(p.direction if isinstance(p, InboundMessage) else p.kind for p in parsed)


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "meta").glob("*.json")))
def test_every_recorded_payload_parses_into_what_it_says(name: str) -> None:
    body, own = recorded(name)

    parsed = parse(body, own)

    assert name in EXPECTED, f"{name}: say what it should become"
    assert shape(parsed) == EXPECTED[name]
    for message in parsed:
        if isinstance(message, InboundMessage):
            assert message.sent_at.tzinfo is not None
            json.dumps(message.attachments)


# --- Messenger and Instagram messages ---------------------------------------------------------


def test_a_messenger_text_comes_from_the_customer_it_names() -> None:
    body = messaging(fixture("cw_fb_messaging_text.json"), page="117172741761305")

    message = only_message(parse(body, "117172741761305"))

    assert message.external_id.startswith("m_KXGKDUpO6x")
    assert message.contact == Author(platform_id="3383290475046708")
    assert (message.text, message.direction, message.visibility) == (
        "facebook message",
        "in",
        "private",
    )
    assert message.sent_at == datetime.fromtimestamp(1700000000, UTC)  # the entry's time


def test_a_quick_reply_and_an_image_are_kept_as_attachments() -> None:
    message = only_message(parse(messaging(fixture("fbm_message_with_quick_reply_and_image.json"))))

    assert message.text == "Hello, bot!"
    assert message.sent_at == ms(1457764197627)
    assert message.attachments == (
        {"type": "image", "url": "https://www.example.com/1.jpg"},
        {"type": "quick_reply", "payload": "Hi, I am a quick reply!"},
    )


def test_an_echo_is_the_brands_message_to_the_customer_with_its_outbox_key() -> None:
    event = message_event(
        {"is_echo": True, "app_id": 1517776481860111, "metadata": "outbox-7", "text": "On it"},
        sender=OWN,
        recipient=PSID,
    )

    message = only_message(parse(messaging(event)))

    assert (message.direction, message.contact) == ("out", Author(platform_id=PSID))
    assert message.outbox_key == "outbox-7"
    assert message.author_name == "app 1517776481860111"


def test_an_echo_without_metadata_was_sent_by_another_tool() -> None:
    message = only_message(parse(messaging(fixture("fbm_message_echo.json"))))

    assert message.direction == "out"
    assert message.outbox_key is None
    assert message.author_name == "app 184719329217930000"


def test_a_message_from_the_accounts_own_id_is_the_brands_even_without_is_echo() -> None:
    message = only_message(
        parse(messaging(message_event({"text": "hi"}, sender=OWN, recipient=PSID)))
    )

    assert (message.direction, message.contact) == ("out", Author(platform_id=PSID))


def test_a_reply_to_a_message_names_it() -> None:
    event = message_event({"text": "this one", "reply_to": {"mid": "m_earlier"}})

    assert only_message(parse(messaging(event))).reply_to_external_id == "m_earlier"


def test_a_sticker_a_location_and_a_shared_link_are_kept() -> None:
    event = message_event(
        {
            "sticker_id": 369239263222822,
            "attachments": [
                {
                    "type": "image",
                    "payload": {"url": "https://cdn.example/s.png", "sticker_id": 369239263222822},
                },
                {"type": "location", "payload": {"coordinates": {"lat": 48.85, "long": 2.35}}},
                {
                    "type": "fallback",
                    "title": "Our shop",
                    "url": "https://shop.example/x",
                    "payload": None,
                },
            ],
        }
    )

    message = only_message(parse(messaging(event)))

    assert message.text == ""
    assert message.attachments == (
        {"type": "sticker", "url": "https://cdn.example/s.png", "sticker_id": 369239263222822},
        {
            "type": "location",
            "latitude": 48.85,
            "longitude": 2.35,
            "payload": {"coordinates": {"lat": 48.85, "long": 2.35}},
        },
        {"type": "fallback", "url": "https://shop.example/x", "title": "Our shop"},
    )


def test_a_message_with_nothing_we_know_is_kept_as_unsupported() -> None:
    event = message_event({"is_unsupported": True})

    message = only_message(parse(messaging(event, kind="instagram")))

    assert message.text == "[unsupported: message]"
    assert message.attachments == (
        {"type": "unsupported", "raw": {"mid": "m_1", "is_unsupported": True}},
    )


def test_an_unknown_event_is_kept_as_unsupported_and_thread_control_is_not_a_message() -> None:
    unknown = {
        "sender": {"id": PSID},
        "recipient": {"id": OWN},
        "timestamp": 1700000000000,
        "game_play": {"score": 3},
    }
    handover = {
        "sender": {"id": PSID},
        "recipient": {"id": OWN},
        "timestamp": 1,
        "pass_thread_control": {},
    }

    message = only_message(parse(messaging(unknown, handover)))

    assert message.text == "[unsupported: game_play]"
    assert message.external_id == f"game_play:{PSID}:1700000000000"
    assert message.attachments[0]["raw"]["game_play"] == {"score": 3}


def test_a_postback_says_the_buttons_title_and_keeps_its_payload_and_referral() -> None:
    event = {
        "sender": {"id": PSID},
        "recipient": {"id": OWN},
        "timestamp": 1700000000000,
        "postback": {
            "mid": "m_pb",
            "title": "Talk to an agent",
            "payload": "AGENT",
            "referral": {"ref": "ad-9", "source": "ADS", "type": "OPEN_THREAD"},
        },
    }

    message = only_message(parse(messaging(event)))

    assert (message.external_id, message.text, message.contact) == (
        "m_pb",
        "Talk to an agent",
        Author(PSID),
    )
    assert message.attachments == (
        {"type": "postback", "payload": "AGENT", "title": "Talk to an agent"},
        {"type": "referral", "referral": {"ref": "ad-9", "source": "ADS", "type": "OPEN_THREAD"}},
    )


def test_a_postback_without_mid_gets_an_id_that_a_redelivery_repeats() -> None:
    body = messaging(fixture("fbm_postback_with_referral.json"))

    first, again = only_message(parse(body)), only_message(parse(body))

    assert first.external_id == again.external_id == "postback:3:1457764197627"
    assert first.attachments[0] == {"type": "postback", "payload": "USER_DEFINED_PAYLOAD"}
    assert first.attachments[1]["referral"]["ref"] == "my-ref-value"


def test_a_referral_alone_is_no_message_but_a_message_keeps_its_referral() -> None:
    alone = {
        "sender": {"id": PSID},
        "recipient": {"id": OWN},
        "timestamp": 1,
        "referral": {"ref": "x", "source": "SHORTLINK"},
    }
    with_message = message_event({"text": "hi"}, referral={"ref": "ad", "source": "ADS"})

    message = only_message(parse(messaging(alone, with_message)))

    assert message.attachments == (
        {"type": "referral", "referral": {"ref": "ad", "source": "ADS"}},
    )


def test_a_reaction_names_the_message_and_the_emoji_and_an_unreaction_takes_it_back() -> None:
    react = {
        "sender": {"id": PSID},
        "recipient": {"id": OWN},
        "timestamp": 1700000000000,
        "reaction": {"mid": "m_9", "action": "react", "reaction": "love", "emoji": "❤️"},
    }
    unreact = {
        "sender": {"id": PSID},
        "recipient": {"id": OWN},
        "timestamp": 1700000000001,
        "reaction": {"mid": "m_9", "action": "unreact"},
    }

    first, second = parse(messaging(react, unreact))

    assert first == StatusUpdate(
        "reaction", at=ms(1700000000000), external_id="m_9", recipient_id=PSID, reaction="❤️"
    )
    assert isinstance(second, StatusUpdate)
    assert (second.kind, second.external_id, second.reaction) == ("reaction", "m_9", None)


def test_a_reaction_named_without_its_emoji_gets_the_emoji() -> None:
    update = only_update(
        parse(
            messaging(
                {
                    **fixture("fbm_reaction.json"),
                    "reaction": {"action": "react", "reaction": "like"},
                }
            )
        )
    )

    assert update.reaction == "👍"


def test_a_delivery_names_each_message_delivered() -> None:
    updates = parse(messaging(fixture("fbm_delivery.json")))

    assert updates == [
        StatusUpdate("delivered", at=ms(1458668856253), external_id=mid, recipient_id="3")
        for mid in ("mid.1457764197618:41d102a3e1ae206a38", "mid.1458668856218:ed81099e15d3f4f233")
    ]


def test_a_delivery_with_only_a_watermark_covers_everything_sent_before_it() -> None:
    update = only_update(parse(messaging(fixture("cw_fb_messaging_delivery.json"))))

    assert update == StatusUpdate(
        "delivered", at=ms(1648581633369), recipient_id="3383290475046708"
    )


def test_a_messenger_read_is_up_to_its_watermark_for_that_customer() -> None:
    update = only_update(parse(messaging(fixture("fbm_read.json"))))

    assert update == StatusUpdate("read", at=ms(1458668856253), recipient_id="3")


def test_an_instagram_seen_names_the_message_read() -> None:
    body = fixture("cw_ig_messaging_seen.json")

    update = only_update(parse(body, "instagram-message-id-123"))

    assert (update.kind, update.external_id, update.recipient_id) == (
        "read",
        "message-id-1",
        "Sender-id-1",
    )
    assert update.at == datetime(2021, 9, 8, 6, 34, 4, tzinfo=UTC)


def test_an_unsent_instagram_message_is_deleted() -> None:
    update = only_update(parse(fixture("cw_ig_message_unsend.json"), "instagram-message-id-123"))

    assert (update.kind, update.external_id) == ("deleted", "message-id-to-delete")


def test_a_story_mention_keeps_the_story() -> None:
    message = only_message(parse(fixture("cw_ig_story_mention.json"), "instagram-message-id-1234"))

    assert (message.direction, message.text) == ("in", "")
    assert message.attachments == (
        {"type": "story_mention", "url": "https://www.example.com/test.jpeg"},
    )


def test_a_story_reply_keeps_the_words_and_the_story_answered() -> None:
    message = only_message(parse(fixture("cw_ig_story_reply.json"), "instagram-message-id-123"))

    assert message.text == "This is the story reply"
    assert message.reply_to_external_id is None
    assert message.attachments == (
        {
            "type": "story",
            "url": "https://chatwoot-assets.local/sample.png",
            "story_id": "chatwoot-app-user-id-1",
        },
    )


def test_a_shared_post_is_kept_with_its_link() -> None:
    message = only_message(
        parse(fixture("cw_ig_attachment_share.json"), "instagram-message-id-1234")
    )

    assert message.attachments == ({"type": "share", "url": "https://www.example.com/test.jpeg"},)


def test_a_message_on_standby_is_parsed_like_any_other() -> None:
    message = only_message(parse(fixture("cw_ig_message_standby.json"), "instagram-message-id-123"))

    assert message.text.startswith("This is the first standby message")
    assert message.contact == Author("Sender-id-1")


def test_an_edited_message_is_a_new_message_answering_the_original() -> None:
    edit = {
        "sender": {"id": PSID},
        "recipient": {"id": OWN},
        "timestamp": 1700000000000,
        "message_edit": {"mid": "m_1", "text": "Order 1234, not 1243", "num_edit": 1},
    }

    first, again = only_message(parse(messaging(edit))), only_message(parse(messaging(edit)))

    assert first.reply_to_external_id == "m_1"
    assert first.text == "Order 1234, not 1243"
    assert first.external_id.startswith("m_1:edited:")
    assert again.external_id == first.external_id


def test_the_dashboards_test_event_is_not_for_a_real_account() -> None:
    assert parse(fixture("cw_ig_dashboard_test_event_changes.json"), IG_ID) == []


def test_events_for_another_page_are_left_to_it() -> None:
    body = messaging(message_event({"text": "mine"}))
    body["entry"].append(
        {"id": "999", "time": 1, "messaging": [message_event({"mid": "m_other", "text": "theirs"})]}
    )

    assert [m.text for m in parse(body) if isinstance(m, InboundMessage)] == ["mine"]
    assert parse(body, own="someone-else") == []


# --- the Page feed ----------------------------------------------------------------------------


def test_a_comment_on_a_post_is_a_public_message_in_the_posts_thread() -> None:
    message = only_message(parse(fixture("constructed_fb_feed_comment_add.json")))

    assert message.external_id == COMMENT
    assert (message.visibility, message.direction, message.thread_key) == ("public", "in", POST)
    assert message.reply_to_external_id is None
    assert message.contact == Author(platform_id=CUSTOMER, display_name="Jane Customer")
    assert message.sent_at == datetime.fromtimestamp(1700000000, UTC)


def test_a_reply_to_a_comment_names_the_comment_it_answers() -> None:
    message = only_message(parse(changes(feed_comment(comment_id="c_2", parent_id=COMMENT))))

    assert (message.thread_key, message.reply_to_external_id) == (POST, COMMENT)


def test_the_pages_own_comment_is_the_brands_answer() -> None:
    value = feed_comment(
        **{"from": {"id": OWN, "name": "Allo Demo"}}, comment_id="c_3", parent_id=COMMENT
    )

    message = only_message(parse(changes(value)))

    assert (message.direction, message.contact, message.reply_to_external_id) == (
        "out",
        None,
        COMMENT,
    )


def test_a_visitor_post_starts_its_own_thread() -> None:
    value = {
        "from": {"id": CUSTOMER, "name": "Jane"},
        "item": "status",
        "verb": "add",
        "post_id": f"{OWN}_55",
        "message": "Your shop was closed today",
        "created_time": 1700000000,
    }

    message = only_message(parse(changes(value)))

    assert (message.external_id, message.thread_key, message.direction) == (
        f"{OWN}_55",
        f"{OWN}_55",
        "in",
    )


def test_a_photo_posted_by_a_visitor_keeps_the_photo() -> None:
    value = {
        "from": {"id": CUSTOMER},
        "item": "photo",
        "verb": "add",
        "post_id": f"{OWN}_56",
        "link": "https://scontent.example/p.jpg",
        "photo_id": "56",
        "created_time": 1700000000,
    }

    assert only_message(parse(changes(value))).attachments == (
        {"type": "photo", "url": "https://scontent.example/p.jpg"},
    )


def test_the_pages_own_post_is_a_broadcast_not_a_conversation() -> None:
    body, own = recorded("fbm_feed_change_status_post.json")

    assert parse(body, own) == []


def test_a_removed_comment_is_deleted() -> None:
    update = only_update(parse(changes(feed_comment(verb="remove"))))

    assert (update.kind, update.external_id) == ("deleted", COMMENT)


def test_an_edited_comment_with_new_words_is_a_new_message_answering_the_original() -> None:
    edited = parse(changes(feed_comment(verb="edited", message="Where is my refund??")))
    same_again = parse(changes(feed_comment(verb="edited", message="Where is my refund??")))
    reworded = parse(changes(feed_comment(verb="edited", message="Refund arrived, thanks")))

    message = only_message(edited)
    assert (message.reply_to_external_id, message.thread_key) == (COMMENT, POST)
    assert message.external_id != COMMENT
    assert only_message(same_again).external_id == message.external_id
    assert only_message(reworded).external_id != message.external_id


def test_likes_reactions_and_hidden_comments_are_not_messages() -> None:
    body = changes(
        {
            "item": "reaction",
            "verb": "add",
            "post_id": POST,
            "reaction_type": "like",
            "from": {"id": CUSTOMER},
        },
        {"item": "like", "verb": "add", "post_id": POST},
        feed_comment(verb="hide"),
    )

    assert parse(body) == []


def test_an_older_feed_change_names_its_author_by_sender_id() -> None:
    value = {k: v for k, v in feed_comment().items() if k != "from"} | {
        "sender_id": 1914154345481707,
        "sender_name": "Carol Kim",
    }

    assert only_message(parse(changes(value))).contact == Author(
        "1914154345481707", display_name="Carol Kim"
    )


# --- Instagram comments and mentions ----------------------------------------------------------


def test_an_instagram_comment_is_public_in_its_medias_thread() -> None:
    message = only_message(parse(fixture("constructed_ig_comment.json"), "17841400000000000"))

    assert (message.external_id, message.thread_key, message.visibility) == (
        IG_COMMENT,
        MEDIA,
        "public",
    )
    assert message.contact == Author(IGSID, handle="jane_customer", display_name="jane_customer")
    assert message.reply_to_external_id is None
    assert message.sent_at == datetime.fromtimestamp(1700000000, UTC)


def test_an_instagram_reply_names_its_parent_and_the_accounts_own_is_the_brands() -> None:
    body = changes(
        ig_comment(id="c_r", parent_id=IG_COMMENT),
        ig_comment(
            id="c_own", parent_id=IG_COMMENT, **{"from": {"id": IG_ID, "username": "allo_demo"}}
        ),
        field="comments",
        kind="instagram",
        page=IG_ID,
    )

    customer, brand = parse(body, IG_ID)

    assert isinstance(customer, InboundMessage) and isinstance(brand, InboundMessage)
    assert (customer.reply_to_external_id, customer.direction) == (IG_COMMENT, "in")
    assert (brand.direction, brand.contact, brand.reply_to_external_id) == ("out", None, IG_COMMENT)


def test_a_live_comment_is_a_comment() -> None:
    body = changes(ig_comment(), field="live_comments", kind="instagram", page=IG_ID)

    assert only_message(parse(body, IG_ID)).external_id == IG_COMMENT


def test_a_mention_keeps_the_ids_instagram_gives_without_the_words() -> None:
    body = changes(
        {"media_id": MEDIA, "comment_id": "c_m"}, field="mentions", kind="instagram", page=IG_ID
    )

    message = only_message(parse(body, IG_ID))

    assert (message.external_id, message.thread_key, message.contact) == ("c_m", MEDIA, None)
    assert message.attachments == ({"type": "mention", "ig_media_id": MEDIA, "comment_id": "c_m"},)


# --- what a customer writes, kept as written --------------------------------------------------


def test_markup_in_a_message_stays_plain_text() -> None:
    text = '<script>alert(1)</script><img src=x onerror="steal()">'

    message = only_message(parse(messaging(message_event({"text": text}))))

    assert (message.text, message.html) == (text, None)


@pytest.mark.parametrize(
    "text",
    [
        "Commande n°42 — où est-elle ? 😤",
        "مرحبا، أين طلبي؟",
        "e\u0301te\u0301 👩‍👩‍👧‍👦 🇫🇷",
        "\u200bzero\u200dwidth\ufeff",
    ],
)
def test_unicode_is_kept_exactly(text: str) -> None:
    assert only_message(parse(messaging(message_event({"text": text})))).text == text


def test_a_nul_character_becomes_a_replacement_character() -> None:
    message = only_message(parse(changes(feed_comment(message="a\x00b"))))

    assert message.text == "a\ufffdb"


def test_non_ascii_sent_escaped_is_read_the_same() -> None:
    escaped = json.dumps(messaging(message_event({"text": "café 😀"})), ensure_ascii=True)
    raw = escaped.encode()

    assert b"\\u00e9" in raw and b"\\ud83d\\ude00" in raw
    assert only_message(parse(raw)).text == "café 😀"


def test_an_oversized_message_and_a_large_batch_are_kept_whole() -> None:
    long_text = "ab" * 50_000
    events = [message_event({"mid": f"m_{n}", "text": long_text}) for n in range(200)]

    parsed = parse(messaging(*events))

    assert len(parsed) == 200
    assert all(isinstance(m, InboundMessage) and m.text == long_text for m in parsed)


def test_the_same_delivery_twice_gives_the_same_ids() -> None:
    body = fixture("constructed_fb_feed_comment_add.json")

    assert parse(body) == parse(body)


# --- malformed payloads -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"", "not JSON"),
        (b'{"a": "lone \\ud800 surrogate"}', "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"{} trailing", "not JSON"),
        (b"[1, 2]", "body: expected an object"),
        ({"object": "whatsapp_business_account", "entry": []}, "object"),
        ({"object": "page", "entry": {"id": OWN}}, "entry: expected a list"),
        ({"object": "page", "entry": ["x"]}, "entry[0]: expected an object"),
        ({"object": "page", "entry": [{"time": 1}]}, "entry[0].id: missing"),
        (
            messaging({"recipient": {"id": OWN}, "message": {"mid": "m"}}),
            "sender: expected an object",
        ),
        (messaging({"sender": {}, "message": {"mid": "m"}}), "sender.id: missing"),
        (messaging(message_event({"mid": None, "text": "x"})), "message.mid: missing"),
        (messaging(message_event({"text": 42})), "message.text: expected text"),
        (messaging(message_event({"text": "x"}, timestamp="yesterday")), "timestamp: not a time"),
        (messaging(message_event({"text": "x"}, timestamp=True)), "timestamp: not a time"),
        (messaging(message_event({"attachments": "x"})), "attachments: expected a list"),
        (
            messaging(message_event({"attachments": [{"type": "image", "payload": {"url": 5}}]})),
            "url: expected text",
        ),
        (messaging({"sender": {"id": PSID}, "read": {}}), "neither mid nor watermark"),
        (changes(feed_comment(post_id=None)), "post_id: missing"),
        (changes(feed_comment(comment_id=["x"])), "comment_id: expected an id"),
        (changes(ig_comment(id=None), field="comments", kind="instagram"), "value.id: missing"),
        (
            {
                "object": "page",
                "entry": [{"id": OWN, "changes": [{"field": "feed", "value": "x"}]}],
            },
            "value: expected an object",
        ),
        ({"data": [{"message": "no id"}]}, "data[0].id: missing"),
    ],
)
def test_a_malformed_payload_is_a_parse_error_that_names_the_field(
    body: dict[str, Any] | bytes, says: str
) -> None:
    assert says in refused(body)


# --- sending ----------------------------------------------------------------------------------


async def test_a_public_reply_on_facebook_is_a_comment_on_the_comment_answered(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(POST)
    graph.add_comment(COMMENT, POST, author_id=CUSTOMER)

    sent = await meta.send(
        connect(http, api_url),
        reply(
            visibility="public", recipient_id=None, reply_to_external_id=COMMENT, thread_key=POST
        ),
    )

    [request] = graph.requests_to(f"{COMMENT}/comments", "POST")
    assert request.form == {"message": "Thanks, we're on it!"}
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert "access_token" not in request.query
    assert graph.comments[sent.external_id].parent_id == COMMENT
    assert sent.recipient_id is None


async def test_a_public_reply_without_a_comment_answered_comments_on_the_post(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(POST)

    sent = await meta.send(
        connect(http, api_url), reply(visibility="public", recipient_id=None, thread_key=POST)
    )

    assert graph.requests_to(f"{POST}/comments", "POST")
    assert graph.comments[sent.external_id].post_id == POST


async def test_a_public_reply_on_instagram_answers_on_the_comments_replies(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(MEDIA, platform="instagram", author_id=IG_ID)
    graph.add_comment(IG_COMMENT, MEDIA, author_id=IGSID, author_name="jane_customer")

    sent = await meta.send(
        connect(http, api_url, "instagram"),
        reply(
            visibility="public",
            recipient_id=None,
            reply_to_external_id=IG_COMMENT,
            thread_key=MEDIA,
        ),
    )

    [request] = graph.requests_to(f"{IG_COMMENT}/replies", "POST")
    assert request.form == {"message": "Thanks, we're on it!"}
    assert graph.comments[sent.external_id].author_id == IG_ID


async def test_a_reply_to_an_edited_comment_answers_the_comment(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(POST)
    graph.add_comment(COMMENT, POST, author_id=CUSTOMER)
    edit = only_message(parse(changes(feed_comment(verb="edited", message="Refund??"))))

    await meta.send(
        connect(http, api_url),
        reply(visibility="public", recipient_id=None, reply_to_external_id=edit.external_id),
    )

    assert graph.requests_to(f"{COMMENT}/comments", "POST")


async def test_a_comment_on_an_instagram_post_itself_goes_to_the_medias_comments(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(MEDIA, platform="instagram", author_id=IG_ID)

    await meta.send(
        connect(http, api_url, "instagram"),
        reply(visibility="public", recipient_id=None, thread_key=MEDIA),
    )

    assert graph.requests_to(f"{MEDIA}/comments", "POST")


async def test_a_private_reply_to_a_comment_reaches_the_commenter_and_names_their_psid(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(POST)
    graph.add_comment(COMMENT, POST, author_id=CUSTOMER, psid=PSID)

    sent = await meta.send(
        connect(http, api_url), reply(recipient_id=None, private_reply_to=COMMENT)
    )

    [request] = graph.requests_to(f"{PAGE_ID}/messages", "POST")
    assert request.json == {
        "recipient": {"comment_id": COMMENT},
        "message": {"text": "Thanks, we're on it!", "metadata": "outbox-7"},
    }
    assert sent.recipient_id == PSID
    assert sent.external_id.startswith("m_")


async def test_a_second_private_reply_to_the_same_comment_is_refused_as_already_replied(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(POST)
    graph.add_comment(COMMENT, POST, author_id=CUSTOMER)
    connection = connect(http, api_url)
    await meta.send(connection, reply(recipient_id=None, private_reply_to=COMMENT))

    error = await refusal(
        connection, reply(text="Again", recipient_id=None, private_reply_to=COMMENT)
    )

    assert (error.reason, error.retryable) == ("already_replied", False)
    assert "Activity already replied to" in error.detail


async def test_a_private_reply_after_seven_days_is_refused_as_window_closed(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(POST)
    graph.add_comment(COMMENT, POST, author_id=CUSTOMER, created=graph.now() - timedelta(days=8))

    error = await refusal(
        connect(http, api_url), reply(recipient_id=None, private_reply_to=COMMENT)
    )

    assert (error.reason, error.retryable) == ("window_closed", False)


async def test_a_private_reply_to_a_deleted_comment_is_refused_as_deleted(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    error = await refusal(
        connect(http, api_url), reply(recipient_id=None, private_reply_to="gone_1")
    )

    assert (error.reason, error.retryable) == ("deleted", False)


async def test_an_instagram_private_reply_leaves_through_the_page_and_names_the_igsid(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(MEDIA, platform="instagram", author_id=IG_ID)
    graph.add_comment(IG_COMMENT, MEDIA, author_id=IGSID)

    with_page = await meta.send(
        connect(http, api_url, "instagram", page_id=PAGE_ID),
        reply(recipient_id=None, private_reply_to=IG_COMMENT),
    )

    assert graph.requests_to(f"{PAGE_ID}/messages", "POST")
    assert with_page.recipient_id == IGSID


async def test_without_a_page_id_instagram_messages_leave_through_me(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.customer_wrote(IGSID, platform="instagram")

    await meta.send(connect(http, api_url, "instagram"), reply(recipient_id=IGSID))

    assert graph.requests_to("me/messages", "POST")


async def test_a_direct_message_in_the_window_is_a_response_carrying_the_outbox_key(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.customer_wrote(PSID, graph.now() - timedelta(hours=2))

    sent = await meta.send(connect(http, api_url), reply())

    [request] = graph.requests_to(f"{PAGE_ID}/messages", "POST")
    assert request.json == {
        "recipient": {"id": PSID},
        "messaging_type": "RESPONSE",
        "message": {"text": "Thanks, we're on it!", "metadata": "outbox-7"},
    }
    assert (sent.recipient_id, sent.external_id) == (PSID, graph.messages[-1].id)


async def test_a_human_agent_answers_after_the_window_with_the_tag(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.customer_wrote(PSID, graph.now() - timedelta(days=3))

    await meta.send(connect(http, api_url), reply(tag="HUMAN_AGENT"))

    [request] = graph.requests_to(f"{PAGE_ID}/messages", "POST")
    assert request.json["messaging_type"] == "MESSAGE_TAG"
    assert request.json["tag"] == "HUMAN_AGENT"
    assert request.json["message"]["metadata"] == "outbox-7"


@pytest.mark.parametrize(
    ("last_wrote", "tag"),
    [(timedelta(hours=25), None), (timedelta(days=8), "HUMAN_AGENT")],
    ids=["response-after-24-hours", "human-agent-after-7-days"],
)
async def test_a_message_after_its_window_is_refused_as_window_closed(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str, last_wrote: timedelta, tag: str | None
) -> None:
    graph.customer_wrote(PSID, graph.now() - last_wrote)

    error = await refusal(connect(http, api_url), reply(tag=tag))

    assert (error.reason, error.retryable) == ("window_closed", False)
    assert error.detail.startswith("(#10) This message is sent outside of allowed window")


async def test_a_customer_who_blocked_the_page_or_is_unknown_is_refused_as_blocked(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.customer_wrote(PSID)
    graph.block(PSID)
    connection = connect(http, api_url)

    blocked = await refusal(connection, reply())
    unknown = await refusal(connection, reply(recipient_id="404"))

    assert (blocked.reason, unknown.reason) == ("blocked", "blocked")
    assert "isn't available" in blocked.detail


async def test_an_instagram_message_takes_the_same_shape(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.customer_wrote(IGSID, platform="instagram")

    sent = await meta.send(
        connect(http, api_url, "instagram", page_id=PAGE_ID), reply(recipient_id=IGSID)
    )

    [request] = graph.requests_to(f"{PAGE_ID}/messages", "POST")
    assert request.json["recipient"] == {"id": IGSID}
    assert sent.recipient_id == IGSID


@pytest.mark.parametrize(
    ("kind", "fields", "text", "says"),
    [
        ("facebook", {}, "x" * 2001, "2,000 characters"),
        ("messenger", {}, "é" * 2001, "2,000 characters"),
        ("instagram", {"recipient_id": IGSID}, "€" * 334, "1,000 bytes"),
        ("facebook", {"visibility": "public", "thread_key": POST}, "x" * 8001, "8,000 characters"),
        ("facebook", {}, "   ", "empty"),
        ("facebook", {"recipient_id": None}, "hi", "customer's id"),
        ("facebook", {"visibility": "public"}, "hi", "comment or post"),
    ],
)
async def test_a_message_the_network_would_refuse_is_invalid_before_any_call(
    graph: MetaGraph,
    http: httpx.AsyncClient,
    api_url: str,
    kind: str,
    fields: dict[str, Any],
    text: str,
    says: str,
) -> None:
    error = await refusal(connect(http, api_url, kind), reply(text, **fields))

    assert (error.reason, error.retryable) == ("invalid", False)
    assert says in error.detail
    assert graph.requests == []


async def test_a_message_at_the_limit_is_sent(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.customer_wrote(PSID)
    graph.customer_wrote(IGSID, platform="instagram")

    await meta.send(connect(http, api_url), reply("x" * 2000))
    await meta.send(connect(http, api_url, "instagram"), reply("€" * 333, recipient_id=IGSID))

    assert len(graph.requests_to("/messages")) == 2


async def test_an_id_cannot_reach_another_graph_path(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(POST)

    error = await refusal(
        connect(http, api_url), reply(visibility="public", reply_to_external_id="../me")
    )

    assert error.reason == "deleted"
    # One segment under the version: unescaped, "/v21.0/../me/comments" would be "/me/comments".
    assert [r.path for r in graph.requests] == ["../me/comments"]


@pytest.mark.parametrize(
    ("status", "error", "headers", "reason", "retryable", "retry_after"),
    [
        (
            400,
            graph_error(190, "Error validating access token: Session has expired", 463),
            {},
            "unauthorized",
            False,
            None,
        ),
        (
            403,
            graph_error(10, "(#10) Application does not have permission for this action"),
            {},
            "unauthorized",
            False,
            None,
        ),
        (
            403,
            graph_error(200, "(#200) Requires pages_messaging permission"),
            {},
            "unauthorized",
            False,
            None,
        ),
        (
            400,
            graph_error(4, "(#4) Application request limit reached"),
            {"Retry-After": "30"},
            "rate_limited",
            True,
            30.0,
        ),
        (400, graph_error(17, "(#17) User request limit reached"), {}, "rate_limited", True, None),
        (
            400,
            graph_error(32, "(#32) Page request limit reached"),
            {
                "X-Business-Use-Case-Usage": json.dumps(
                    {
                        PAGE_ID: [
                            {
                                "type": "pages",
                                "call_count": 100,
                                "estimated_time_to_regain_access": 5,
                            }
                        ]
                    }
                )
            },
            "rate_limited",
            True,
            300.0,
        ),
        (
            400,
            graph_error(613, "(#613) Calls to this api have exceeded the rate limit."),
            {},
            "rate_limited",
            True,
            None,
        ),
        (
            400,
            graph_error(80006, "(#80006) There have been too many messenger api calls"),
            {},
            "rate_limited",
            True,
            None,
        ),
        (500, graph_error(1, "An unknown error occurred"), {}, "unavailable", True, None),
        (
            500,
            graph_error(2, "An unexpected error has occurred. Please retry your request later."),
            {},
            "unavailable",
            True,
            None,
        ),
        (
            400,
            graph_error(551, "This person isn't available right now.", 1545041),
            {},
            "blocked",
            False,
            None,
        ),
        (
            400,
            graph_error(100, "Unsupported post request. Object with ID 'x' does not exist", 33),
            {},
            "deleted",
            False,
            None,
        ),
        (
            400,
            graph_error(10900, "Activity already replied to"),
            {},
            "already_replied",
            False,
            None,
        ),
        (
            400,
            graph_error(10, "(#10) This message is sent outside of allowed window.", 2018278),
            {},
            "window_closed",
            False,
            None,
        ),
        (400, graph_error(100, "(#100) Invalid parameter"), {}, "invalid", False, None),
        (429, {"message": "slow down"}, {}, "rate_limited", True, None),
        (502, {"html": "<h1>Bad gateway</h1>"}, {}, "unavailable", True, None),
        (401, {}, {}, "unauthorized", False, None),
    ],
)
async def test_graph_errors_are_told_as_the_agent_needs_them(
    graph: MetaGraph,
    http: httpx.AsyncClient,
    api_url: str,
    status: int,
    error: dict[str, Any],
    headers: dict[str, str],
    reason: str,
    retryable: bool,
    retry_after: float | None,
) -> None:
    graph.customer_wrote(PSID)
    graph.fail_next(status, error, headers)

    refused = await refusal(connect(http, api_url), reply())

    assert (refused.reason, refused.retryable, refused.retry_after) == (
        reason,
        retryable,
        retry_after,
    )
    assert refused.detail and len(refused.detail) <= 200


async def test_a_network_that_cannot_be_reached_is_unavailable(http: httpx.AsyncClient) -> None:
    connection = connect(http, f"http://127.0.0.1:{free_port()}/{VERSION}")

    refused = await refusal(connection, reply())

    assert (refused.reason, refused.retryable) == ("unavailable", True)


async def test_the_fake_takes_the_token_as_a_parameter_too(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    """What Meta's examples do: the token in the query string."""
    proof = hmac.new(APP_SECRET.encode(), TOKEN.encode(), hashlib.sha256).hexdigest()
    answer = await http.get(
        f"{api_url}/me", params={"access_token": TOKEN, "fields": "id", "appsecret_proof": proof}
    )
    wrong = await http.get(f"{api_url}/me", params={"access_token": "stolen"})

    assert answer.json() == {"id": PAGE_ID}
    assert wrong.json()["error"]["code"] == 190


# --- after an interrupted send ----------------------------------------------------------------


async def test_an_interrupted_message_that_arrived_is_found_by_its_words(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.customer_wrote(PSID, text="Thanks, we're on it!")
    connection = connect(http, api_url)
    outgoing = reply(sent_at=graph.now())
    sent = await meta.send(connection, outgoing)

    found = await meta.find_sent(connection, outgoing)

    assert (found.external_id, found.certain) == (sent.external_id, True)
    [request] = graph.requests_to(f"{PAGE_ID}/conversations")
    assert request.query["user_id"] == PSID
    assert request.query["fields"] == "messages.limit(20){id,message,created_time,from}"
    assert "platform" not in request.query


async def test_an_interrupted_message_that_never_arrived_is_certainly_not_sent(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.customer_wrote(PSID, text="Thanks, we're on it!")  # the customer's words, not ours
    connection = connect(http, api_url)
    await meta.send(connection, reply(sent_at=graph.now() - timedelta(hours=1)))
    graph.messages[-1].created = graph.now() - timedelta(hours=1)

    found = await meta.find_sent(connection, reply(sent_at=graph.now()))

    assert (found.external_id, found.certain) == (None, True)


async def test_an_instagram_message_is_looked_up_among_instagram_conversations(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.customer_wrote(IGSID, platform="instagram")
    connection = connect(http, api_url, "instagram", page_id=PAGE_ID)
    outgoing = reply(recipient_id=IGSID, sent_at=graph.now())
    sent = await meta.send(connection, outgoing)

    found = await meta.find_sent(connection, outgoing)

    assert found.external_id == sent.external_id
    assert graph.requests_to(f"{PAGE_ID}/conversations")[0].query["platform"] == "instagram"


async def test_an_interrupted_public_reply_is_found_among_the_comments(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(POST)
    graph.add_comment(COMMENT, POST, author_id=CUSTOMER, text="Thanks, we're on it!")
    connection = connect(http, api_url)
    outgoing = reply(
        visibility="public",
        recipient_id=None,
        reply_to_external_id=COMMENT,
        thread_key=POST,
        sent_at=graph.now(),
    )
    sent = await meta.send(connection, outgoing)

    found = await meta.find_sent(connection, outgoing)
    elsewhere = await meta.find_sent(
        connection,
        reply(visibility="public", recipient_id=None, thread_key=POST, sent_at=graph.now()),
    )

    assert (found.external_id, found.certain) == (sent.external_id, True)
    assert (elsewhere.external_id, elsewhere.certain) == (None, True)
    assert (
        graph.requests_to(f"{COMMENT}/comments", "GET")[0].query["fields"]
        == "id,message,from,created_time"
    )


async def test_an_interrupted_instagram_reply_is_found_among_the_replies(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(MEDIA, platform="instagram", author_id=IG_ID)
    graph.add_comment(IG_COMMENT, MEDIA, author_id=IGSID)
    connection = connect(http, api_url, "instagram")
    outgoing = reply(
        visibility="public", recipient_id=None, reply_to_external_id=IG_COMMENT, sent_at=graph.now()
    )
    sent = await meta.send(connection, outgoing)

    found = await meta.find_sent(connection, outgoing)

    assert found.external_id == sent.external_id
    assert graph.requests_to(f"{IG_COMMENT}/replies", "GET")


async def test_a_reply_to_a_comment_since_deleted_is_certainly_not_there(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    outgoing = reply(visibility="public", recipient_id=None, reply_to_external_id="gone_1")

    found = await meta.find_sent(connect(http, api_url), outgoing)

    assert (found.external_id, found.certain) == (None, True)


async def test_an_interrupted_private_reply_cannot_be_looked_up(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    found = await meta.find_sent(
        connect(http, api_url), reply(recipient_id=None, private_reply_to=COMMENT)
    )

    assert (found.external_id, found.certain) == (None, False)
    assert graph.requests == []


async def test_a_lookup_that_fails_says_why(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.fail_next(500, graph_error(2, "Service temporarily unavailable"))

    with pytest.raises(SendError) as caught:
        await meta.find_sent(connect(http, api_url), reply(sent_at=graph.now()))

    assert (caught.value.reason, caught.value.retryable) == ("unavailable", True)


# --- polling the feed -------------------------------------------------------------------------


async def test_the_feed_since_the_cursor_comes_back_as_events_that_parse_into_comments(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    start = graph.now() - timedelta(hours=2)
    graph.add_post(POST, created=start + timedelta(minutes=1))
    graph.add_comment(COMMENT, POST, author_id=CUSTOMER, created=start + timedelta(minutes=2))
    graph.add_comment(
        "c_reply", POST, author_id=CUSTOMER, parent_id=COMMENT, created=start + timedelta(minutes=3)
    )
    graph.add_comment(
        "c_page",
        POST,
        author_id=PAGE_ID,
        author_name="Allo Demo",
        parent_id=COMMENT,
        created=start + timedelta(minutes=4),
    )
    graph.add_post(f"{PAGE_ID}_old", created=start - timedelta(hours=1))

    fetched = await meta.fetch(connect(http, api_url), str(int(start.timestamp())))

    [(key, raw)] = fetched.events
    newest = int((start + timedelta(minutes=4)).timestamp())
    assert key.startswith(f"meta:feed:{PAGE_ID}:{newest}:")
    assert fetched.cursor == str(newest)
    parsed = parse(raw)
    assert [
        (m.external_id, m.direction, m.reply_to_external_id)
        for m in parsed
        if isinstance(m, InboundMessage)
    ] == [
        (COMMENT, "in", None),
        ("c_reply", "in", COMMENT),
        ("c_page", "out", COMMENT),
    ]
    assert all(isinstance(m, InboundMessage) and m.thread_key == POST for m in parsed)
    [request] = graph.requests_to(f"{PAGE_ID}/feed")
    assert request.query["since"] == str(int(start.timestamp()))
    assert "comments.filter(stream)" in request.query["fields"]


async def test_a_visitor_post_is_polled_too(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(f"{PAGE_ID}_77", author_id=CUSTOMER, author_name="Jane", text="Closed today?")

    fetched = await meta.fetch(connect(http, api_url), None)

    message = only_message(parse(fetched.events[0][1]))
    assert (message.external_id, message.thread_key, message.text) == (
        f"{PAGE_ID}_77",
        f"{PAGE_ID}_77",
        "Closed today?",
    )


async def test_a_long_feed_comes_page_by_page_without_following_metas_next_address(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    for n in range(30):
        graph.add_post(
            f"{PAGE_ID}_{n}", author_id=CUSTOMER, created=graph.now() - timedelta(minutes=n)
        )

    fetched = await meta.fetch(connect(http, api_url), None)

    assert len(fetched.events) == 2
    assert len({key for key, _ in fetched.events}) == 2
    assert [r.query.get("after") for r in graph.requests_to("/feed")] == [None, "25"]
    assert sum(len(parse(raw)) for _, raw in fetched.events) == 30


async def test_a_first_poll_looks_back_one_day_and_nothing_new_keeps_the_cursor(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(f"{PAGE_ID}_old", author_id=CUSTOMER, created=graph.now() - timedelta(days=2))
    connection = connect(http, api_url)

    first = await meta.fetch(connection, None)
    again = await meta.fetch(connection, first.cursor)

    assert first.events == [] and again.events == []
    assert first.cursor is not None
    assert abs(int(first.cursor) - (graph.now() - timedelta(days=1)).timestamp()) < 60
    assert again.cursor == first.cursor


async def test_instagram_media_comments_and_their_replies_are_polled(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.add_post(MEDIA, platform="instagram", author_id=IG_ID, text="New collection")
    graph.add_comment(IG_COMMENT, MEDIA, author_id=IGSID, author_name="jane_customer")
    graph.add_comment(
        "17900", MEDIA, author_id=IG_ID, author_name="allo_demo", parent_id=IG_COMMENT
    )

    fetched = await meta.fetch(connect(http, api_url, "instagram"), None)

    [(key, raw)] = fetched.events
    assert key.startswith(f"meta:media:{IG_ID}:")
    comment, answer = parse(raw, IG_ID)
    assert isinstance(comment, InboundMessage) and isinstance(answer, InboundMessage)
    assert comment.contact == Author(IGSID, handle="jane_customer", display_name="jane_customer")
    assert (answer.direction, answer.reply_to_external_id, answer.thread_key) == (
        "out",
        IG_COMMENT,
        MEDIA,
    )


async def test_a_messenger_only_page_has_no_feed_to_poll(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    fetched = await meta.fetch(connect(http, api_url, "messenger"), "1700000000")

    assert (fetched.events, fetched.cursor) == ([], "1700000000")
    assert graph.requests == []


async def test_a_poll_that_fails_says_why(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.fail_next(400, graph_error(4, "(#4) Application request limit reached"))

    with pytest.raises(SendError) as caught:
        await meta.fetch(connect(http, api_url), None)

    assert caught.value.reason == "rate_limited"


# --- checking a connection --------------------------------------------------------------------


async def test_a_page_with_its_app_subscribed_is_healthy(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    health = await meta.check(connect(http, api_url, token_expires_at="2099-01-01T00:00:00+00:00"))

    assert (health.ok, health.problems, health.subscribed) == (True, (), True)
    assert health.token_expires_at == datetime(2099, 1, 1, tzinfo=UTC)
    assert health.checked_at is not None
    assert graph.requests_to("me")[0].query["fields"] == "id,name"
    assert graph.requests_to(f"{PAGE_ID}/subscribed_apps")


async def test_a_revoked_token_asks_for_a_reconnection(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    health = await meta.check(connect(http, api_url, token="revoked"))

    assert health.ok is False
    assert "expired or was revoked" in health.problems[0]
    assert health.subscribed is None


async def test_a_missing_permission_is_named(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.fail_next(
        403, graph_error(10, "(#10) Application does not have permission for this action")
    )

    health = await meta.check(connect(http, api_url))

    assert health.problems == (
        "a permission is missing: (#10) Application does not have permission for this action",
    )


async def test_a_page_without_our_app_or_its_fields_is_not_delivering(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.subscribed_apps = []
    unsubscribed = await meta.check(connect(http, api_url))
    graph.subscribed_apps = [{"id": APP_ID, "name": "Allo", "subscribed_fields": ["messages"]}]
    no_feed = await meta.check(connect(http, api_url))
    messenger = await meta.check(connect(http, api_url, "messenger"))
    other_app = await meta.check(connect(http, api_url, app_id="42"))

    assert (unsubscribed.ok, unsubscribed.subscribed) == (False, False)
    assert no_feed.problems == ("webhook fields not subscribed: feed",)
    assert messenger.ok is True
    assert other_app.subscribed is False


async def test_a_token_of_another_page_is_a_problem(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    graph.me = {"id": "777", "name": "Someone Else"}
    graph.subscribed_apps = []

    health = await meta.check(connect(http, api_url))

    assert f"not Page {PAGE_ID}'s" in health.problems[0]


async def test_an_instagram_account_must_be_the_pages(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    healthy = await meta.check(connect(http, api_url, "instagram", page_id=PAGE_ID))
    graph.me = {"id": PAGE_ID, "name": "Allo Demo"}
    unlinked = await meta.check(connect(http, api_url, "instagram"))

    assert healthy.ok is True
    assert graph.requests_to("me")[0].query["fields"] == "id,name,instagram_business_account"
    assert "not connected to Instagram account" in unlinked.problems[0]


async def test_an_unreachable_network_and_an_expired_token_date_are_problems(
    http: httpx.AsyncClient,
) -> None:
    connection = connect(
        http, f"http://127.0.0.1:{free_port()}/{VERSION}", token_expires_at="2020-01-01T00:00:00Z"
    )

    health = await meta.check(connection)

    assert health.ok is False
    assert health.problems[0] == "the access token expired on 2020-01-01: reconnect the channel"
    assert health.problems[1].startswith("the Graph API could not be reached")


async def test_a_token_expiry_that_is_not_a_date_is_reported(
    graph: MetaGraph, http: httpx.AsyncClient, api_url: str
) -> None:
    health = await meta.check(connect(http, api_url, token_expires_at="soon"))

    assert health.problems == ("token_expires_at is not an ISO date: 'soon'",)
    assert health.token_expires_at is None


# --- attachments ------------------------------------------------------------------------------


async def test_a_cdn_attachment_is_downloaded_as_it_is_and_others_not_at_all(
    http: httpx.AsyncClient, api_url: str
) -> None:
    connection = connect(http, api_url)
    url = "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1&signature=abc"

    assert await meta.media_request(connection, {"type": "image", "url": url}) == (url, {})
    story = {"type": "story_mention", "url": url}
    assert await meta.media_request(connection, story) == (url, {})
    assert await meta.media_request(connection, {"type": "mention", "ig_media_id": MEDIA}) is None
    link = {"type": "fallback", "url": "https://shop.example/x"}
    assert await meta.media_request(connection, link) is None
    assert (
        await meta.media_request(connection, {"type": "image", "url": "javascript:alert(1)"})
        is None
    )
    assert await meta.media_request(connection, {"type": "image", "url": None}) is None
