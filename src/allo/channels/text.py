"""Customer text made safe to store and to show."""

from __future__ import annotations

import html as html_lib
import re

import nh3

REPLACEMENT_CHARACTER = "\ufffd"
# Block elements separate words even where the HTML has no space between them.
BLOCK_TAG = re.compile(
    r"</?(?:p|div|br|hr|li|ul|ol|tr|td|th|table|h[1-6]|blockquote|pre|section|article)\b[^>]*>",
    re.IGNORECASE,
)


def clean_text(value: str) -> str:
    """Replace NUL, which PostgreSQL text cannot hold, with U+FFFD; everything else stays intact.

    The raw event keeps the exact bytes, so nothing is lost by this.
    """
    return value.replace("\x00", REPLACEMENT_CHARACTER)


def sanitise_html(value: str) -> str:
    """HTML reduced to inert markup: no scripts, handlers, styles or dangerous URL schemes."""
    return nh3.clean(clean_text(value), url_schemes={"http", "https", "mailto", "cid"})


def html_to_text(value: str) -> str:
    """The visible text of an HTML body, for search and for channels without markup."""
    spaced = BLOCK_TAG.sub(" ", clean_text(value))
    stripped = nh3.clean(spaced, tags=set(), clean_content_tags={"script", "style"})
    return " ".join(html_lib.unescape(stripped).split())
