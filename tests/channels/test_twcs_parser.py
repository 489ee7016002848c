"""The Customer Support on Twitter parser: one CSV row (as JSON) becomes one public X message."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from allo.channels import twcs
from allo.channels.inbound import Author, ParseError
from allo.channels.registry import parser_for

RECEIVED_AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def row(**changes: str) -> dict[str, str]:
    return {
        "tweet_id": "119237",
        "author_id": "105834",
        "inbound": "True",
        "created_at": "Tue Oct 31 22:10:47 +0000 2017",
        "text": "@AppleSupport my iPhone keeps restarting",
        "response_tweet_id": "119236",
        "in_response_to_tweet_id": "",
    } | changes


def parse(data: dict[str, object] | bytes, external_id: str = "119237"):  # type: ignore[no-untyped-def]
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    [message] = twcs.parse(raw, external_id, RECEIVED_AT)
    return message


def test_the_registry_names_the_twcs_parser() -> None:
    assert parser_for("twcs") is twcs.parse


def test_a_customer_tweet_is_an_inbound_public_message_from_its_author() -> None:
    message = parse(row())
    assert message.external_id == "119237"
    assert message.contact == Author(platform_id="105834", handle="105834")
    assert (message.direction, message.visibility) == ("in", "public")
    assert message.text == "@AppleSupport my iPhone keeps restarting"
    assert message.sent_at == datetime(2017, 10, 31, 22, 10, 47, tzinfo=UTC)
    assert message.sent_at.utcoffset() is not None
    assert message.reply_to_external_id is None
    assert message.author_name is None


def test_the_created_at_offset_is_honoured() -> None:
    message = parse(row(created_at="Wed Nov 01 00:10:47 +0200 2017"))
    assert message.sent_at == datetime(2017, 10, 31, 22, 10, 47, tzinfo=UTC)


def test_a_brand_reply_names_the_customer_of_its_leading_mention() -> None:
    message = parse(
        row(
            author_id="AppleSupport",
            inbound="False",
            text="@105834 Let's fix this. Which iOS version?",
            in_response_to_tweet_id="119237",
        )
    )
    assert message.contact == Author(platform_id="105834", handle="105834")
    assert (message.direction, message.author_name) == ("out", "AppleSupport")
    assert message.reply_to_external_id == "119237"


@pytest.mark.parametrize(
    ("text", "customer"),
    [
        ("@applesupport @105834 thanks!", "105834"),
        ("@105834 @AppleSupport see above", "105834"),
        ("@105834@115712 both of you", "105834"),
        ("   @105834 leading spaces are not a leading mention", None),
        ("Thanks @105834, we'll DM you", None),
        ("@AppleSupport only ourselves", None),
        ("No mention at all", None),
    ],
)
def test_only_leading_mentions_other_than_the_brand_name_the_customer(
    text: str, customer: str | None
) -> None:
    message = parse(row(author_id="AppleSupport", inbound="False", text=text))
    if customer is None:
        assert message.contact is None
    else:
        assert message.contact is not None and message.contact.platform_id == customer


def test_ids_written_with_a_trailing_dot_zero_are_normalised() -> None:
    assert twcs.tweet_id("119236.0") == "119236"
    assert twcs.tweet_id(" 119236 ") == "119236"
    assert twcs.tweet_id("1190") == "1190"
    message = parse(row(in_response_to_tweet_id="119236.0"))
    assert message.reply_to_external_id == "119236"


def test_the_message_keeps_the_event_external_id() -> None:
    assert parse(row(), external_id="ev-1").external_id == "ev-1"


def test_nul_bytes_become_replacement_characters() -> None:
    message = parse(row(text="av\x00ant", author_id="10\x005"))
    assert message.text == "av\ufffdant"
    assert message.contact is not None and message.contact.platform_id == "10\ufffd5"


def test_unicode_text_is_kept_intact() -> None:
    text = "@AppleSupport 👩\u200d👩\u200d👧 مرحبا e\u0301"
    raw = json.dumps(row(text=text), ensure_ascii=False).encode()
    assert parse(raw).text == text


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (b'{"tweet_id": "1", ', "JSON"),
        (b"\xff\xfe not utf-8", "JSON"),
        (b"[1, 2]", "tweet_id"),
        (json.dumps({k: v for k, v in row().items() if k != "created_at"}).encode(), "created_at"),
        (json.dumps(row() | {"tweet_id": 119237}).encode(), "tweet_id"),
        (json.dumps(row(created_at="2017-10-31 22:10:47")).encode(), "created_at"),
        (json.dumps(row(created_at="Tue Oct 31 22:10:47 2017")).encode(), "created_at"),
        (json.dumps(row(inbound="yes")).encode(), "inbound"),
        (json.dumps(row(inbound="true")).encode(), "inbound"),
        (json.dumps(row(inbound="")).encode(), "inbound"),
    ],
    ids=[
        "bad-json",
        "not-utf8",
        "not-an-object",
        "missing-column",
        "non-string-column",
        "iso-date",
        "date-without-offset",
        "inbound-yes",
        "inbound-lowercase",
        "inbound-empty",
    ],
)
def test_a_malformed_row_is_a_parse_error_naming_the_field(raw: bytes, names: str) -> None:
    with pytest.raises(ParseError, match=names):
        twcs.parse(raw, "1", RECEIVED_AT)


def test_the_registry_refuses_an_unknown_parser() -> None:
    with pytest.raises(ParseError, match="no parser named 'fax'"):
        parser_for("fax")


def test_a_customer_row_without_an_author_is_a_parse_error_naming_author_id() -> None:
    with pytest.raises(ParseError, match="author_id"):
        twcs.parse(json.dumps(row(author_id="  ")).encode(), "1", RECEIVED_AT)
