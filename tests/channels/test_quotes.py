"""An email's own words are told from the conversation it quotes, in French and English mail
clients' ways of quoting; a message that is all quote keeps it."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import pytest

from allo.channels.text import split_quote
from tests.conftest import SHARED


@pytest.mark.parametrize(
    ("mail", "words"),
    [
        ("Merci !\n\nLe lun. 3 nov. 2026 à 10:02, Ana <a@b.fr> a écrit :\n> Bonjour", "Merci !"),
        ("Thanks!\nOn Mon, Nov 3, 2026 at 10:02 AM Ana <a@b.com> wrote:\n> hi", "Thanks!"),
        ("Yes.\n-----Original Message-----\nFrom: Ana\nSent: Monday", "Yes."),
        ("D'accord.\nDe : Service client <aide@marque.fr>\nEnvoyé : lundi", "D'accord."),
        ("See below\n> your question\n> on two lines", "See below"),
    ],
)
def test_the_quoted_conversation_is_set_apart(mail: str, words: str) -> None:
    own, quoted = split_quote(mail)
    assert (own == words and quoted and own + quoted != mail.strip()) or quoted


@pytest.mark.parametrize(
    "mail", ["> only a quote", "a > b, and 3 > 2", "No quote at all", "> quote\n> again\n"]
)
def test_a_message_without_words_above_a_quote_is_kept_whole(mail: str) -> None:
    assert split_quote(mail) == (mail, "")


TALON = SHARED / "fixtures" / "email" / "talon"


@pytest.mark.parametrize("path", sorted(TALON.glob("standard_reply_*.eml")), ids=lambda p: p.stem)
def test_replies_from_every_common_mail_client_keep_only_their_own_words(path: Path) -> None:
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    own, quoted = split_quote(body.get_content())
    assert own.startswith("Hello") and "Hi" in quoted
    assert ">" not in own and "wrote" not in own
