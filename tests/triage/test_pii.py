import pytest

from allo.triage.pii import PiiMatch, find_pii, pii_kinds, redact

VISA = "4970 1012 3456 7893"  # Luhn-valid
FRENCH_IBAN = "FR76 3000 6000 0112 3456 7890 189"


def found(text: str) -> list[tuple[str, str]]:
    return [(match.kind, match.text) for match in find_pii(text)]


# cards


@pytest.mark.parametrize(
    "number",
    [
        VISA,
        "4970-1012-3456-7893",
        "4970101234567893",
        "4111 1111 1111 1111",
        "5555 5555 5555 4444",
        "3782 822463 10005",  # Amex, 4-6-5
    ],
)
def test_a_luhn_valid_card_number_is_a_card_however_it_is_grouped(number: str) -> None:
    assert found(f"ma carte : {number} merci") == [("card", number)]


def test_a_card_number_that_fails_luhn_is_not_a_card() -> None:
    assert found("4970 1012 3456 7890") == []


def test_a_card_followed_by_its_security_code_is_still_found() -> None:
    assert found(f"CB {VISA} 123 exp 12/25") == [("card", VISA)]


@pytest.mark.parametrize(
    "text",
    [
        "commande 1234567812345670",  # Luhn-valid, but no card network starts with 1
        "1234 5678 9012",  # too short
        "4 9 7 0 1 0 1 2 3 4 5 6 7 8 9 3",  # digit by digit is not how cards are written
    ],
)
def test_numbers_not_written_like_card_numbers_are_not_cards(text: str) -> None:
    assert found(text) == []


def test_a_run_longer_than_a_card_holds_no_card_unless_its_groups_make_one() -> None:
    assert found("12345678901234567890123") == []
    assert found(f"{VISA} {VISA}") == [("card", VISA), ("card", VISA)]


# IBANs


@pytest.mark.parametrize(
    "number",
    [
        FRENCH_IBAN,
        "FR7630006000011234567890189",
        "fr76 3000 6000 0112 3456 7890 189",
        "DE89 3704 0044 0532 0130 00",
        "GB29 NWBK 6016 1331 9268 19",
        "BE71 0961 2345 6769",
    ],
)
def test_an_iban_with_a_valid_checksum_is_an_iban(number: str) -> None:
    assert found(f"IBAN: {number} merci d'avance") == [("iban", number)]


def test_an_iban_with_a_wrong_checksum_is_not_an_iban() -> None:
    assert found("FR77 3000 6000 0112 3456 7890 189") == []


def test_an_iban_whose_digits_also_pass_luhn_is_reported_once_as_an_iban() -> None:
    # "3704 0044 0532 0131" inside it is a Luhn-valid 16-digit number.
    assert found("DE08 3704 0044 0532 0131 00") == [("iban", "DE08 3704 0044 0532 0131 00")]


# phone numbers


@pytest.mark.parametrize(
    "number",
    [
        "06 12 34 56 78",
        "06.12.34.56.78",
        "0612345678",
        "+33 6 12 34 56 78",
        "+33 (0)6 12 34 56 78",
        "020 7946 0958",
        "+44 20 7946 0958",
        "(415) 555-2671",
        "+1 415 555 2671",
    ],
)
def test_french_british_us_and_international_phone_numbers_are_phones(number: str) -> None:
    assert found(f"call me on {number} please") == [("phone", number)]


@pytest.mark.parametrize(
    "text",
    ["commande 6 12 34", "le 12/05/2024 à 10:30", "01 23", "99 99 99 99 99", "+33 1"],
)
def test_too_few_digits_dates_and_invalid_numbers_are_not_phones(text: str) -> None:
    assert found(text) == []


# emails


@pytest.mark.parametrize(
    "address", ["jean.dupont@gmail.com", "j.doe+orders@mail.example.co.uk", "A_B-c@x.fr"]
)
def test_an_email_address_is_an_email(address: str) -> None:
    assert found(f"écrivez-moi à {address}, merci") == [("email", address)]


@pytest.mark.parametrize("text", ["@SNCF merci", "jean@localhost", "prix@ 12 euros", "a@b"])
def test_mentions_and_incomplete_addresses_are_not_emails(text: str) -> None:
    assert found(text) == []


# postal addresses


@pytest.mark.parametrize(
    ("text", "address"),
    [
        (
            "J'habite au 12 rue de la Paix, 75002 Paris depuis 2 ans",
            "12 rue de la Paix, 75002 Paris",
        ),
        ("Livrez au 3 bis avenue Jean Jaurès svp", "3 bis avenue Jean Jaurès"),
        ("5 allée des Tilleuls 69003 Lyon", "5 allée des Tilleuls 69003 Lyon"),
        ("au 12 rue Victor Hugo et je n'ai rien reçu", "12 rue Victor Hugo"),
        ("I live at 221B Baker Street, London NW1 6XE", "221B Baker Street, London NW1 6XE"),
        ("Ship to 10 Downing St please", "10 Downing St"),
        (
            "1600 Pennsylvania Avenue, Washington DC 20500",
            "1600 Pennsylvania Avenue, Washington DC 20500",
        ),
        ("send it to 42 main road", "42 main road"),
    ],
)
def test_french_and_english_street_addresses_are_addresses(text: str, address: str) -> None:
    assert found(text) == [("address", address)]


@pytest.mark.parametrize(
    "text",
    ["I waited 3 hours on the road", "il reste 2 places", "2 rues plus loin", "My 2 cents"],
)
def test_numbers_before_ordinary_words_are_not_addresses(text: str) -> None:
    assert found(text) == []


# all together


def test_matches_come_in_text_order_with_offsets_into_the_text() -> None:
    text = f"Carte {VISA}, tel 06 12 34 56 78, mail a@b.fr, IBAN {FRENCH_IBAN}"
    matches = find_pii(text)
    assert [match.kind for match in matches] == ["card", "phone", "email", "iban"]
    assert all(text[match.start : match.end] == match.text for match in matches)
    assert matches[0] == PiiMatch("card", 6, 25, VISA)


def test_pii_kinds_are_sorted_and_unique() -> None:
    text = "06 12 34 56 78 ou 07 12 34 56 78, a@b.fr, c@d.fr"
    assert pii_kinds(text) == ["email", "phone"]
    assert pii_kinds("Bonjour") == []


def test_redact_replaces_each_match_by_its_kind() -> None:
    text = f"Ma carte {VISA}, mon mail jean@x.fr et mon IBAN {FRENCH_IBAN}."
    assert redact(text) == "Ma carte [card], mon mail [email] et mon IBAN [iban]."
    assert redact("Rien à cacher") == "Rien à cacher"
    assert redact("") == ""


# bad input


def test_zero_width_characters_inside_a_number_do_not_hide_it() -> None:
    text = "carte 4970\u200b1012\u200d3456\u20607893 merci"
    assert found(text) == [("card", "4970\u200b1012\u200d3456\u20607893")]
    assert redact(text) == "carte [card] merci"


def test_fullwidth_digits_are_read_as_digits() -> None:
    text = "４９７０ １０１２ ３４５６ ７８９３"
    assert found(text) == [("card", text)]


def test_an_email_with_a_homoglyph_is_still_an_email() -> None:
    # Cyrillic "а" in "pаypal": still an address to keep out of a public reply.
    assert pii_kinds("pаypal-support@gmail.com") == ["email"]


@pytest.mark.parametrize("text", ["", "   ", "😀🔥", "https://example.com/?a=1&b=2"])
def test_text_without_personal_data_has_none(text: str) -> None:
    assert find_pii(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "1 2 3 4 5 6 7 8 9 0 " * 5_000,
        "1234567890" * 10_000,
        "06 12 34 56 78 " * 6_600,
        "a" * 100_000,
        "a@" * 50_000,
        "a.b@c." * 16_000,
        "AB12 " * 20_000,
        "FR76 3000 " * 10_000,
        "1 rue " * 16_000,
        "\u200b" * 100_000,
    ],
)
def test_100_kb_of_adversarial_text_is_read_in_linear_time(text: str) -> None:
    # Quadratic or exponential matching would make this test run for minutes, not fail.
    assert find_pii(text) == []


def test_every_match_in_100_kb_is_found() -> None:
    assert len(find_pii(f"{VISA} x@y.fr " * 4_000)) == 8_000
