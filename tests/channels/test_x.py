"""X: webhook signatures and CRC, the Account Activity / X Activity / API v2 shapes `parse` reads,
and sending, looking up, polling and checking against a fake X API over real HTTP.

The payloads under payloads/x/ are constructed from X's documentation (Account Activity API
payload examples and data objects, X Activity API event payloads, API v2 responses): documented
field names, invented values. X gives no recorded payloads to replay.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from allo.channels import signatures, x
from allo.channels.inbound import Author, InboundMessage, ParseError, StatusUpdate
from allo.channels.outbound import Connection, Outgoing, SendError
from allo.channels.registry import network_for, parser_for
from tests.fakes.server import free_port, serving
from tests.fakes.x_api import FakeX

PAYLOADS = Path(__file__).resolve().parent / "payloads" / "x"
FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
RECEIVED_AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
BRAND = "1400000000000000001"
CUSTOMER = "3001969357"
TOKEN = "user-token"
SECRET = "consumer-secret"


def raw(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def parse(data: bytes | dict[str, Any], own_id: str = BRAND) -> list[Any]:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    return list(x.parse(body, "event-1", RECEIVED_AT, own_id))


def only(name: str) -> InboundMessage:
    [message] = parse(raw(name))
    assert isinstance(message, InboundMessage)
    return message


def refused(data: bytes | dict[str, Any]) -> str:
    with pytest.raises(ParseError) as caught:
        parse(data)
    return str(caught.value)


def mention(text: str, **fields: Any) -> dict[str, Any]:
    """An Account Activity body with one post by the customer."""
    tweet = {
        "id_str": "1050118621198921728",
        "created_at": "Wed Oct 10 20:19:24 +0000 2018",
        "text": text,
        "user": {"id_str": CUSTOMER, "screen_name": "jordan_b", "name": "Jordan Brinks"},
    } | fields
    return {"for_user_id": BRAND, "tweet_create_events": [tweet]}


# The registry and the webhook's proofs


def test_the_registry_names_the_x_parser_and_network() -> None:
    assert parser_for("x") is x.parse
    assert cast(object, network_for("x")) is x
    assert x.CREDENTIALS == ("access_token", "consumer_secret")


def test_the_crc_challenge_is_answered_with_the_documented_response_token() -> None:
    vector = json.loads((FIXTURES / "signatures" / "signature_vectors.json").read_text())
    crc = vector["x_crc_and_signature"]
    body, media_type = x.handshake(
        {"crc_token": crc["crc_token"]}, {"consumer_secret": crc["consumer_secret"]}
    )
    assert json.loads(body) == crc["expected_response"]
    assert media_type == "application/json"


def test_a_crc_check_without_a_token_is_refused() -> None:
    with pytest.raises(signatures.SignatureInvalid):
        x.handshake({}, {"consumer_secret": SECRET})


def test_a_webhook_signed_with_the_consumer_secret_over_its_exact_bytes_is_genuine() -> None:
    body = raw("aaa_mention.json")
    header = {"x-twitter-webhooks-signature": signatures.x_signature(SECRET, body)}
    x.verify(header, body, {"consumer_secret": SECRET})


def test_a_forged_or_replayed_body_is_refused() -> None:
    body = raw("aaa_mention.json")
    header = {"x-twitter-webhooks-signature": signatures.x_signature(SECRET, body)}
    with pytest.raises(signatures.SignatureInvalid):
        x.verify(
            header, body.replace(b"never arrived", b"arrived fine!"), {"consumer_secret": SECRET}
        )
    with pytest.raises(signatures.SignatureInvalid):
        x.verify(header, body, {"consumer_secret": "another-app"})


def test_a_webhook_without_a_signature_is_refused() -> None:
    with pytest.raises(signatures.SignatureMissing):
        x.verify({}, raw("aaa_mention.json"), {"consumer_secret": SECRET})


# Account Activity API: posts


def test_a_mention_is_a_public_message_from_its_author() -> None:
    message = only("aaa_mention.json")
    assert message.external_id == "1050118621198921728"
    assert message.contact == Author(
        platform_id=CUSTOMER, handle="jordan_b", display_name="Jordan Brinks", followers=22
    )
    assert (message.direction, message.visibility) == ("in", "public")
    assert message.sent_at == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)
    assert message.reply_to_external_id is None
    assert message.attachments == ()


def test_the_entities_x_escapes_in_a_post_become_the_characters_typed_again() -> None:
    message = only("aaa_mention.json")
    assert message.text == (
        "@AlloCare my order #4521 never arrived & nobody answers the phone <3 >:("
    )
    assert message.html is None


def test_the_leading_mentions_of_a_reply_are_kept() -> None:
    message = only("aaa_reply_with_media.json")
    assert message.text.startswith("@AlloCare Still broken after the update.")


def test_a_reply_answers_the_post_it_replies_to_with_its_full_text_and_media() -> None:
    message = only("aaa_reply_with_media.json")
    assert message.reply_to_external_id == "1924400000000000000"
    assert message.text.endswith("Video and photo attached. https://t.co/Hj7nLq2Pz1")
    assert message.contact is not None and message.contact.verified
    assert message.contact.followers == 1523
    assert message.attachments == (
        {
            "type": "image",
            "media_id": "1924465400000000001",
            "url": "https://pbs.twimg.com/media/GrZ0aB1XwAAq9kL.jpg",
            "content_type": "image/jpeg",
        },
        {
            "type": "video",
            "media_id": "1924465400000000002",
            "url": "https://video.twimg.com/ext_tw_video/1924465400000000002/pu/vid/720x1280/high.mp4",
            "content_type": "video/mp4",
            "preview_url": "https://pbs.twimg.com/ext_tw_video_thumb/1924465400000000002/pu/img/Qm3XK.jpg",
        },
    )


def test_a_quote_post_is_public_and_starts_its_own_thread() -> None:
    message = only("aaa_quote.json")
    assert message.external_id == "2028000000000000300"
    assert message.visibility == "public"
    assert message.reply_to_external_id is None
    assert message.thread_key is None
    assert message.references == ()
    assert message.contact is not None and message.contact.handle == "minapark"


def test_the_brands_own_reply_goes_out_to_the_customer_it_answers() -> None:
    message = only("aaa_own_reply.json")
    assert message.direction == "out"
    assert message.contact == Author(platform_id=CUSTOMER, handle="jordan_b")
    assert message.author_name == "AlloCare"
    assert message.reply_to_external_id == "1050118621198921728"


def test_a_brand_post_that_answers_nobody_names_no_customer() -> None:
    body = mention(
        "Our opening hours change today", user={"id_str": BRAND, "screen_name": "AlloCare"}
    )
    [message] = parse(body)
    assert message.direction == "out"
    assert message.contact is None


def test_a_repost_is_not_a_message_to_answer() -> None:
    assert parse(raw("aaa_retweet.json")) == []


def test_a_deleted_post_is_a_deletion_of_that_post() -> None:
    assert parse(raw("aaa_tweet_delete.json")) == [
        StatusUpdate(
            "deleted",
            datetime(2018, 10, 10, 20, 23, 20, tzinfo=UTC),
            external_id="1050118621198921728",
        )
    ]


def test_likes_and_typing_carry_nothing_to_answer() -> None:
    assert parse(raw("aaa_favorite.json")) == []
    assert parse(raw("aaa_typing.json")) == []


def test_an_event_list_that_is_empty_yields_nothing() -> None:
    assert parse({"for_user_id": BRAND, "tweet_create_events": []}) == []


# Account Activity API: direct messages


def test_a_direct_message_is_private_and_comes_from_its_sender() -> None:
    message = only("aaa_dm_in.json")
    assert message.external_id == "954491830116155396"
    assert (message.direction, message.visibility) == ("in", "private")
    assert message.contact == Author(
        platform_id=CUSTOMER, handle="jordan_b", display_name="Jordan Brinks", followers=22
    )
    assert message.sent_at == datetime(2018, 1, 19, 23, 12, 40, 557000, tzinfo=UTC)


def test_markup_in_a_direct_message_stays_plain_text() -> None:
    message = only("aaa_dm_in.json")
    assert message.text == (
        'Hi! My order #4521 still hasn\'t arrived. Tracking says "delivered" '
        "<b>but it's not here</b> & I'm worried."
    )
    assert message.html is None


def test_the_brands_own_direct_message_goes_out_to_its_recipient() -> None:
    message = only("aaa_dm_echo.json")
    assert message.external_id == "954492000000000001"
    assert message.direction == "out"
    assert message.contact is not None and message.contact.platform_id == CUSTOMER
    assert message.contact.handle == "jordan_b"


def test_a_photo_in_a_direct_message_is_a_private_attachment() -> None:
    message = only("aaa_dm_media.json")
    assert message.text == "This is what arrived https://t.co/Pq8XyZ1abc"
    assert message.attachments == (
        {
            "type": "image",
            "media_id": "1034828533812486145",
            "url": "https://ton.twitter.com/1.1/ton/data/dm/1034828552951160836/1034828533812486145/oP5p359h.jpg",
            "content_type": "image/jpeg",
            "visibility": "private",
        },
    )


def test_an_unknown_attachment_is_kept_as_unsupported_rather_than_lost() -> None:
    body = json.loads(raw("aaa_dm_in.json"))
    data = body["direct_message_events"][0]["message_create"]["message_data"]
    data["attachment"] = {"type": "location", "location": {"type": "shared_coordinate"}}
    [message] = parse(body)
    assert message.text.endswith("[unsupported: location]")
    assert message.attachments == ({"type": "unsupported", "raw": data["attachment"]},)


def test_an_unknown_kind_of_direct_message_event_is_kept_as_unsupported() -> None:
    body = json.loads(raw("aaa_dm_in.json"))
    event = body["direct_message_events"][0]
    event["type"] = "message_reaction_create"
    [message] = parse(body)
    assert message.text == "[unsupported: message_reaction_create]"
    assert message.contact is not None and message.contact.platform_id == CUSTOMER
    assert message.attachments == ({"type": "unsupported", "raw": event},)


def test_a_customer_reading_the_brands_messages_is_a_read_receipt() -> None:
    assert parse(raw("aaa_dm_read.json")) == [
        StatusUpdate(
            "read",
            datetime(2018, 2, 12, 16, 20, 44, 662000, tzinfo=UTC),
            external_id="954492000000000001",
            recipient_id=CUSTOMER,
        )
    ]


def test_the_brand_reading_the_customers_messages_says_nothing_about_its_own() -> None:
    body = json.loads(raw("aaa_dm_read.json"))
    body["direct_message_mark_read_events"][0]["sender_id"] = BRAND
    assert parse(body) == []


# API v2 pages (what `fetch` records) and the X Activity API


def test_a_polled_page_of_mentions_goes_through_the_same_intake() -> None:
    messages = parse(raw("v2_mentions_page.json"))
    assert [m.external_id for m in messages] == ["1925000000000000500", "1925000000000000400"]
    reply, quote = messages
    assert reply.contact == Author(
        platform_id="888000222", handle="samortiz", display_name="Sam 🦊 Ortiz", followers=4012
    )
    assert reply.text == (
        "@AlloCare @jordan_b same here, the app logs me out every hour & support chat is down"
    )
    assert reply.reply_to_external_id == "1924465506158878979"
    assert reply.thread_key == "1924400000000000000"
    assert reply.sent_at == datetime(2025, 5, 21, 8, 30, 12, tzinfo=UTC)
    assert reply.attachments == (
        {
            "type": "image",
            "media_id": "1925000000000000501",
            "url": "https://pbs.twimg.com/media/GrZ9xY8WkAAb1cD.png",
            "content_type": "image/png",
        },
    )
    assert (quote.reply_to_external_id, quote.thread_key) == (None, "1925000000000000400")
    assert quote.contact is not None and quote.contact.verified


def test_the_brands_own_post_in_a_polled_page_goes_out_to_whom_it_answers() -> None:
    [message] = parse(raw("v2_own_reply_page.json"))
    assert message.direction == "out"
    assert message.contact == Author(platform_id="888000222")
    assert message.author_name == "AlloCare"


def test_an_empty_page_yields_nothing() -> None:
    assert parse({"meta": {"result_count": 0}}) == []


def test_an_activity_api_mention_is_a_public_message() -> None:
    message = only("xaa_post_mention.json")
    assert message.external_id == "2080765813578191303"
    assert message.text == "hey @AlloCare is the outage in Lyon known?"
    assert message.contact == Author(
        platform_id="2222222222222222222",
        handle="OtherUser",
        display_name="Other User",
        followers=97,
    )
    assert message.thread_key == "2080765813578191303"


def test_an_activity_api_direct_message_is_private() -> None:
    message = only("xaa_dm_received.json")
    assert (message.external_id, message.visibility) == ("2080765901528535096", "private")
    assert message.contact is not None and message.contact.handle == "OtherUser"


def test_an_activity_api_deletion_and_like() -> None:
    assert parse(raw("xaa_post_delete.json")) == [
        StatusUpdate("deleted", RECEIVED_AT, external_id="2080765813578191303")
    ]
    assert parse(raw("xaa_like.json")) == []


def test_an_encrypted_chat_is_shown_as_unsupported_rather_than_lost() -> None:
    payload = {"id": "e4f4d3fc", "sender_id": CUSTOMER, "created_at_msec": "1784841183370"}
    body = {"data": {"event_type": "chat.received", "payload": payload}}
    [message] = parse(body)
    assert message.text == "[unsupported: chat.received]"
    assert message.contact == Author(platform_id=CUSTOMER)
    assert message.attachments == ({"type": "unsupported", "raw": payload},)


# What cannot be understood


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"", "not JSON"),
        (b'{"a": "lone \\ud800 surrogate"}', "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"{} trailing", "not JSON"),
        (b"[1, 2]", "body: expected an object"),
        (b'{"hello": "world"}', "not an X webhook event"),
        (b'{"for_user_id": "1", "tweet_create_events": {}}', "expected a list"),
        (b'{"for_user_id": "1", "tweet_create_events": ["tweet"]}', "expected an object"),
        (b'{"data": [{"id": "5", "text": "hi"}]}', "author_id"),
        (b'{"data": [{"id": "5", "author_id": "6", "text": 7}]}', "expected a string"),
    ],
)
def test_a_body_that_is_not_what_x_sends_is_a_parse_error(body: bytes, said: str) -> None:
    assert said in refused(body)


def test_a_post_without_its_author_is_a_parse_error() -> None:
    body = mention("hello")
    del body["tweet_create_events"][0]["user"]
    assert "tweet.user" in refused(body)


def test_a_post_with_a_date_x_does_not_write_is_a_parse_error() -> None:
    assert "created_at" in refused(mention("hello", created_at="2018-10-10"))


def test_a_direct_message_without_its_sender_is_a_parse_error() -> None:
    body = json.loads(raw("aaa_dm_in.json"))
    del body["direct_message_events"][0]["message_create"]["sender_id"]
    assert "sender_id" in refused(body)


def test_a_direct_message_with_a_timestamp_that_is_not_one_is_a_parse_error() -> None:
    body = json.loads(raw("aaa_dm_in.json"))
    body["direct_message_events"][0]["created_timestamp"] = "yesterday"
    assert "timestamp" in refused(body)


# Hostile and unusual text


def test_script_in_a_post_is_stored_as_the_plain_text_it_is() -> None:
    [message] = parse(mention("&lt;script&gt;alert(1)&lt;/script&gt; &amp;lt;b&amp;gt;"))
    assert message.text == "<script>alert(1)</script> &lt;b&gt;"
    assert message.html is None


def test_unicode_is_kept_and_nul_is_replaced() -> None:
    [message] = parse(mention("שלום 👋🏽 注文\x00 é"))
    assert message.text == "שלום 👋🏽 注文\ufffd é"


# Sending, against the fake X API


@pytest.fixture(autouse=True)
def forget_rate_limits() -> Iterator[None]:
    x.RATE_LIMITS.clear()
    yield
    x.RATE_LIMITS.clear()


@pytest.fixture
def fake() -> FakeX:
    api = FakeX(own_id=BRAND, token=TOKEN)
    api.add_user(CUSTOMER, "jordan_b", "Jordan Brinks", followers=22)
    return api


@pytest.fixture
def api_url(fake: FakeX) -> Iterator[str]:
    with serving(fake.app) as base_url:
        yield base_url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def connect(api_url: str, http: httpx.AsyncClient, **changes: Any) -> Connection:
    fields: dict[str, Any] = {
        "channel_account_id": 7,
        "kind": "x",
        "external_id": BRAND,
        "credentials": {"access_token": TOKEN, "consumer_secret": SECRET},
        "settings": {},
        "api_url": api_url,
        "http": http,
    } | changes
    return Connection(**fields)


def reply(text: str, to: str | None, **changes: Any) -> Outgoing:
    fields: dict[str, Any] = {
        "key": "outbox-1",
        "text": text,
        "visibility": "public",
        "recipient_id": CUSTOMER,
        "reply_to_external_id": to,
    } | changes
    return Outgoing(**fields)


def direct(text: str, recipient: str = CUSTOMER, **changes: Any) -> Outgoing:
    fields: dict[str, Any] = {
        "key": "outbox-2",
        "text": text,
        "visibility": "private",
        "recipient_id": recipient,
    } | changes
    return Outgoing(**fields)


async def refusal(connection: Connection, outgoing: Outgoing) -> SendError:
    with pytest.raises(SendError) as caught:
        await x.send(connection, outgoing)
    return caught.value


async def test_a_public_reply_is_posted_in_reply_to_the_customers_post(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    post = fake.add_tweet(CUSTOMER, "@AlloCare my order never arrived")
    sent = await x.send(connect(api_url, http), reply("@jordan_b We're on it!", post["id"]))
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/2/tweets")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "text": "@jordan_b We're on it!",
        "reply": {"in_reply_to_tweet_id": post["id"]},
    }
    posted = fake.tweets[sent.external_id]
    assert (posted["author_id"], posted["text"]) == (BRAND, "@jordan_b We're on it!")


async def test_a_public_reply_without_a_parent_answers_the_threads_post(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    post = fake.add_tweet(CUSTOMER, "@AlloCare hello")
    await x.send(connect(api_url, http), reply("Hi!", None, thread_key=post["id"]))
    assert fake.requests[0].body["reply"] == {"in_reply_to_tweet_id": post["id"]}


async def test_a_direct_message_is_sent_to_its_recipient(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    sent = await x.send(connect(api_url, http), direct("Your replacement ships today."))
    [request] = fake.requests
    assert (request.method, request.path) == (
        "POST",
        f"/2/dm_conversations/with/{CUSTOMER}/messages",
    )
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.body == {"text": "Your replacement ships today."}
    assert sent.external_id == fake.dm_events[-1]["id"]


async def test_a_post_over_280_weighted_characters_is_refused_without_calling_x(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    post = fake.add_tweet(CUSTOMER, "@AlloCare 你好")
    connection = connect(api_url, http)
    for text in ("a" * 281, "漢" * 141, "🙂" * 141):
        error = await refusal(connection, reply(text, post["id"]))
        assert (error.reason, error.retryable) == ("invalid", False)
        assert "too long" in error.detail
    assert fake.requests == []
    await x.send(connection, reply("漢" * 140, post["id"]))
    assert len(fake.tweets) == 2


async def test_a_direct_message_may_be_longer_than_a_post_but_not_without_end(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    connection = connect(api_url, http)
    await x.send(connection, direct("a" * 1000))
    error = await refusal(connection, direct("a" * 10_001))
    assert error.reason == "invalid"
    assert len(fake.requests) == 1


async def test_what_x_would_refuse_anyway_is_refused_before_calling_it(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    connection = connect(api_url, http)
    for outgoing in (
        reply("Hello", None),
        reply("   ", "123"),
        direct("Hello", recipient=""),
    ):
        assert (await refusal(connection, outgoing)).reason == "invalid"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("setup", "outgoing", "reason"),
    [
        ("deleted", "reply", "deleted"),
        ("duplicate", "reply", "invalid"),
        ("closed", "direct", "blocked"),
        ("unknown user", "direct", "deleted"),
        ("token", "reply", "unauthorized"),
    ],
)
async def test_xs_refusals_become_the_reason_the_agent_is_told(
    fake: FakeX, api_url: str, http: httpx.AsyncClient, setup: str, outgoing: str, reason: str
) -> None:
    post = fake.add_tweet(CUSTOMER, "@AlloCare help")
    connection = connect(api_url, http)
    message = reply("Sorry about that!", post["id"])
    if setup == "deleted":
        fake.deleted.add(post["id"])
    if setup == "duplicate":
        fake.add_tweet(BRAND, "Sorry about that!")
    if setup == "closed":
        fake.closed_to_dms.add(CUSTOMER)
    if setup == "unknown user":
        message = direct("Hello", recipient="999")
    elif outgoing == "direct":
        message = direct("Hello")
    if setup == "token":
        connection = connect(api_url, http, credentials={"access_token": "revoked"})
    error = await refusal(connection, message)
    assert (error.reason, error.retryable) == (reason, False)
    assert error.detail and "HTTP" not in error.detail


async def test_the_detail_is_xs_own_words(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    post = fake.add_tweet(CUSTOMER, "@AlloCare help")
    fake.deleted.add(post["id"])
    error = await refusal(connect(api_url, http), reply("Hi", post["id"]))
    assert (
        error.detail == "You attempted to reply to a Tweet that is deleted or not visible to you."
    )


async def test_an_app_not_allowed_to_post_is_unauthorized_not_invalid(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    fake.fail_next(
        403,
        {
            "title": "Client Forbidden",
            "detail": "This request must be made using an approved developer account.",
            "reason": "client-not-enrolled",
            "type": "https://api.twitter.com/2/problems/client-forbidden",
        },
    )
    post = fake.add_tweet(CUSTOMER, "@AlloCare help")
    error = await refusal(connect(api_url, http), reply("Hi", post["id"]))
    assert error.reason == "unauthorized"


async def test_an_invalid_request_says_which_part(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    fake.fail_next(
        400,
        {
            "errors": [{"message": "Your Tweet text is too long."}],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request",
        },
    )
    error = await refusal(connect(api_url, http), reply("Hi", "1"))
    assert (error.reason, error.detail) == ("invalid", "Your Tweet text is too long.")


async def test_a_429_is_rate_limited_until_xs_reset_and_x_is_not_called_meanwhile(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    reset = int(time.time()) + 120
    fake.fail_next(
        429,
        {
            "title": "Too Many Requests",
            "detail": "Too Many Requests",
            "type": "about:blank",
            "status": 429,
        },
        {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)},
    )
    post = fake.add_tweet(CUSTOMER, "@AlloCare help")
    connection = connect(api_url, http)
    error = await refusal(connection, reply("Hi", post["id"]))
    assert (error.reason, error.retryable) == ("rate_limited", True)
    assert error.retry_after is not None and 110 < error.retry_after <= 120
    again = await refusal(connection, reply("Hi", post["id"]))
    assert again.reason == "rate_limited"
    assert len(fake.requests) == 1


async def test_a_spent_limit_announced_on_a_success_stops_the_next_call(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    post = fake.add_tweet(CUSTOMER, "@AlloCare help")
    fake.rate_limit.remaining = 0
    fake.rate_limit.reset = int(time.time()) + 600
    connection = connect(api_url, http)
    await x.send(connection, reply("First", post["id"]))
    error = await refusal(connection, reply("Second", post["id"]))
    assert error.reason == "rate_limited" and error.retry_after is not None
    assert 590 < error.retry_after <= 600
    assert len(fake.requests) == 1
    # Limits are per endpoint and per channel account.
    await x.send(connection, direct("By message then"))
    await x.send(connect(api_url, http, channel_account_id=8), reply("Other brand", post["id"]))
    assert len(fake.requests) == 3


async def test_a_limit_whose_window_has_reset_is_tried_again(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    post = fake.add_tweet(CUSTOMER, "@AlloCare help")
    fake.rate_limit.remaining = 0
    fake.rate_limit.reset = int(time.time()) - 1
    connection = connect(api_url, http)
    await x.send(connection, reply("First", post["id"]))
    await x.send(connection, reply("Second", post["id"]))
    assert len(fake.requests) == 2


async def test_the_daily_posting_limit_counts_when_it_is_the_tighter(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    tomorrow = int(time.time()) + 80_000
    fake.fail_next(
        429,
        {"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank"},
        {
            "x-rate-limit-remaining": "12",
            "x-user-limit-24hour-remaining": "0",
            "x-user-limit-24hour-reset": str(tomorrow),
        },
    )
    connection = connect(api_url, http)
    await refusal(connection, reply("Hi", "1"))
    error = await refusal(connection, reply("Hi", "1"))
    assert error.retry_after is not None and error.retry_after > 79_000
    assert len(fake.requests) == 1


async def test_x_failing_is_unavailable_and_worth_trying_again(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    fake.fail_next(503, "<html>Over capacity</html>", {"retry-after": "30"})
    error = await refusal(connect(api_url, http), reply("Hi", "1"))
    assert (error.reason, error.retryable, error.retry_after) == ("unavailable", True, 30.0)


async def test_x_out_of_reach_is_unavailable(http: httpx.AsyncClient) -> None:
    connection = connect(f"http://127.0.0.1:{free_port()}", http)
    error = await refusal(connection, reply("Hi", "1"))
    assert (error.reason, error.retryable) == ("unavailable", True)


async def test_a_success_without_the_new_id_is_not_taken_for_a_send(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    fake.fail_next(201, "created")
    error = await refusal(connect(api_url, http), reply("Hi", "1"))
    assert (error.reason, error.retryable) == ("unavailable", True)


# After an interrupted send


async def test_a_reply_that_reached_x_is_found(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    post = fake.add_tweet(CUSTOMER, "@AlloCare help")
    connection = connect(api_url, http)
    outgoing = reply("We're on it & will DM you", post["id"], sent_at=datetime.now(UTC))
    sent = await x.send(connection, outgoing)
    # X shows the reply with the customer's @name first and `&` escaped.
    fake.tweets[sent.external_id]["text"] = "@jordan_b We're on it &amp; will DM you"
    found = await x.find_sent(connection, outgoing)
    assert (found.external_id, found.certain) == (sent.external_id, True)
    lookup = fake.requests[-1]
    assert lookup.path == f"/2/users/{BRAND}/tweets"
    assert lookup.query["start_time"].endswith("Z")
    assert "referenced_tweets" in lookup.query["tweet.fields"]


async def test_a_reply_that_never_reached_x_is_certainly_not_there(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    post = fake.add_tweet(CUSTOMER, "@AlloCare help")
    other = fake.add_tweet(CUSTOMER, "@AlloCare another question")
    fake.add_tweet(BRAND, "Same words", reply_to=other["id"])
    found = await x.find_sent(connect(api_url, http), reply("Same words", post["id"]))
    assert (found.external_id, found.certain) == (None, True)


async def test_a_lookup_that_could_not_see_everything_is_not_certain(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    post = fake.add_tweet(CUSTOMER, "@AlloCare help")
    for number in range(x.PAGES_PER_LOOKUP * 100 + 1):
        fake.add_tweet(BRAND, f"Announcement {number}")
    found = await x.find_sent(connect(api_url, http), reply("Not these", post["id"]))
    assert (found.external_id, found.certain) == (None, False)
    assert len(fake.requests) == x.PAGES_PER_LOOKUP


async def test_a_direct_message_that_reached_x_is_found_and_one_that_did_not_is_not(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    connection = connect(api_url, http)
    fake.add_dm(CUSTOMER, BRAND, "Thanks, see you tomorrow")
    sent = await x.send(connection, direct("Thanks, see you tomorrow"))
    found = await x.find_sent(connection, direct("Thanks, see you tomorrow"))
    assert (found.external_id, found.certain) == (sent.external_id, True)
    missing = await x.find_sent(connection, direct("Never sent"))
    assert (missing.external_id, missing.certain) == (None, True)
    lookup = fake.requests[-1]
    assert lookup.path == f"/2/dm_conversations/with/{CUSTOMER}/dm_events"
    assert "sender_id" in lookup.query["dm_event.fields"]


async def test_a_direct_message_lookup_stops_at_messages_older_than_the_send(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    for number in range(150):
        fake.add_dm(BRAND, CUSTOMER, f"Old news {number}", created_at=an_hour_ago)
    outgoing = direct("Old news 3", sent_at=datetime.now(UTC))
    found = await x.find_sent(connect(api_url, http), outgoing)
    assert (found.external_id, found.certain) == (None, True)
    [lookup] = fake.requests
    assert "start_time" not in lookup.query


async def test_a_lookup_x_refuses_raises(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    fake.fail_next(503, None)
    with pytest.raises(SendError) as caught:
        await x.find_sent(connect(api_url, http), direct("Hello"))
    assert caught.value.retryable


# Polling


def mentions_of(fake: FakeX, count: int, author: str = CUSTOMER) -> list[dict[str, Any]]:
    return [fake.add_tweet(author, f"@AlloCare question {n}") for n in range(count)]


async def test_the_first_poll_records_the_newest_page_of_mentions(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    posts = mentions_of(fake, 3)
    fake.add_tweet(CUSTOMER, "nothing to do with the brand")
    fetched = await x.fetch(connect(api_url, http), None)
    [(key, body)] = fetched.events
    assert key == f"x:mentions:{posts[-1]['id']}"
    messages = parse(body)
    assert [m.external_id for m in messages] == [p["id"] for p in reversed(posts)]
    assert all(m.contact.handle == "jordan_b" for m in messages)
    assert json.loads(fetched.cursor or "") == {"mentions": {"since_id": posts[-1]["id"]}}
    [request] = fake.requests
    assert request.path == f"/2/users/{BRAND}/mentions"
    assert "since_id" not in request.query
    assert request.query["expansions"].split(",")[0] == "author_id"
    assert {"conversation_id", "created_at", "referenced_tweets"} <= set(
        request.query["tweet.fields"].split(",")
    )


async def test_the_next_poll_asks_only_for_what_is_newer(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    connection = connect(api_url, http)
    first = await x.fetch(connection, None)
    assert first.events == []
    mentions_of(fake, 1)
    second = await x.fetch(connection, first.cursor)
    newest = json.loads(second.cursor or "")["mentions"]["since_id"]
    newer = mentions_of(fake, 2)
    third = await x.fetch(connection, second.cursor)
    assert fake.requests[-1].query["since_id"] == newest
    [(_, body)] = third.events
    assert [m.external_id for m in x.parse(body, "", RECEIVED_AT, BRAND)] == [
        newer[1]["id"],
        newer[0]["id"],
    ]
    quiet = await x.fetch(connection, third.cursor)
    assert (quiet.events, quiet.cursor) == ([], third.cursor)


async def test_a_backlog_is_read_page_by_page_and_resumed_where_the_poll_stopped(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    connection = connect(api_url, http)
    mentions_of(fake, 1)
    cursor = (await x.fetch(connection, None)).cursor
    backlog = mentions_of(fake, x.PAGES_PER_POLL * 100 + 150)
    first = await x.fetch(connection, cursor)
    assert len(first.events) == x.PAGES_PER_POLL
    assert len({key for key, _ in first.events}) == x.PAGES_PER_POLL
    state = json.loads(first.cursor or "")["mentions"]
    assert state["newest_id"] == backlog[-1]["id"]
    assert fake.requests[-1].query["pagination_token"] == f"page-{(x.PAGES_PER_POLL - 1) * 100}"
    second = await x.fetch(connection, first.cursor)
    assert len(second.events) == 2
    assert fake.requests[-1].query["since_id"] == state["since_id"]
    assert json.loads(second.cursor or "") == {"mentions": {"since_id": backlog[-1]["id"]}}
    seen = {
        m.external_id
        for _, body in first.events + second.events
        for m in x.parse(body, "", RECEIVED_AT, BRAND)
    }
    assert seen == {post["id"] for post in backlog}


async def test_a_search_query_is_polled_as_a_second_source(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    fake.add_user("555", "someone")
    talk = fake.add_tweet("555", "Is the allo outage over?")
    connection = connect(api_url, http, settings={"search_query": "allo outage"})
    fetched = await x.fetch(connection, None)
    assert [key for key, _ in fetched.events] == [f"x:search:{talk['id']}"]
    search = fake.requests_to("/2/tweets/search/recent")[0]
    assert search.query["query"] == "allo outage"
    assert json.loads(fetched.cursor or "")["search"] == {"since_id": talk["id"]}


async def test_a_poll_while_the_limit_is_spent_does_not_call_x(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    fake.rate_limit.remaining = 0
    connection = connect(api_url, http)
    await x.fetch(connection, None)
    with pytest.raises(SendError) as caught:
        await x.fetch(connection, None)
    assert caught.value.reason == "rate_limited"
    assert len(fake.requests) == 1


async def test_an_unreadable_cursor_starts_over(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    mentions_of(fake, 1)
    fetched = await x.fetch(connect(api_url, http), "not a cursor")
    assert len(fetched.events) == 1
    assert "since_id" not in fake.requests[0].query


# Checking a connection


async def test_a_working_connection_is_healthy(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    health = await x.check(connect(api_url, http))
    assert (health.ok, health.problems, health.subscribed) == (True, (), None)
    assert health.checked_at is not None
    assert fake.requests[0].path == "/2/users/me"


async def test_a_rejected_token_is_a_problem(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    health = await x.check(connect(api_url, http, credentials={"access_token": "revoked"}))
    assert not health.ok
    assert health.problems == ("token rejected: Unauthorized",)


async def test_a_token_of_another_account_is_a_problem(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    health = await x.check(connect(api_url, http, external_id="42"))
    assert not health.ok
    assert health.problems == (f"token belongs to another account (@AlloCare, id {BRAND})",)


async def test_an_expired_token_is_a_problem_and_its_expiry_is_told(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    expired = datetime.now(UTC) - timedelta(minutes=5)
    health = await x.check(
        connect(api_url, http, settings={"token_expires_at": expired.isoformat()})
    )
    assert not health.ok
    assert health.token_expires_at == expired
    assert health.problems == (f"token expired at {expired.isoformat()}",)


async def test_a_token_about_to_expire_is_a_problem_unless_it_can_be_refreshed(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    lasting = await x.check(connect(api_url, http, settings={"token_expires_at": soon}))
    assert lasting.problems == (f"token expires at {soon} and cannot be refreshed",)
    renewable = {"access_token": TOKEN, "refresh_token": "r", "client_id": "c"}
    health = await x.check(
        connect(api_url, http, credentials=renewable, settings={"token_expires_at": soon})
    )
    assert (health.ok, health.problems) == (True, ())


async def test_the_webhook_subscription_is_checked_where_one_is_set(
    fake: FakeX, api_url: str, http: httpx.AsyncClient
) -> None:
    fake.webhooks = {"wh-1": {BRAND}, "wh-2": set()}
    subscribed = await x.check(connect(api_url, http, settings={"webhook_id": "wh-1"}))
    assert (subscribed.ok, subscribed.subscribed) == (True, True)
    assert fake.requests[-1].path == "/2/account_activity/webhooks/wh-1/subscriptions/all"
    missing = await x.check(connect(api_url, http, settings={"webhook_id": "wh-2"}))
    assert (missing.ok, missing.subscribed) == (False, False)
    assert missing.problems == ("webhook wh-2 does not deliver this account's events",)


async def test_x_out_of_reach_is_a_problem_not_a_crash(http: httpx.AsyncClient) -> None:
    health = await x.check(connect(f"http://127.0.0.1:{free_port()}", http))
    assert not health.ok
    assert health.problems[0].startswith("unavailable: X cannot be reached")


# Downloading media


async def test_public_media_is_downloaded_without_a_token(http: httpx.AsyncClient) -> None:
    [message] = parse(raw("aaa_reply_with_media.json"))
    photo = message.attachments[0]
    assert await x.media_request(connect("https://api.x.test", http), photo) == (photo["url"], {})


async def test_media_of_a_direct_message_is_fetched_with_the_users_token(
    http: httpx.AsyncClient,
) -> None:
    [message] = parse(raw("aaa_dm_media.json"))
    request = await x.media_request(connect("https://api.x.test", http), message.attachments[0])
    assert request == (
        "https://api.x.test/2/dm_conversations/media/1034828552951160836/1034828533812486145/oP5p359h.jpg",
        {"Authorization": f"Bearer {TOKEN}"},
    )


async def test_the_token_is_never_given_to_a_host_that_is_not_xs(http: httpx.AsyncClient) -> None:
    attachment = {"type": "image", "url": "https://evil.example/x.jpg", "visibility": "private"}
    assert await x.media_request(connect("https://api.x.test", http), attachment) == (
        "https://evil.example/x.jpg",
        {},
    )


async def test_an_attachment_without_a_url_cannot_be_downloaded(http: httpx.AsyncClient) -> None:
    assert await x.media_request(connect("https://api.x.test", http), {"media_id": "1"}) is None
