"""Personal data in a message: card numbers, IBANs, phone numbers, emails, postal addresses.

Found so that a public reply never repeats them and an agent is warned before posting one.
Offsets are in the text as given. Matching reads it with invisible characters dropped and
NFKC applied (fullwidth digits count), so "4970<zero-width space>1012…" is still a card.
Every pattern is bounded, so 100 KB of digits costs linear time, not backtracking.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

from phonenumbers import Leniency, PhoneNumberMatcher
from stdnum import iban, luhn, numdb

from allo.triage.rules import INVISIBLE


@dataclass(frozen=True, slots=True)
class PiiMatch:
    kind: str
    start: int
    end: int
    text: str


class _Span(NamedTuple):
    kind: str
    start: int
    end: int


def find_pii(text: str) -> list[PiiMatch]:
    """Card numbers, IBANs, phone numbers, emails and addresses in `text`, in text order.
    Where two overlap, the stronger evidence wins: iban, card, email, phone, then address."""
    view = _View.of(text)
    if not _CLUE.search(view.text):
        return []
    kept = _without_overlaps([*_ibans(view.text), *_cards(view.text), *_emails(view.text)])
    # Asking phonenumbers is the costly step: what is already a card or an IBAN is not asked.
    kept = _without_overlaps([*kept, *_phones(view.text, kept), *_addresses(view.text)])
    matches = []
    for span in kept:
        start, end = view.original_span(span.start, span.end)
        matches.append(PiiMatch(span.kind, start, end, text[start:end]))
    return matches


def pii_kinds(text: str) -> list[str]:
    """The kinds of personal data in `text`, sorted, each once."""
    return sorted({match.kind for match in find_pii(text)})


def redact(text: str) -> str:
    """`text` with each piece of personal data replaced by its kind: "[card]", "[email]"…"""
    parts, position = [], 0
    for match in find_pii(text):
        parts += [text[position : match.start], f"[{match.kind}]"]
        position = match.end
    return "".join([*parts, text[position:]])


@dataclass(frozen=True, slots=True)
class _View:
    """The text patterns read, and where each of its characters came from in the original
    (None where they are the same text)."""

    text: str
    origin: list[int] | None

    @classmethod
    def of(cls, text: str) -> _View:
        if unicodedata.is_normalized("NFKC", text) and text == text.translate(INVISIBLE):
            return cls(text, None)
        # Character by character, so every folded character knows its source.
        pieces, origin = [], []
        for index, char in enumerate(text):
            piece = unicodedata.normalize("NFKC", char).translate(INVISIBLE)
            pieces.append(piece)
            origin += [index] * len(piece)
        return cls("".join(pieces), origin)

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        if self.origin is None:
            return start, end
        return self.origin[start], self.origin[end - 1] + 1


# Every kind found here holds a digit, or an "@" for an email: most messages hold neither.
_CLUE = re.compile("[0-9@]")
_PRIORITY = {"iban": 0, "card": 1, "email": 2, "phone": 3, "address": 4}


def _without_overlaps(found: list[_Span]) -> list[_Span]:
    kept: list[_Span] = []  # in text order
    for span in sorted(found, key=lambda span: _PRIORITY[span.kind]):
        if not _overlaps(kept, span.start, span.end):
            bisect.insort(kept, span, key=lambda kept_span: kept_span.start)
    return kept


def _overlaps(spans: list[_Span], start: int, end: int) -> bool:
    """Whether [start, end) overlaps one of `spans`, which are in text order and apart."""
    at = bisect.bisect_left(spans, start, key=lambda span: span.start)
    return (at > 0 and spans[at - 1].end > start) or (at < len(spans) and spans[at].start < end)


# Card numbers: 13 to 19 digits, alone or in groups of three or more (4-4-4-4, Amex 4-6-5),
# starting with 2 to 6 as every card network's numbers do, and Luhn-valid.
_DIGIT_RUN = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_DIGITS = re.compile(r"[0-9]+")


def _cards(text: str) -> Iterator[_Span]:
    for run in _DIGIT_RUN.finditer(text):
        groups = [group.span() for group in _DIGITS.finditer(text, run.start(), run.end())]
        first = 0
        while first < len(groups):
            last = _card_end(text, groups, first)
            if last is None:
                first += 1
                continue
            yield _Span("card", groups[first][0], groups[last][1])
            first = last + 1


def _card_end(text: str, groups: list[tuple[int, int]], first: int) -> int | None:
    """The last group of the longest card number that starts at group `first`, if any.
    Longest first, so "4970 1012 3456 7890 123" (a CVV after the number) still finds it."""
    if text[groups[first][0]] not in "23456":
        return None
    lasts, digits = [], 0
    for last in range(first, len(groups)):
        start, end = groups[last]
        digits += end - start
        if end - start < 3 or digits > 19:
            break
        if digits >= 13:
            lasts.append(last)
    for last in reversed(lasts):
        number = re.sub("[ -]", "", text[groups[first][0] : groups[last][1]])
        if luhn.is_valid(number):
            return last
    return None


# IBANs: a country code, two check digits, then 11 to 30 letters or digits, in groups or not.
# The pattern takes as much as an IBAN could hold; the IBAN is the prefix of the length its
# country uses, if it ends between two groups and passes python-stdnum's checks.
_IBAN = re.compile(r"(?<![0-9A-Za-z])[A-Za-z]{2}[0-9]{2}(?:[ -]?[0-9A-Za-z]){11,30}")
_BBAN_PART = re.compile(r"([0-9]+)!")


def _ibans(text: str) -> Iterator[_Span]:
    position = 0
    while found := _IBAN.search(text, position):
        end = _iban_end(text, found)
        if end is None:
            position = found.start() + 1
            continue
        yield _Span("iban", found.start(), end)
        position = end


def _iban_end(text: str, found: re.Match[str]) -> int | None:
    length = _iban_length(found[0][:2].upper())
    characters = [index for index, char in enumerate(found[0]) if char not in " -"]
    if length is None or len(characters) < length:
        return None
    end = found.start() + characters[length - 1] + 1
    if end < len(text) and text[end].isascii() and text[end].isalnum():
        return None  # the prefix ends inside a group
    return end if iban.is_valid(text[found.start() : end]) else None


@cache
def _iban_length(country: str) -> int | None:
    """How long the country's IBANs are, from python-stdnum's registry; None if it has none.
    Checking only that length keeps a long run of IBAN-like words cheap."""
    bban = numdb.get("iban").info(country)[0][1].get("bban")
    return 4 + sum(int(part) for part in _BBAN_PART.findall(bban)) if bban else None


# The local part and each domain label are bounded, and a match starts only where a local
# part starts, so a long run of letters is read once.
_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}"
    r"\.[A-Za-z]{2,24}(?![\w-])"
)


def _emails(text: str) -> Iterator[_Span]:
    for found in _EMAIL.finditer(text):
        yield _Span("email", found.start(), found.end())


# Something that may be a phone number: 7 to 17 digits with the separators people type, not
# inside a longer run of digits (a run too long for a phone number is no phone number).
# phonenumbers then decides, for France, the UK and the US, and for any "+" number.
_PHONE_CANDIDATE = re.compile(
    r"(?<![0-9])(?<![0-9][ .-])\+?\(?[0-9](?:[ .()/-]{0,3}[0-9]){6,16}(?![0-9])(?![ .-][0-9])"
)
_PHONE_REGIONS = ("FR", "GB", "US")


def _phones(text: str, taken: list[_Span]) -> Iterator[_Span]:
    for candidate in _PHONE_CANDIDATE.finditer(text):
        if not _overlaps(taken, candidate.start(), candidate.end()):
            for start, end in _phone_numbers_in(candidate[0]):
                yield _Span("phone", candidate.start() + start, candidate.start() + end)


def _phone_numbers_in(candidate: str) -> list[tuple[int, int]]:
    """The valid numbers in `candidate` for the first region that finds any (each region
    costs about 0.1 ms; "+" numbers are found by the first)."""
    for region in _PHONE_REGIONS:
        matcher = PhoneNumberMatcher(candidate, region, leniency=Leniency.VALID)
        if numbers := [(number.start, number.end) for number in matcher]:
            return numbers
    return []


# Postal addresses. French: number, street type, name, then maybe a postcode and a city
# ("12 rue de la Paix, 75002 Paris"). English: number, name, street type, then maybe a city and
# a UK or US postcode ("221B Baker Street, London NW1 6XE"). A name stops at words that start
# a sentence's next part ("12 rue Victor Hugo et je…"), so little else is taken.
_STOP = (
    r"(?!(?:et|ou|mais|donc|car|je|j|il|elle|on|nous|vous|pour|depuis|est|qui|que|avec|dans"
    r"|mon|ma|mes|votre|vos|svp|merci|and|or|but|i|is|was|since|for|my|your|the|with|in|at|to|of"
    r"|a|please|thanks)\b)"
)
_WORD = r"[^\W\d_][\w'’-]*"
_CITY = r"(?-i:[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ][\w'’-]*)"
_FRENCH_ADDRESS = (
    r"[0-9]{1,4}(?:\s?(?:bis|ter|b))?,?\s+"
    r"(?:rue|avenue|av\.|bd|boulevard|chemin|all[ée]e|place|impasse|quai|route)"
    rf"(?:\s+{_STOP}{_WORD}){{1,5}}"
    rf"(?:,?\s+[0-9]{{5}}(?:\s+{_WORD}(?:\s+{_CITY}){{0,2}})?)?"
)
_ENGLISH_ADDRESS = (
    rf"[0-9]{{1,5}}[a-z]?\s+(?:{_STOP}{_WORD}\s+){{1,3}}"
    r"(?:street|st|avenue|ave|road|rd|lane|ln|drive|dr|boulevard|blvd)\b\.?"
    rf"(?:,\s*{_CITY}(?:\s+{_CITY}){{0,2}})?"
    r"(?:,?\s+(?-i:(?:[A-Z]{2}\s+)?[0-9]{5}(?:-[0-9]{4})?|[A-Z]{1,2}[0-9][A-Z0-9]?\s*[0-9][A-Z]{2}))?"
)
_ADDRESS = re.compile(rf"(?<!\w)(?:{_FRENCH_ADDRESS}|{_ENGLISH_ADDRESS})(?!\w)", re.IGNORECASE)


def _addresses(text: str) -> Iterator[_Span]:
    for found in _ADDRESS.finditer(text):
        yield _Span("address", found.start(), found.end())
