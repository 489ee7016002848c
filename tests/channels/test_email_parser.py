"""The email parser on real-world mail (Chatwoot's and Talon's fixtures) and on hostile mail."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from allo.channels import email
from allo.channels.inbound import InboundMessage, ParseError
from allo.channels.registry import parser_for
from tests.conftest import SHARED

FIXTURES = SHARED / "fixtures" / "email"
EMLS = sorted([*FIXTURES.glob("chatwoot/*.eml"), *FIXTURES.glob("talon/*.eml")])
WITHOUT_SENDER = {"bounced_with_no_from.eml"}
RECEIVED_AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
EVENT_HANDLER = re.compile(r"<[^>]*\son\w+\s*=", re.IGNORECASE)


def parse_file(name: str) -> InboundMessage:
    [path] = [p for p in EMLS if p.name == name]
    return parse_bytes(path.read_bytes())


def parse_bytes(raw: bytes) -> InboundMessage:
    [message] = email.parse(raw, email.message_id(raw), RECEIVED_AT)
    return message


def test_the_fixtures_are_there() -> None:
    names = {p.name for p in EMLS}
    assert len(EMLS) >= 26
    assert {"in_reply_to.eml", "only_html.eml", "standard_reply_gmail.eml"} <= names


def test_the_registry_names_the_email_parser() -> None:
    assert parser_for("email") is email.parse


@pytest.mark.parametrize("path", EMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_fixture_is_one_safe_message_or_a_parse_error_for_a_missing_sender(
    path: Path,
) -> None:
    raw = path.read_bytes()
    if path.name in WITHOUT_SENDER:
        with pytest.raises(ParseError, match="From"):
            email.parse(raw, email.message_id(raw), RECEIVED_AT)
        return
    messages = email.parse(raw, email.message_id(raw), RECEIVED_AT)
    assert len(messages) == 1
    [message] = messages
    assert message.contact is not None
    address = message.contact.platform_id
    assert "@" in address and address == address.lower() == message.contact.email
    assert message.external_id and "<" not in message.external_id
    assert message.sent_at.tzinfo is not None and message.sent_at.utcoffset() is not None
    assert (message.direction, message.visibility) == ("in", "private")
    assert message.text.strip()
    assert "\x00" not in message.text
    if message.html is not None:
        assert "<script" not in message.html.lower()
        assert not EVENT_HANDLER.search(message.html)
        assert "javascript:" not in message.html.lower()
    for attachment in message.attachments:
        assert set(attachment) == {"filename", "content_type", "size"}
        assert isinstance(attachment["size"], int) and attachment["size"] >= 0


def test_the_message_id_is_the_external_id_and_a_digest_stands_in_when_it_is_missing() -> None:
    gmail = (FIXTURES / "talon" / "standard_reply_gmail.eml").read_bytes()
    assert email.message_id(gmail) == (
        "CAKsfaBW4hj0Gek6TwbR3erng4P1y0CZzJ0d=pXtCNnYnbe7PLg@mail.gmail.com"
    )
    outlook = (FIXTURES / "talon" / "standard_reply_outlook.eml").read_bytes()
    digest = email.message_id(outlook)
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert email.message_id(outlook) == digest
    assert email.message_id(outlook + b"\n") != digest


def test_in_reply_to_and_references_are_read_without_angle_brackets() -> None:
    message = parse_file("in_reply_to.eml")
    assert message.external_id == "0CB459E0-0336-41DA-BC88-E6E28C697DDBF@chatwoot.com"
    assert message.reply_to_external_id == "0CB459E0-0336-41DA-BC88-E6E28C697DDB@chatwoot.com"
    assert message.references == ("4e6e35f5a38b4_479f13bb90078178@small-app-01.mail",)
    assert message.subject == "Discussion: Let's debate these attachments"
    assert message.contact is not None and message.contact.display_name == "Sony Mathew"
    assert message.sent_at == datetime(2020, 4, 20, 8, 20, 20, tzinfo=UTC)


def test_every_references_id_is_kept_in_order() -> None:
    message = parse_file("references.eml")
    assert message.reply_to_external_id == "4e6e35f5a38b4_479f13bb90078178@small-app-01.mail"
    assert message.references == (
        "4e6e35f5a38b4_479f13bb90078178@small-app-01.mail",
        "test-reference-id",
    )
    assert message.text == "References Email"


def test_a_folded_in_reply_to_with_two_ids_answers_the_first() -> None:
    message = parse_file("multiple_in_reply_to.eml")
    assert message.reply_to_external_id == "4e6e35f5a38b4_479f13bb90078171@small-app-01.mail"
    assert message.references == (
        "4e6e35f5a38b4_479f13bb90078178@small-app-01.mail",
        "4e6e35f5a38b4_479f13bb90078131@small-app-01.mail",
    )
    assert message.contact is not None and message.contact.platform_id == "sony@chatwoot.com"


def test_encoded_words_and_base64_utf8_bodies_decode_to_arabic_text() -> None:
    message = parse_file("non_utf_encoded_mail.eml")
    assert message.text == "أنظروا، أنا أحتاجها فقط لتقوم بالتدقيق في مقالتي الشخصية"
    assert message.subject is not None and message.subject.strip() == "أهلين عميلنا الكريم"
    assert message.contact is not None and message.contact.display_name == "متجر سوق نت"
    assert message.reply_to_external_id == "4e6e35f5a38b4_479f13bb90078178@small-app-01.mail"


def test_a_base64_utf8_body_decodes_to_cyrillic_text() -> None:
    message = parse_file("standard_reply_android.eml")
    assert "пользователь" in message.text and "написал" in message.text


def test_latin_1_mail_decodes_to_the_right_accented_text() -> None:
    raw = (
        b"From: =?iso-8859-1?q?Ren=E9e_Dupr=E9?= <Renee.Dupre@Example.FR>\r\n"
        b"To: care@brand.example\r\n"
        b"Subject: =?iso-8859-1?q?R=E9clamation_=E0_propos_du_d=E9bit?=\r\n"
        b"Date: Mon, 2 Mar 2026 10:00:00 +0100\r\n"
        b"Message-ID: <latin1@example.fr>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"Le d=E9bit est tomb=E9 =E0 z=E9ro, =E7a d=E9range. Na=EFve question : o=F9 ?\r\n"
    )
    message = parse_bytes(raw)
    assert message.text == "Le débit est tombé à zéro, ça dérange. Naïve question : où ?"
    assert message.subject == "Réclamation à propos du débit"
    assert message.contact is not None
    assert message.contact.display_name == "Renée Dupré"
    assert message.contact.platform_id == "renee.dupre@example.fr"
    assert message.sent_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_windows_1252_8bit_mail_decodes_euro_signs_and_ligatures() -> None:
    raw = (
        b"From: client@example.fr\r\n"
        b"Subject: Facture\r\n"
        b"Message-ID: <cp1252@example.fr>\r\n"
        b"Content-Type: text/plain; charset=windows-1252\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + "Vous m’avez facturé 12 € pour un œuf.".encode("cp1252")
    )
    assert parse_bytes(raw).text == "Vous m’avez facturé 12 € pour un œuf."


def test_an_unknown_charset_is_decoded_with_replacement_characters_not_refused() -> None:
    raw = (
        b"From: client@example.fr\r\n"
        b"Content-Type: text/plain; charset=x-no-such-charset\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"caf\xe9 ok\r\n"
    )
    assert parse_bytes(raw).text == "caf\ufffd ok"


def test_attachments_are_listed_with_name_type_and_decoded_size() -> None:
    message = parse_file("multiple_attachments.eml")
    assert len(message.attachments) == 30
    assert message.attachments[0] == {
        "filename": "Screenshot 2023-05-03 at 3.32.04 PM.png",
        "content_type": "image/png",
        # The fixture's attachment parts carry no data: the decoded size is truly 0.
        "size": 0,
    }
    assert all(a["content_type"] == "image/png" for a in message.attachments)
    assert all(str(a["filename"]).startswith("Screenshot 2023-") for a in message.attachments)
    assert message.text.startswith("Attaching 30 files:")


def test_attachments_without_a_filename_are_still_listed() -> None:
    message = parse_file("attachments_without_filename.eml")
    assert [(a["filename"], a["content_type"]) for a in message.attachments] == [
        ("", "image/png"),
        ("", "image/png"),
    ]


def test_attachments_nested_in_an_alternative_related_part_are_listed() -> None:
    message = parse_file("in_reply_to.eml")
    assert [a["filename"] for a in message.attachments] == ["avatar1.jpeg", "avatar2.jpg"]


def test_inline_images_keep_their_cid_links_and_are_listed() -> None:
    message = parse_file("mail_with_inline_images.eml")
    assert message.html is not None and 'src="cid:ii_lm7fuura0"' in message.html
    assert [a["filename"] for a in message.attachments] == [
        "poster (8).jpg",
        "poster (7).jpg",
        "poster (1).jpg",
    ]


def test_an_html_only_mail_gets_its_text_from_the_html() -> None:
    message = parse_file("only_html.eml")
    assert message.text == "This is html only mail"
    assert message.html is not None and "<h1>" in message.html


def test_a_mail_without_a_date_is_dated_when_it_was_received() -> None:
    assert parse_file("mail_with_no_date.eml").sent_at == RECEIVED_AT


def test_a_date_without_a_time_zone_is_read_as_utc() -> None:
    raw = b"From: a@example.com\r\nDate: Mon, 2 Mar 2026 10:00:00 -0000\r\n\r\nhi\r\n"
    assert parse_bytes(raw).sent_at == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_an_unreadable_date_falls_back_to_the_reception_time() -> None:
    raw = b"From: a@example.com\r\nDate: yesterday around noon\r\n\r\nhi\r\n"
    assert parse_bytes(raw).sent_at == RECEIVED_AT


def test_the_sender_address_is_lowercased_and_a_malformed_to_is_ignored() -> None:
    message = parse_file("mail_with_invalid_to.eml")
    assert message.contact is not None
    assert (message.contact.platform_id, message.contact.display_name) == (
        "mark@planetmars.com",
        "Mark Whatney",
    )
    assert message.text == "hey v, can i get some help over here?"


@pytest.mark.parametrize(
    "sender", [None, "", "Mail Delivery System", '"" (Mail Delivery System)', "<>"]
)
def test_a_mail_without_a_sender_address_is_a_parse_error(sender: str | None) -> None:
    header = b"" if sender is None else b"From: " + sender.encode() + b"\r\n"
    raw = header + b"Subject: bounce\r\n\r\nreturned\r\n"
    with pytest.raises(ParseError, match="From"):
        email.parse(raw, "x", RECEIVED_AT)


def hostile() -> bytes:
    mail = EmailMessage()
    mail["From"] = "Mallory <MALLORY@Evil.Example>"
    mail["To"] = "care@brand.example"
    mail["Subject"] = "<script>alert('subject')</script>"
    mail["Message-ID"] = "<hostile@evil.example>"
    mail.set_content(
        '<p>Bonjour<script>alert(1)</script><img src=x onerror="alert(2)">'
        '<a href="javascript:alert(3)">cliquez</a> '
        '<a href="https://ok.example/suivi" onclick="steal()">suivi</a>'
        "<style>p { display: none }</style></p>"
        '<iframe src="https://evil.example"></iframe>',
        subtype="html",
    )
    mail.add_attachment(
        b"%PDF-1.4 fake but not empty",
        maintype="application",
        subtype="pdf",
        filename="<img src=x onerror=alert(1)>.pdf",
    )
    return mail.as_bytes()


def test_hostile_html_is_sanitised_and_a_hostile_filename_is_kept_as_text() -> None:
    message = parse_bytes(hostile())
    assert message.html is not None
    lowered = message.html.lower()
    for dangerous in ("<script", "onerror", "onclick", "javascript:", "<iframe", "<style"):
        assert dangerous not in lowered, dangerous
    assert 'href="https://ok.example/suivi"' in message.html
    assert "cliquez" in message.text and "suivi" in message.text
    assert "alert" not in message.text and "display" not in message.text
    assert message.attachments == (
        {
            "filename": "<img src=x onerror=alert(1)>.pdf",
            "content_type": "application/pdf",
            "size": len(b"%PDF-1.4 fake but not empty"),
        },
    )
    # Subjects are plain text, kept verbatim; escaping is the job of whoever displays them.
    assert message.subject == "<script>alert('subject')</script>"
    assert message.contact is not None and message.contact.platform_id == "mallory@evil.example"


def test_nul_bytes_in_a_body_become_replacement_characters() -> None:
    raw = b"From: a@example.com\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nav\x00ant\r\n"
    assert parse_bytes(raw).text == "av\ufffdant"
