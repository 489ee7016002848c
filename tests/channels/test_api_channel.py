"""The generic API channel's parser: what a pushed JSON message may hold and what it becomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from allo.channels import api
from allo.channels.inbound import Author, ParseError
from allo.channels.registry import parser_for

RECEIVED_AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def payload(**fields: object) -> dict[str, object]:
    return {"external_id": "m-1", "contact": {"id": "cust-1"}, "text": "hello"} | fields


def parse(data: dict[str, object], external_id: str = "m-1"):  # type: ignore[no-untyped-def]
    [message] = api.parse(json.dumps(data).encode(), external_id, RECEIVED_AT)
    return message


def refused(data: dict[str, object] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    with pytest.raises(ParseError) as caught:
        api.parse(raw, "m-1", RECEIVED_AT)
    return str(caught.value)


def test_the_registry_names_the_api_parser() -> None:
    assert parser_for("api") is api.parse


def test_every_field_of_a_full_payload_is_carried_over() -> None:
    message = parse(
        {
            "external_id": "m-9",
            "contact": {
                "id": "cust-9",
                "name": "Camille",
                "handle": "@camille",
                "email": "camille@example.fr",
                "phone": "+33611111111",
                "followers": 1200,
                "verified": True,
                "language": "fr",
            },
            "text": "Ma fibre est coupée",
            "direction": "out",
            "visibility": "public",
            "in_reply_to": "m-8",
            "references": ["m-7", "m-8"],
            "thread_id": "post-1",
            "subject": "Fibre",
            "sent_at": "2026-03-01T08:30:00+01:00",
            "author_name": "Agent Smith",
            "attachments": [{"url": "https://cdn.example/a.png", "content_type": "image/png"}],
        },
        external_id="m-9",
    )
    assert message.contact == Author(
        platform_id="cust-9",
        handle="@camille",
        display_name="Camille",
        followers=1200,
        verified=True,
        email="camille@example.fr",
        phone="+33611111111",
        language="fr",
    )
    assert (message.external_id, message.text, message.html) == ("m-9", "Ma fibre est coupée", None)
    assert (message.direction, message.visibility) == ("out", "public")
    assert (message.reply_to_external_id, message.references) == ("m-8", ("m-7", "m-8"))
    assert (message.thread_key, message.subject, message.author_name) == (
        "post-1",
        "Fibre",
        "Agent Smith",
    )
    assert message.sent_at == datetime(2026, 3, 1, 7, 30, tzinfo=UTC)
    assert message.attachments == (
        {"url": "https://cdn.example/a.png", "content_type": "image/png"},
    )


def test_defaults_are_an_inbound_private_message_sent_when_received() -> None:
    message = parse(payload())
    assert (message.direction, message.visibility) == ("in", "private")
    assert message.sent_at == RECEIVED_AT
    assert message.contact == Author(platform_id="cust-1")
    assert (message.reply_to_external_id, message.references, message.thread_key) == (
        None,
        (),
        None,
    )
    assert message.attachments == ()


def test_a_sent_at_without_a_time_zone_is_utc() -> None:
    message = parse(payload(sent_at="2026-03-01T08:30:00"))
    assert message.sent_at == datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    assert message.sent_at.utcoffset() == timedelta(0)


def test_a_sent_at_with_an_offset_keeps_its_instant() -> None:
    message = parse(payload(sent_at="2026-03-01T08:30:00-05:00"))
    assert message.sent_at == datetime(2026, 3, 1, 8, 30, tzinfo=timezone(timedelta(hours=-5)))


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"surprise": 1}, "surprise"),
        ({"contact": {"id": "c", "nickname": "x"}}, "nickname"),
        ({"attachments": [{"url": "https://a.example/x", "bytes": "AAAA"}]}, "bytes"),
    ],
)
def test_unknown_fields_are_refused_by_name(extra: dict[str, object], field: str) -> None:
    assert field in refused(payload(**extra))


@pytest.mark.parametrize(
    "content",
    [{}, {"text": ""}, {"text": "   \n\t"}, {"text": None}, {"html": ""}, {"attachments": []}],
    ids=["nothing", "empty-text", "blank-text", "null-text", "empty-html", "no-attachments"],
)
def test_a_message_needs_text_html_or_attachments(content: dict[str, object]) -> None:
    data: dict[str, object] = {"contact": {"id": "c"}} | content
    assert "needs text, html or attachments" in refused(data)


def test_attachments_alone_are_a_message_with_empty_text() -> None:
    message = parse(
        {"contact": {"id": "c"}, "attachments": [{"url": "https://a.example/x.pdf", "size": 3}]}
    )
    assert message.text == ""
    assert message.attachments == ({"url": "https://a.example/x.pdf", "size": 3},)


def test_html_only_gets_text_derived_from_the_sanitised_html() -> None:
    message = parse(
        {
            "contact": {"id": "c"},
            "html": '<p onclick="x()">Bonjour&nbsp;! <b>Merci</b><script>alert(1)</script></p>',
        }
    )
    assert message.html is not None
    assert "<script" not in message.html and "onclick" not in message.html
    assert message.text == "Bonjour ! Merci"


def test_text_derived_from_html_keeps_block_elements_apart() -> None:
    message = parse(
        {"contact": {"id": "c"}, "html": "<p>Bonjour</p><p>Merci</p><div>Camille</div>"}
    )
    assert message.text == "Bonjour Merci Camille"


def test_blank_text_next_to_html_is_replaced_by_the_html_text() -> None:
    message = parse({"contact": {"id": "c"}, "text": "  ", "html": "<b>Allô</b>"})
    assert message.text == "Allô"


def test_text_next_to_html_is_kept_as_sent() -> None:
    message = parse({"contact": {"id": "c"}, "text": "plain", "html": "<b>rich</b>"})
    assert (message.text, message.html) == ("plain", "<b>rich</b>")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"contact": {"id": ""}, "text": "x"}, "id"),
        ({"contact": {"name": "no id"}, "text": "x"}, "id"),
        ({"text": "no contact"}, "contact"),
        (payload(direction="sideways"), "direction"),
        (payload(visibility="note"), "visibility"),
        (payload(contact={"id": "c", "followers": -1}), "followers"),
        (payload(sent_at="yesterday"), "sent_at"),
        (payload(references=["ok", ""]), "references"),
        (payload(external_id="x" * 999), "external_id"),
        (payload(attachments=[{"content_type": "image/png"}]), "url"),
    ],
)
def test_invalid_fields_are_refused_by_name(data: dict[str, object], field: str) -> None:
    assert field in refused(data)


@pytest.mark.parametrize("raw", [b'{"contact": ', b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_refused(raw: bytes) -> None:
    refused(raw)


def test_nul_bytes_become_replacement_characters_everywhere_they_are_text() -> None:
    message = parse(
        {
            "contact": {"id": "c\x00d", "name": "Ca\x00mille"},
            "text": "av\x00ant",
            "subject": "su\x00jet",
            "html": "<p>h\x00tml</p>",
        }
    )
    assert message.text == "av\ufffdant"
    assert message.subject == "su\ufffdjet"
    assert message.contact is not None
    assert (message.contact.platform_id, message.contact.display_name) == (
        "c\ufffdd",
        "Ca\ufffdmille",
    )
    assert message.html is not None and "\x00" not in message.html


def test_empty_optional_contact_fields_are_left_unknown() -> None:
    message = parse(payload(contact={"id": "c", "name": "", "email": "", "handle": ""}))
    assert message.contact == Author(platform_id="c")
