"""WhatsApp Business Cloud API: signed webhooks parsed into messages and statuses, and sending,
health and media against a local fake of the Graph API."""

from __future__ import annotations

import copy
import dataclasses
import hmac
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from allo.channels import whatsapp
from allo.channels.inbound import Author, InboundMessage, Parsed, ParseError, StatusUpdate
from allo.channels.outbound import Connection, Outgoing, SendError, Template
from allo.channels.registry import network_for, parser_for
from allo.channels.signatures import SignatureInvalid, SignatureMissing, meta_signature
from tests.fakes.server import free_port, serving
from tests.fakes.whatsapp_cloud import (
    ACCESS_TOKEN,
    APP_SECRET,
    PHONE_NUMBER_ID,
    WABA_ID,
    FakeWhatsAppCloud,
    graph_error,
    rate_limit_hit,
)

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
VECTORS = json.loads((FIXTURES / "signatures" / "signature_vectors.json").read_text())[
    "meta_x_hub_signature"
]
RECEIVED_AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PYWA_NUMBER = "1122334455667"
DOCS_NUMBER = "106540352242922"
CUSTOMER = "972987654321"


def pywa(name: str) -> dict[str, dict[str, Any]]:
    cases: dict[str, dict[str, Any]] = json.loads(
        (FIXTURES / "whatsapp" / f"pywa_{name}.json").read_text()
    )
    return cases


def case(name: str, key: str) -> dict[str, Any]:
    return copy.deepcopy(pywa(name)[key])


def parse(body: dict[str, Any] | bytes, own_id: str = PYWA_NUMBER) -> list[Parsed]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return list(whatsapp.parse(raw, "event-1", RECEIVED_AT, own_id))


def only(body: dict[str, Any] | bytes, own_id: str = PYWA_NUMBER) -> Parsed:
    [item] = parse(body, own_id)
    return item


def message(body: dict[str, Any] | bytes, own_id: str = PYWA_NUMBER) -> InboundMessage:
    item = only(body, own_id)
    assert isinstance(item, InboundMessage)
    return item


def status(body: dict[str, Any] | bytes) -> StatusUpdate:
    item = only(body)
    assert isinstance(item, StatusUpdate)
    return item


def value_of(body: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = body["entry"][0]["changes"][0]["value"]
    return found


def customer_message(**fields: Any) -> dict[str, Any]:
    """The documented text message body, with its message's fields changed."""
    body = case("message", "text")
    value_of(body)["messages"][0] |= fields
    return body


# --- Registry, signatures and the subscription handshake --------------------------------------


def test_the_registry_names_the_whatsapp_network_and_parser() -> None:
    assert parser_for("whatsapp") is whatsapp.parse
    assert network_for("whatsapp") is whatsapp


@pytest.mark.parametrize("vector", VECTORS["cases"], ids=lambda v: v["body_file"])
def test_a_webhook_signed_with_the_app_secret_over_its_exact_bytes_is_genuine(
    vector: dict[str, str],
) -> None:
    raw = (FIXTURES / vector["body_file"]).read_bytes()
    headers = {"x-hub-signature-256": vector["X-Hub-Signature-256"]}
    whatsapp.verify(headers, raw, {"app_secret": VECTORS["app_secret"]})


def test_the_signature_covers_the_escaped_bytes_as_received_not_re_encoded_json() -> None:
    [_, trap] = VECTORS["cases"]
    raw = (FIXTURES / trap["body_file"]).read_bytes()
    assert b"\\u00e9" in raw
    reencoded = json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":")).encode()
    assert (
        meta_signature(VECTORS["app_secret"], reencoded)
        == trap["signature_if_reserialized_unescaped_WRONG"]
    )
    credentials = {"app_secret": VECTORS["app_secret"]}
    with pytest.raises(SignatureInvalid):
        whatsapp.verify(
            {"x-hub-signature-256": trap["X-Hub-Signature-256"]}, reencoded, credentials
        )
    with pytest.raises(SignatureInvalid):
        whatsapp.verify(
            {"x-hub-signature-256": trap["signature_if_reserialized_unescaped_WRONG"]},
            raw,
            credentials,
        )


def test_a_webhook_without_a_signature_is_refused() -> None:
    raw = (FIXTURES / "whatsapp" / "meta_docs_text_message.raw.json").read_bytes()
    with pytest.raises(SignatureMissing):
        whatsapp.verify({}, raw, {"app_secret": VECTORS["app_secret"]})


@pytest.mark.parametrize(
    ("signature", "secret"),
    [
        ("sha256=" + "0" * 64, "test_app_secret"),
        (VECTORS["cases"][0]["X-Hub-Signature-256"], "another_app_secret"),
        (VECTORS["cases"][0]["X-Hub-Signature"], "test_app_secret"),
        (VECTORS["cases"][0]["X-Hub-Signature-256"], ""),
    ],
    ids=["forged", "other-app", "legacy-sha1-only", "no-secret-configured"],
)
def test_a_forged_signature_is_refused(signature: str, secret: str) -> None:
    raw = (FIXTURES / "whatsapp" / "meta_docs_text_message.raw.json").read_bytes()
    with pytest.raises(SignatureInvalid):
        whatsapp.verify({"x-hub-signature-256": signature}, raw, {"app_secret": secret})


def test_a_tampered_body_fails_its_signature() -> None:
    raw = (FIXTURES / "whatsapp" / "meta_docs_text_message.raw.json").read_bytes()
    signature = VECTORS["cases"][0]["X-Hub-Signature-256"]
    with pytest.raises(SignatureInvalid):
        whatsapp.verify(
            {"x-hub-signature-256": signature},
            raw.replace(b"another color", b"a refund now"),
            {"app_secret": VECTORS["app_secret"]},
        )


HANDSHAKE = {
    "hub.mode": "subscribe",
    "hub.challenge": "1158201444",
    "hub.verify_token": "meatyhamhock",
}


def test_the_subscription_handshake_echoes_the_challenge_as_plain_text() -> None:
    assert whatsapp.handshake(HANDSHAKE, {"verify_token": "meatyhamhock"}) == (
        "1158201444",
        "text/plain",
    )


@pytest.mark.parametrize(
    ("query", "verify_token"),
    [
        (HANDSHAKE | {"hub.verify_token": "guessed"}, "meatyhamhock"),
        (HANDSHAKE | {"hub.mode": "unsubscribe"}, "meatyhamhock"),
        ({k: v for k, v in HANDSHAKE.items() if k != "hub.mode"}, "meatyhamhock"),
        (HANDSHAKE | {"hub.verify_token": ""}, ""),
    ],
    ids=["wrong-token", "wrong-mode", "no-mode", "no-token-configured"],
)
def test_a_handshake_without_our_verify_token_is_refused(
    query: dict[str, str], verify_token: str
) -> None:
    with pytest.raises(SignatureInvalid):
        whatsapp.handshake(query, {"verify_token": verify_token})


# --- Every recorded payload -------------------------------------------------------------------


def summary(item: Parsed) -> tuple[str, str, str | None]:
    if isinstance(item, InboundMessage):
        return ("message", item.direction, item.text)
    return ("status", item.kind, item.external_id)


CONTACT_CARDS = (
    "👤 Chandler Bing — +1 555-555-5555\n👤 Monica — +1 666-666-6666\n"
    "👤 Rachel Green — +1 777-777-7777"
)
EXPECTED: dict[tuple[str, str], list[tuple[str, str, str | None]]] = {
    ("callback_button", "button"): [("message", "in", "title")],
    ("callback_button", "quick_reply"): [("message", "in", "title")],
    ("callback_button", "quick_reply_without_context"): [("message", "in", "title")],
    ("message", "text"): [("message", "in", "Body Text")],
    ("message", "image"): [("message", "in", "")],
    ("message", "media_with_url"): [("message", "in", "")],
    ("message", "video"): [("message", "in", "caption")],
    ("message", "document"): [("message", "in", "caption")],
    ("message", "audio"): [("message", "in", "")],
    ("message", "voice"): [("message", "in", "")],
    ("message", "static_sticker"): [("message", "in", "")],
    ("message", "animated_sticker"): [("message", "in", "")],
    ("message", "reaction"): [("status", "reaction", "wamid.yzxyzx=")],
    ("message", "unreaction_empty"): [("status", "reaction", "wamid.yzxyzx=")],
    ("message", "unreaction_no_emoji"): [("status", "reaction", "wamid.yzxyzx=")],
    ("message", "current_location"): [("message", "in", "📍 (12.25089, 43.90539)")],
    ("message", "chosen_location"): [
        (
            "message",
            "in",
            "📍 Facebook HQ, 1 Hacker Way, Menlo Park, CA 94025 (37.4611978, -122.2164385)",
        )
    ],
    ("message", "contacts"): [("message", "in", CONTACT_CARDS)],
    ("message", "order"): [
        ("message", "in", "🛒 3 × HAMBURGER (30 ILS), 2 × FRENCH_FRIES (35 ILS), 2 × SODA (10 ILS)")
    ],
    ("message", "unsupported"): [("message", "in", "[unsupported: unknown]")],
    ("message", "unsupported_with_type"): [("message", "in", "[unsupported: pool]")],
    ("message", "reply"): [("message", "in", "replied text")],
    ("message", "forwarded"): [("message", "in", "forwarded text")],
    ("message", "forwarded_many_times"): [("message", "in", "text forwarded many times")],
    ("message", "interactive_message_with_err"): [("message", "in", "[unsupported: interactive]")],
    ("message", "referral"): [("message", "in", "BODY")],
    ("message_status", "sent"): [("status", "sent", "wamid.xyzxyz")],
    ("message_status", "delivered"): [("status", "delivered", "wamid.xyzxyz")],
    ("message_status", "read"): [("status", "read", "wamid.xyzxyz")],
    ("message_status", "played"): [("status", "read", "wamid.xyzxyz")],
    ("message_status", "failed"): [("status", "failed", "wamid.xyzxyz")],
    ("message_status", "with_tracker"): [("status", "sent", "wamid.xyzxyz")],
    ("message_status", "group"): [("status", "read", "<WHATSAPP_MESSAGE_ID>")],
    ("outgoing_message", "text"): [("message", "out", "Test message")],
    ("outgoing_message", "delete"): [("status", "deleted", "wamid.zzzzzz")],
    ("outgoing_message", "edit"): [("message", "out", "Text was edited")],
}
RECORDED = [
    (path.name.removeprefix("pywa_").removesuffix(".json"), key)
    for path in sorted((FIXTURES / "whatsapp").glob("pywa_*.json"))
    for key in json.loads(path.read_text())
]


def test_every_recorded_case_has_an_expected_result() -> None:
    assert sorted(RECORDED) == sorted(EXPECTED)


@pytest.mark.parametrize(("name", "key"), RECORDED, ids=[f"{n}:{k}" for n, k in RECORDED])
def test_every_recorded_payload_parses_into_its_expected_messages_and_statuses(
    name: str, key: str
) -> None:
    body = case(name, key)
    own_id = value_of(body)["metadata"]["phone_number_id"]
    parsed = parse(body, own_id)
    assert [summary(item) for item in parsed] == EXPECTED[(name, key)]
    for item in parsed:
        moment = item.sent_at if isinstance(item, InboundMessage) else item.at
        assert moment.utcoffset() == timedelta(0)
        if isinstance(item, InboundMessage):
            assert item.visibility == "private"
            assert item.html is None
            assert json.loads(json.dumps(item.attachments)) == list(item.attachments)
            assert all("type" in attachment for attachment in item.attachments)


# --- Customer messages ------------------------------------------------------------------------


def test_a_text_message_comes_from_the_customer_named_by_their_profile() -> None:
    text = message(case("message", "text"))
    assert text.external_id == "wamid.xyzxyz"
    assert text.contact == Author(
        platform_id=CUSTOMER, handle=CUSTOMER, display_name="Test Name", phone="+972987654321"
    )
    assert text.text == "Body Text"
    assert text.sent_at == datetime(2023, 10, 11, 16, 53, 43, tzinfo=UTC)
    assert (text.direction, text.visibility) == ("in", "private")
    assert text.reply_to_external_id is None
    assert text.attachments == ()


def test_the_documented_text_message_parses_as_the_number_it_was_sent_to() -> None:
    raw = (FIXTURES / "whatsapp" / "meta_docs_text_message.raw.json").read_bytes()
    text = message(raw, DOCS_NUMBER)
    assert text.text == "Does it come in another color?"
    assert text.contact is not None
    assert text.contact.display_name == "Sheena Nelson"
    assert text.contact.phone == "+16505551234"


def test_escaped_non_ascii_text_is_decoded_exactly() -> None:
    raw = (FIXTURES / "whatsapp" / "meta_text_message_non_ascii_escaped.raw.json").read_bytes()
    assert message(raw, DOCS_NUMBER).text == "J'ai mangé des pâtes äöå 👍"


def test_an_image_is_an_attachment_to_download_by_its_media_id() -> None:
    image = message(case("message", "image"))
    assert image.text == ""
    assert image.attachments == (
        {
            "type": "image",
            "media_id": "65463453",
            "content_type": "image/jpeg",
            "sha256": "4654+8g=",
        },
    )


def test_a_document_keeps_its_filename_and_its_caption_becomes_the_text() -> None:
    document = message(case("message", "document"))
    assert document.text == "caption"
    [attachment, forwarded] = document.attachments
    assert attachment == {
        "type": "document",
        "media_id": "1234567890987654321",
        "content_type": "application/pdf",
        "sha256": "grwfwe/ZPx0wAbdfbdeFUNItPZ0RylL8gGUvdt3YFqc18SY=",
        "filename": "filename.pdf",
    }
    assert forwarded == {"type": "forwarded", "frequently": False}


def test_a_voice_note_and_an_animated_sticker_say_so() -> None:
    [voice] = message(case("message", "voice")).attachments
    assert (voice["type"], voice["voice"], voice["content_type"]) == (
        "audio",
        True,
        "audio/ogg; codecs=opus",
    )
    [sticker] = message(case("message", "animated_sticker")).attachments
    assert (sticker["type"], sticker["animated"]) == ("sticker", True)


def test_a_media_url_given_by_the_webhook_is_traded_for_a_fresh_one_by_its_id() -> None:
    [image] = message(case("message", "media_with_url")).attachments
    assert image["media_id"] == "65463453"
    # Kept, it would be fetched without the token once expired: only the id is kept.
    assert "url" not in image


def test_a_shared_location_reads_as_text_and_keeps_its_coordinates() -> None:
    location = message(case("message", "chosen_location"))
    [place, _forwarded] = location.attachments
    assert place == {
        "type": "location",
        "latitude": 37.4611978,
        "longitude": -122.2164385,
        "name": "Facebook HQ",
        "address": "1 Hacker Way, Menlo Park, CA 94025",
        "link": "https://maps.google.com/?cid=2000000000000000000",
    }
    assert "url" not in place


def test_shared_contacts_read_as_one_line_each_and_keep_their_cards() -> None:
    cards = message(case("message", "contacts"))
    assert cards.text == CONTACT_CARDS
    assert [a["name"] for a in cards.attachments] == ["Chandler Bing", "Monica", "Rachel Green"]
    assert cards.attachments[0]["card"]["phones"][0]["type"] == "CELL"


def test_a_tapped_reply_button_reads_as_its_title_and_keeps_its_payload() -> None:
    tapped = message(case("callback_button", "button"))
    assert tapped.text == "title"
    assert tapped.reply_to_external_id == "wamid.xyzxyz"
    assert tapped.attachments == (
        {"type": "button_reply", "payload": "callback_data", "title": "title"},
    )


def test_a_template_quick_reply_reads_as_its_text_and_answers_the_template() -> None:
    quick = message(case("callback_button", "quick_reply"))
    assert quick.text == "title"
    assert quick.reply_to_external_id == "wamid.xyzxyz=="
    assert quick.attachments == ({"type": "button", "payload": "callback_data"},)


def test_a_chosen_list_row_reads_as_its_title_and_description() -> None:
    chosen = message(
        customer_message(
            type="interactive",
            interactive={
                "type": "list_reply",
                "list_reply": {"id": "row-2", "title": "Refund", "description": "Money back"},
            },
            text=None,
        )
    )
    assert chosen.text == "Refund\nMoney back"
    assert chosen.attachments == ({"type": "list_reply", "payload": "row-2", "title": "Refund"},)


def test_a_submitted_form_reads_as_its_summary_and_keeps_the_answers() -> None:
    answers = '{"flow_token": "f-1", "order_number": "#123"}'
    form = message(
        customer_message(
            type="interactive",
            interactive={
                "type": "nfm_reply",
                "nfm_reply": {"name": "flow", "body": "Sent", "response_json": answers},
            },
            text=None,
        )
    )
    assert form.text == "Sent"
    assert form.attachments == ({"type": "form_reply", "name": "flow", "response": answers},)


def test_a_reaction_is_a_status_of_the_message_reacted_to() -> None:
    reaction = status(case("message", "reaction"))
    assert reaction == StatusUpdate(
        kind="reaction",
        at=datetime(2023, 10, 11, 17, 14, 16, tzinfo=UTC),
        external_id="wamid.yzxyzx=",
        recipient_id=CUSTOMER,
        reaction="😮",
    )


@pytest.mark.parametrize("key", ["unreaction_empty", "unreaction_no_emoji"])
def test_a_reaction_taken_back_has_no_emoji(key: str) -> None:
    taken_back = status(case("message", key))
    assert (taken_back.kind, taken_back.reaction) == ("reaction", None)


def test_a_message_from_a_click_to_whatsapp_ad_keeps_the_ad() -> None:
    from_ad = message(case("message", "referral"))
    assert from_ad.text == "BODY"
    [referral] = from_ad.attachments
    assert referral["type"] == "referral"
    assert (referral["source_url"], referral["headline"], referral["body"]) == (
        "AD_OR_POST_FB_URL",
        "AD_TITLE",
        "AD_DESCRIPTION",
    )
    assert referral["ctwa_clid"] == "CTWA_CLID"


def test_a_reply_names_the_message_it_answers() -> None:
    assert message(case("message", "reply")).reply_to_external_id == "wamid.xyzxyz=="


def test_a_frequently_forwarded_message_says_so() -> None:
    forwarded = message(case("message", "forwarded_many_times"))
    assert forwarded.attachments == ({"type": "forwarded", "frequently": True},)


def test_an_order_lists_its_items_and_keeps_them() -> None:
    order = message(case("message", "order"))
    [attachment] = order.attachments
    assert attachment["catalog_id"] == "354160437058781"
    assert [item["product_retailer_id"] for item in attachment["product_items"]] == [
        "HAMBURGER",
        "FRENCH_FRIES",
        "SODA",
    ]


def test_an_unsupported_message_is_kept_with_its_raw_and_the_reason() -> None:
    unsupported = message(case("message", "unsupported_with_type"))
    assert unsupported.text == "[unsupported: pool]"
    [attachment] = unsupported.attachments
    assert attachment["type"] == "unsupported"
    assert attachment["errors"] == (
        "131051: Message type unknown — Message type is currently not supported."
    )
    assert attachment["raw"]["unsupported"] == {"type": "pool"}


def test_a_message_whatsapp_could_not_deliver_whole_is_kept_with_the_change_error() -> None:
    broken = message(case("message", "interactive_message_with_err"))
    assert broken.text == "[unsupported: interactive]"
    assert broken.reply_to_external_id == "wamid.gvwegfretge=="
    assert (
        broken.attachments[0]["errors"]
        == "131000: Something went wrong — Unsupported webhook payload"
    )


def test_an_unknown_message_type_is_never_dropped() -> None:
    future = message(customer_message(type="hologram", hologram={"beam": 1}, text=None))
    assert future.text == "[unsupported: hologram]"
    assert future.attachments[0]["raw"]["hologram"] == {"beam": 1}


def test_a_changed_number_notice_is_shown_as_whatsapp_words_it() -> None:
    body = customer_message(
        type="system",
        system={
            "body": "User Test Name changed from 972987654321 to 972900000000",
            "wa_id": "972900000000",
            "type": "user_changed_number",
        },
        text=None,
    )
    notice = message(body)
    assert notice.text == "User Test Name changed from 972987654321 to 972900000000"
    assert notice.attachments == (
        {"type": "system", "system_type": "user_changed_number", "new_wa_id": "972900000000"},
    )


def test_a_customer_known_only_by_business_scoped_id_has_no_phone() -> None:
    body = customer_message(from_user_id="US.13491208655302741918")
    del value_of(body)["messages"][0]["from"]
    hidden = message(body)
    assert hidden.contact == Author(
        platform_id="US.13491208655302741918",
        handle="US.13491208655302741918",
        display_name="Test Name",
    )


def test_html_in_a_message_is_stored_as_plain_text() -> None:
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    parsed = message(customer_message(text={"body": hostile}))
    assert parsed.text == hostile
    assert parsed.html is None


def test_a_location_link_that_is_not_a_web_page_is_dropped() -> None:
    place = {"latitude": 1.5, "longitude": 2.5, "name": "Shop", "url": "javascript:alert(1)"}
    shared = message(customer_message(type="location", location=place, text=None))
    assert shared.text == "📍 Shop (1.5, 2.5)"
    assert shared.attachments == (
        {"type": "location", "latitude": 1.5, "longitude": 2.5, "name": "Shop"},
    )


def test_nul_characters_are_replaced_in_text_names_and_kept_raw_data() -> None:
    body = customer_message(
        type="hologram",
        hologram={"note": "a\x00b"},
        text=None,
        errors=[{"code": 1, "title": "x\x00"}],
    )
    value_of(body)["contacts"][0]["profile"]["name"] = "Ana\x00"
    parsed = message(body)
    assert parsed.contact is not None
    assert parsed.contact.display_name == "Ana\ufffd"
    assert "\x00" not in json.dumps(parsed.attachments, ensure_ascii=False)
    assert parsed.attachments[0]["raw"]["hologram"] == {"note": "a\ufffdb"}


def test_a_message_or_status_delivered_twice_in_one_webhook_is_parsed_once() -> None:
    body = case("message", "text")
    messages = value_of(body)["messages"]
    messages.append(copy.deepcopy(messages[0]))
    statuses = value_of(case("message_status", "read"))["statuses"]
    value_of(body)["statuses"] = statuses + copy.deepcopy(statuses)
    assert [summary(item) for item in parse(body)] == [
        ("message", "in", "Body Text"),
        ("status", "read", "wamid.xyzxyz"),
    ]


def test_the_same_webhook_twice_parses_the_same() -> None:
    body = case("message", "contacts")
    assert parse(body) == parse(body)


def test_changes_for_another_number_of_the_business_account_are_ignored() -> None:
    ours = case("message", "text")
    theirs = case("message", "image")
    value_of(theirs)["metadata"]["phone_number_id"] = "999999999999"
    ours["entry"][0]["changes"].append(theirs["entry"][0]["changes"][0])
    [kept] = parse(ours)
    assert isinstance(kept, InboundMessage)
    assert kept.text == "Body Text"
    assert parse(theirs) == []


def test_account_and_template_updates_say_nothing_about_a_conversation() -> None:
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA_ID,
                "changes": [
                    {
                        "field": "message_template_status_update",
                        "value": {"event": "APPROVED", "message_template_name": "order_update"},
                    }
                ],
            }
        ],
    }
    assert parse(body) == []


def test_a_status_for_a_state_allo_does_not_follow_yields_nothing() -> None:
    body = case("message_status", "sent")
    value_of(body)["statuses"][0]["status"] = "pending_review"
    assert parse(body) == []


# --- Statuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sent", "delivered", "read"])
def test_a_status_names_the_message_its_recipient_and_when(kind: str) -> None:
    update = status(case("message_status", kind))
    raw = value_of(case("message_status", kind))["statuses"][0]
    assert update.kind == kind
    assert update.external_id == "wamid.xyzxyz"
    assert update.recipient_id == CUSTOMER
    assert update.at == datetime.fromtimestamp(int(raw["timestamp"]), UTC)
    assert (update.error, update.outbox_key) == (None, None)


def test_a_failed_status_gives_the_code_title_and_details() -> None:
    failed = status(case("message_status", "failed"))
    assert failed.kind == "failed"
    assert failed.error == (
        "130472: User's number is part of an experiment — Failed to send message because this "
        "user's phone number is part of an experiment"
    )


def test_a_re_engagement_failure_reads_as_the_documented_code_and_title() -> None:
    body = case("message_status", "failed")
    value_of(body)["statuses"][0]["errors"] = [{"code": 131047, "title": "Re-engagement message"}]
    assert status(body).error == "131047: Re-engagement message"


def test_a_status_gives_back_the_outbox_key_sent_as_callback_data() -> None:
    assert status(case("message_status", "with_tracker")).outbox_key == "some data"


# --- Messages the business sent from another app ---------------------------------------------


def test_a_message_sent_from_the_business_app_is_an_outgoing_message_to_the_customer() -> None:
    body = case("outgoing_message", "text")
    value_of(body)["message_echoes"][0]["to"] = CUSTOMER
    echo = message(body)
    assert echo.direction == "out"
    assert echo.external_id == "<WHATSAPP_MESSAGE_ID>"
    assert echo.contact == Author(
        platform_id=CUSTOMER, handle=CUSTOMER, display_name="Test Name", phone="+972987654321"
    )
    assert echo.text == "Test message"
    assert echo.outbox_key is None


def test_a_message_deleted_from_the_business_app_is_a_deletion() -> None:
    deleted = status(case("outgoing_message", "delete"))
    assert (deleted.kind, deleted.external_id) == ("deleted", "wamid.zzzzzz")


def test_a_message_edited_from_the_business_app_names_the_message_it_replaces() -> None:
    edited = message(case("outgoing_message", "edit"))
    assert (edited.direction, edited.text) == ("out", "Text was edited")
    assert edited.contact is not None
    assert edited.contact.platform_id == CUSTOMER
    assert edited.attachments == ({"type": "edit", "original_message_id": "wamid.zzzzzz"},)


# --- Malformed webhooks -----------------------------------------------------------------------


def without_message_id() -> dict[str, Any]:
    body = case("message", "text")
    del value_of(body)["messages"][0]["id"]
    return body


def with_metadata(metadata: Any) -> dict[str, Any]:
    body = case("message", "text")
    value_of(body)["metadata"] = metadata
    return body


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b"[]", "body: expected an object"),
        (b'{"object": "page", "entry": []}', "object"),
        (b'{"object": "whatsapp_business_account", "entry": {}}', "entry: expected a list"),
        (b'{"object": "whatsapp_business_account", "entry": [7]}', "entry[]"),
        (
            b'{"object": "whatsapp_business_account", '
            b'"entry": [{"changes": [{"field": "messages"}]}]}',
            "value",
        ),
        (json.dumps(with_metadata(None)).encode(), "metadata"),
        (json.dumps(with_metadata({"phone_number_id": 42})).encode(), "phone_number_id"),
        (json.dumps(without_message_id()).encode(), "messages[].id"),
        (json.dumps(customer_message(timestamp="yesterday")).encode(), "timestamp"),
        (json.dumps(customer_message(timestamp=[1])).encode(), "timestamp"),
        (json.dumps(customer_message(timestamp="9" * 30)).encode(), "timestamp"),
        (json.dumps(customer_message(**{"from": None})).encode(), "sender"),
        (json.dumps(customer_message(type="reaction", reaction="😮")).encode(), "reaction"),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "nested-too-deep",
        "not-an-object",
        "another-object",
        "entry-not-a-list",
        "entry-not-an-object",
        "change-without-value",
        "no-metadata",
        "phone-number-id-not-a-string",
        "message-without-id",
        "timestamp-not-a-number",
        "timestamp-a-list",
        "timestamp-out-of-range",
        "no-sender",
        "reaction-not-an-object",
    ],
)
def test_a_malformed_webhook_is_a_parse_error_saying_what_is_wrong(
    raw: bytes, complaint: str
) -> None:
    with pytest.raises(ParseError, match=re.escape(complaint)):
        whatsapp.parse(raw, "event-1", RECEIVED_AT, PYWA_NUMBER)


def test_a_message_without_a_timestamp_is_dated_when_it_was_received() -> None:
    body = case("message", "text")
    del value_of(body)["messages"][0]["timestamp"]
    assert message(body).sent_at == RECEIVED_AT


# --- The fake Cloud API -----------------------------------------------------------------------


@pytest.fixture
def cloud() -> FakeWhatsAppCloud:
    fake = FakeWhatsAppCloud()
    fake.customer_wrote("16505551234")
    return fake


@pytest.fixture
async def connection(cloud: FakeWhatsAppCloud) -> AsyncIterator[Connection]:
    with serving(cloud.app) as base_url:
        async with httpx.AsyncClient(timeout=5) as http:
            yield connect(http, base_url)


def connect(http: httpx.AsyncClient, api_url: str, **settings: Any) -> Connection:
    return Connection(
        channel_account_id=1,
        kind="whatsapp",
        external_id=PHONE_NUMBER_ID,
        credentials={
            "access_token": ACCESS_TOKEN,
            "app_secret": APP_SECRET,
            "verify_token": "token",
        },
        settings=settings,
        api_url=api_url,
        http=http,
    )


def outgoing(**changes: Any) -> Outgoing:
    return dataclasses.replace(
        Outgoing(
            key="outbox-7f3c",
            text="Yes, it comes in blue and red.",
            visibility="private",
            recipient_id="16505551234",
        ),
        **changes,
    )


def outbound_fixture(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        (FIXTURES / "outbound" / f"whatsapp_{name}.json").read_text()
    )
    return found


# --- Sending ----------------------------------------------------------------------------------


async def test_a_text_reply_posts_the_documented_body_with_the_outbox_key(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    sent = await whatsapp.send(connection, outgoing())
    [request] = cloud.requests
    assert (request.method, request.path) == ("POST", f"/{PHONE_NUMBER_ID}/messages")
    assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505551234",
        "type": "text",
        "text": {"preview_url": False, "body": "Yes, it comes in blue and red."},
        "biz_opaque_callback_data": "outbox-7f3c",
    }
    assert sent.external_id.startswith("wamid.")
    assert sent.recipient_id == "16505551234"


async def test_a_reply_to_a_customer_message_quotes_it_as_in_the_documented_request(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    documented = outbound_fixture("send_text_reply")["body"]
    wamid = documented["context"]["message_id"]
    await whatsapp.send(connection, outgoing(reply_to_external_id=wamid))
    assert cloud.requests[0].json == documented | {"biz_opaque_callback_data": "outbox-7f3c"}


async def test_a_template_reopens_a_closed_window_with_its_body_parameters(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    cloud.last_customer_message.clear()
    template = Template(name="order_update", language="en_US", parameters=("#123",))
    sent = await whatsapp.send(connection, outgoing(text="", template=template))
    documented = outbound_fixture("send_template")["body"]
    assert cloud.requests[0].json == documented | {"biz_opaque_callback_data": "outbox-7f3c"}
    assert sent.external_id == "wamid.FAKE000000000001"


async def test_a_template_without_parameters_has_no_components(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    template = Template(name="hello_world", language="en_US")
    await whatsapp.send(connection, outgoing(template=template))
    assert cloud.requests[0].json["template"] == {
        "name": "hello_world",
        "language": {"policy": "deterministic", "code": "en_US"},
    }


async def test_a_free_form_message_after_24_hours_is_refused_as_window_closed(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    cloud.customer_wrote("16505551234", datetime.now(UTC) - timedelta(hours=24, minutes=1))
    with pytest.raises(SendError) as refused:
        await whatsapp.send(connection, outgoing())
    assert refused.value.reason == "window_closed"
    assert not refused.value.retryable
    assert refused.value.detail.startswith("(#131047) Re-engagement message — Message failed")
    assert cloud.accepted == []


async def test_a_customer_who_never_wrote_cannot_get_a_free_form_message(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    with pytest.raises(SendError) as refused:
        await whatsapp.send(connection, outgoing(recipient_id="4915100000000"))
    assert refused.value.reason == "window_closed"


async def test_too_many_requests_is_retried_after_the_time_whatsapp_asks(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    cloud.fail_next(429, rate_limit_hit(), {"Retry-After": "30"})
    with pytest.raises(SendError) as limited:
        await whatsapp.send(connection, outgoing())
    assert (limited.value.reason, limited.value.retryable) == ("rate_limited", True)
    assert limited.value.retry_after == 30.0
    assert "130429" in limited.value.detail


async def test_a_throughput_limit_waits_for_the_business_use_case_estimate(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    usage = {
        WABA_ID: [{"type": "whatsapp", "call_count": 100, "estimated_time_to_regain_access": 2}]
    }
    cloud.fail_next(400, rate_limit_hit(), {"X-Business-Use-Case-Usage": json.dumps(usage)})
    with pytest.raises(SendError) as limited:
        await whatsapp.send(connection, outgoing())
    assert (limited.value.reason, limited.value.retryable) == ("rate_limited", True)
    assert limited.value.retry_after == 120.0


@pytest.mark.parametrize(
    ("status_code", "error", "reason", "retryable"),
    [
        (
            400,
            graph_error(
                400, 131056, "(#131056) (Business Account, Consumer Account) pair rate limit hit"
            ),
            "rate_limited",
            True,
        ),
        (400, graph_error(400, 80007, "(#80007) Rate limit issues"), "rate_limited", True),
        (400, graph_error(400, 131026, "(#131026) Message Undeliverable"), "blocked", False),
        (
            400,
            graph_error(400, 132001, "(#132001) Template name does not exist in the translation"),
            "invalid",
            False,
        ),
        (400, graph_error(400, 132015, "(#132015) Template is Paused"), "invalid", False),
        (400, graph_error(400, 100, "(#100) Invalid parameter"), "invalid", False),
        (
            401,
            graph_error(401, 190, "Error validating access token: Session has expired"),
            "unauthorized",
            False,
        ),
        (
            403,
            graph_error(403, 200, "(#200) Requires whatsapp_business_messaging permission"),
            "unauthorized",
            False,
        ),
        (500, graph_error(500, 131000, "(#131000) Something went wrong"), "unavailable", True),
        (503, graph_error(503, 131016, "(#131016) Service unavailable"), "unavailable", True),
        (502, "<html>Bad Gateway</html>", "unavailable", True),
        (418, None, "invalid", False),
    ],
    ids=[
        "pair-rate",
        "waba-rate",
        "undeliverable",
        "no-template",
        "paused-template",
        "bad-parameter",
        "token-expired",
        "permission",
        "went-wrong",
        "service-unavailable",
        "gateway-html",
        "unknown-4xx",
    ],
)
async def test_graph_errors_are_told_to_the_agent_by_reason(
    cloud: FakeWhatsAppCloud,
    connection: Connection,
    status_code: int,
    error: Any,
    reason: str,
    retryable: bool,
) -> None:
    cloud.fail_next(status_code, error)
    with pytest.raises(SendError) as failed:
        await whatsapp.send(connection, outgoing())
    assert (failed.value.reason, failed.value.retryable) == (reason, retryable)
    assert failed.value.retry_after is None
    if isinstance(error, dict):
        assert error["error"]["message"] in failed.value.detail
        assert str(error["error"]["code"]) in failed.value.detail
    else:
        assert failed.value.detail == f"HTTP {status_code}"


async def test_a_message_held_back_for_the_marketing_limit_is_not_retried_at_once(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    cloud.fail_next(
        400,
        graph_error(
            400,
            131049,
            "(#131049) This message was not delivered to maintain healthy ecosystem engagement.",
        ),
    )
    with pytest.raises(SendError) as held:
        await whatsapp.send(connection, outgoing())
    assert (held.value.reason, held.value.retryable) == ("rate_limited", True)
    assert held.value.retry_after == whatsapp.MARKETING_LIMIT_PAUSE


async def test_a_wrong_access_token_is_unauthorized(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    revoked = {"access_token": "EAAG-revoked", "app_secret": APP_SECRET}
    stale = dataclasses.replace(connection, credentials=revoked)
    with pytest.raises(SendError) as refused:
        await whatsapp.send(stale, outgoing())
    assert (refused.value.reason, refused.value.retryable) == ("unauthorized", False)
    assert "Invalid OAuth access token" in refused.value.detail


async def test_an_unreachable_api_is_unavailable_and_retryable() -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        nowhere = connect(http, f"http://127.0.0.1:{free_port()}")
        with pytest.raises(SendError) as failed:
            await whatsapp.send(nowhere, outgoing())
    assert (failed.value.reason, failed.value.retryable) == ("unavailable", True)


async def test_an_accepted_message_without_an_id_is_not_sent_again(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    cloud.fail_next(200, {"messaging_product": "whatsapp", "messages": []})
    with pytest.raises(SendError) as unnamed:
        await whatsapp.send(connection, outgoing())
    assert (unnamed.value.reason, unnamed.value.retryable) == ("unavailable", False)


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"text": "x" * 4097}, "4,096"),
        ({"text": "   "}, "empty"),
        ({"recipient_id": None}, "recipient"),
    ],
    ids=["too-long", "blank", "no-recipient"],
)
async def test_a_message_whatsapp_would_refuse_is_refused_before_calling(
    cloud: FakeWhatsAppCloud, connection: Connection, changes: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(SendError, match=complaint) as refused:
        await whatsapp.send(connection, outgoing(**changes))
    assert (refused.value.reason, refused.value.retryable) == ("invalid", False)
    assert cloud.requests == []


async def test_a_text_of_exactly_4096_characters_is_sent(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    await whatsapp.send(connection, outgoing(text="é" * 4096))
    assert cloud.requests[0].json["text"]["body"] == "é" * 4096


async def test_an_interrupted_send_cannot_be_looked_up(connection: Connection) -> None:
    lookup = await whatsapp.find_sent(connection, outgoing())
    assert (lookup.external_id, lookup.certain) == (None, False)


async def test_there_is_nothing_to_poll(cloud: FakeWhatsAppCloud, connection: Connection) -> None:
    fetched = await whatsapp.fetch(connection, "cursor-1")
    assert (fetched.events, fetched.cursor) == ([], "cursor-1")
    assert cloud.requests == []


# --- Health -----------------------------------------------------------------------------------


async def test_a_healthy_number_subscribed_to_webhooks_checks_ok(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    health = await whatsapp.check(dataclasses.replace(connection, settings={"waba_id": WABA_ID}))
    assert (health.ok, health.problems, health.subscribed) == (True, (), True)
    assert health.checked_at is not None
    [number, apps] = cloud.requests
    assert number.path == f"/{PHONE_NUMBER_ID}"
    assert number.query["fields"] == whatsapp.PHONE_NUMBER_FIELDS
    assert apps.path == f"/{WABA_ID}/subscribed_apps"


async def test_without_a_business_account_id_the_subscription_is_unknown(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    health = await whatsapp.check(connection)
    assert (health.ok, health.subscribed) == (True, None)
    assert len(cloud.requests) == 1


async def test_a_red_quality_rating_is_reported(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    cloud.phone_number["quality_rating"] = "RED"
    health = await whatsapp.check(connection)
    assert health.ok
    assert any("quality rating RED" in problem for problem in health.problems)


async def test_a_revoked_token_fails_the_check(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    health = await whatsapp.check(
        dataclasses.replace(connection, credentials={"access_token": "x"})
    )
    assert not health.ok
    assert any("access token rejected" in problem for problem in health.problems)


async def test_a_business_account_without_subscribed_apps_gets_no_webhooks(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    cloud.subscribed_apps.clear()
    health = await whatsapp.check(dataclasses.replace(connection, settings={"waba_id": WABA_ID}))
    assert (health.ok, health.subscribed) == (False, False)
    assert any("no webhooks" in problem for problem in health.problems)


async def test_an_expired_user_token_is_reported_with_its_expiry(connection: Connection) -> None:
    settings = {"token_expires_at": "2026-01-01T00:00:00+00:00"}
    health = await whatsapp.check(dataclasses.replace(connection, settings=settings))
    assert not health.ok
    assert health.token_expires_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert any("expired" in problem for problem in health.problems)


async def test_a_token_expiring_later_is_reported_without_a_problem(connection: Connection) -> None:
    later = datetime.now(UTC) + timedelta(days=30)
    settings = {"token_expires_at": later.isoformat()}
    health = await whatsapp.check(dataclasses.replace(connection, settings=settings))
    assert (health.ok, health.problems, health.token_expires_at) == (True, (), later)


async def test_an_unreachable_api_fails_the_check() -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        health = await whatsapp.check(connect(http, f"http://127.0.0.1:{free_port()}"))
    assert not health.ok
    assert "unreachable" in health.problems[0]


# --- Media ------------------------------------------------------------------------------------


async def test_media_is_downloaded_from_the_url_its_id_gives_with_the_token(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    cloud.add_media("65463453", b"\xff\xd8jpeg bytes", "image/jpeg")
    [attachment] = message(case("message", "image")).attachments
    found = await whatsapp.media_request(connection, attachment)
    assert found is not None
    url, headers = found
    assert headers == {"Authorization": f"Bearer {ACCESS_TOKEN}"}
    download = await connection.http.get(url, headers=headers)
    assert download.content == b"\xff\xd8jpeg bytes"
    assert download.headers["content-type"] == "image/jpeg"


async def test_media_gone_or_without_an_id_cannot_be_downloaded(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    assert await whatsapp.media_request(connection, {"type": "image", "media_id": "404404"}) is None
    assert await whatsapp.media_request(connection, {"type": "location", "latitude": 1.0}) is None
    assert await whatsapp.media_request(connection, {"type": "image", "media_id": "../me"}) is None
    assert [request.path for request in cloud.requests] == ["/404404"]


async def media_failure(
    cloud: FakeWhatsAppCloud, connection: Connection, status: int, error: Any
) -> SendError:
    cloud.fail_next(status, error)
    with pytest.raises(SendError) as failed:
        await whatsapp.media_request(connection, {"type": "image", "media_id": "65463453"})
    return failed.value


async def test_a_media_lookup_during_an_outage_is_tried_again_later(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    failed = await media_failure(
        cloud, connection, 500, graph_error(500, 131000, "(#131000) Something went wrong")
    )
    assert (failed.reason, failed.retryable) == ("unavailable", True)


async def test_a_media_lookup_with_a_revoked_token_says_so(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    failed = await media_failure(
        cloud, connection, 401, graph_error(401, 190, "Session has expired")
    )
    assert (failed.reason, failed.retryable) == ("unauthorized", False)


# --- App secret proof -------------------------------------------------------------------------


async def test_every_graph_call_proves_the_app_secret_for_apps_that_require_it(
    cloud: FakeWhatsAppCloud, connection: Connection
) -> None:
    cloud.require_proof = True
    cloud.add_media("65463453", b"jpeg", "image/jpeg")
    await whatsapp.send(connection, outgoing())
    health = await whatsapp.check(dataclasses.replace(connection, settings={"waba_id": WABA_ID}))
    found = await whatsapp.media_request(connection, {"type": "image", "media_id": "65463453"})
    assert health.ok
    assert found is not None
    expected = hmac.new(APP_SECRET.encode(), ACCESS_TOKEN.encode(), "sha256").hexdigest()
    assert {request.query["appsecret_proof"] for request in cloud.requests} == {expected}
    assert len(cloud.requests) == 4
