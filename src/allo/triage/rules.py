"""Keyword rules, in French and English: urgency, the place named, intent hints, needs an answer.

Rules match a folded form of the text (see `normalise`), so that "URGENT!!!", "héééé",
"SVPPPP", "ur<zero-width joiner>gent" and "g<Cyrillic a>s" read like plain words.
Patterns are written as ordinary lower-case phrases and folded the same way when compiled.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

from allo.triage.schemas import URGENCY_REASONS

# Rules read this much of a message: what makes a message urgent is said early, and a 100 KB
# paste then costs about what a long email does.
MAX_CHARS = 10_000

# Characters that render as nothing (zero-width spaces and joiners, bidirectional controls,
# soft hyphens, variation selectors): dropped before matching, so they cannot split a word.
INVISIBLE = dict.fromkeys(
    [
        0x00AD,
        0x180E,
        *range(0x200B, 0x2010),
        *range(0x202A, 0x202F),
        *range(0x2060, 0x2070),
        *range(0xFE00, 0xFE10),
        0xFEFF,
    ]
)

# Cyrillic and Greek letters that look like Latin ones, after case folding. Only folded inside
# a word that also holds Latin letters, so Russian or Greek text is left as it is.
_HOMOGLYPHS = str.maketrans(
    {
        "а": "a",
        "в": "b",
        "е": "e",
        "к": "k",
        "м": "m",
        "н": "h",
        "о": "o",
        "р": "p",
        "с": "c",
        "т": "t",
        "у": "y",
        "х": "x",
        "і": "i",
        "ј": "j",
        "ѕ": "s",
        "ԁ": "d",
        "һ": "h",
        "ӏ": "l",
        "α": "a",
        "ε": "e",
        "ι": "i",
        "κ": "k",
        "ν": "v",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
    }
)
_HAS_HOMOGLYPH = re.compile("[" + "".join(chr(c) for c in _HOMOGLYPHS) + "]")
_WORD = re.compile(r"\w+")
_LATIN = re.compile("[a-z]")

# URLs and @mentions name other things than the customer's words ("@SNCF_Panne", "/fire-safety").
_LINKS = re.compile(r"(?:https?://|www\.)\S+|@\w+", re.IGNORECASE)
_APOSTROPHES_AND_HYPHENS = str.maketrans(dict.fromkeys("'’‘ʼ`´-‐‑–—", " "))
_COMBINING = re.compile(r"[\u0300-\u036f]")
# Repeated letters are squeezed to one in the text and in the patterns alike ("svppp" and "svp"
# both read "svp", "still" reads "stil"), which makes elongation harmless.
_REPEATED_LETTER = re.compile(r"([^\W\d_])\1+")
_SPACES = re.compile(r"\s+")


# Triage asks several rules of one message in a row; each reads the same normalised text.
@lru_cache(maxsize=64)
def normalise(text: str) -> str:
    """The text as rules read it: NFKC, no invisible characters, links or @mentions, case
    folded, homoglyphs and accents removed, apostrophes and hyphens as spaces, repeated
    letters squeezed, single spaces."""
    text = unicodedata.normalize("NFKC", text[:MAX_CHARS]).translate(INVISIBLE)
    text = _LINKS.sub(" ", text).casefold()
    return _fold(_fold_homoglyphs(text))


def _fold(text: str) -> str:
    """Accents, apostrophes, hyphens and repeated letters: shared by texts and patterns."""
    text = _COMBINING.sub("", unicodedata.normalize("NFD", text))
    text = text.translate(_APOSTROPHES_AND_HYPHENS)
    return _SPACES.sub(" ", _REPEATED_LETTER.sub(r"\1", text)).strip()


def _fold_homoglyphs(text: str) -> str:
    if not _HAS_HOMOGLYPH.search(text):
        return text
    return _WORD.sub(_fold_word, text)


def _fold_word(word: re.Match[str]) -> str:
    return word[0].translate(_HOMOGLYPHS) if _LATIN.search(word[0]) else word[0]


def _rule(phrases: Iterable[str]) -> re.Pattern[str]:
    """One pattern matching any of `phrases` as whole words. A phrase may use regex groups and
    alternatives, but not `\\b` or character ranges, which folding would squeeze or split; and
    an ending must not repeat the letter before it: "bug(?:s|ed)?", as "bugged" reads "buged"."""
    folded = "|".join(_fold(phrase.casefold()) for phrase in phrases)
    return re.compile(rf"(?<!\w)(?:{folded})(?!\w)")


_URGENCY = {
    "safety": _rule(
        [
            "fire",
            "on fire",
            "caught fire",
            "smoke",
            "smoking (?:device|phone|charger|battery)",
            "gas leak",
            "leaking gas",
            "smell(?:s)? (?:of )?gas",
            "gas smell",
            "carbon monoxide",
            "injur(?:y|ies|ed)",
            "hurt (?:myself|me|my)",
            "bleeding",
            "danger(?:ous)?",
            "unsafe",
            "hazard(?:ous)?",
            "explo(?:sion|ded|de|des)",
            "electric shock",
            "electrocuted",
            "sparks",
            "food poisoning",
            "ambulance",
            "feu(?! (?:vert|rouge|orange|d artifice))",
            "incendie",
            "fumee",
            "fuite de gaz",
            "odeur de gaz",
            "blesse(?:e|s|es)?",
            "blessure(?:s)?",
            "brulure(?:s)?",
            "dangereu(?:x|se)",
            "explose",
            "electrocute",
            "decharge electrique",
            "etincelle(?:s)?",
            "intoxication(?: alimentaire)?",
            "intoxique(?:e)?",
            "pompiers",
            "samu",
        ]
    ),
    "legal": _rule(
        [
            "lawyer(?:s)?",
            "attorney",
            "sue",
            "suing",
            "lawsuit",
            "legal action",
            "(?:to|in|see you in|small claims) court",
            "class action",
            "trading standards",
            "ombudsman",
            "mon avocat",
            "notre avocat",
            "(?:contacter|consulter|prendre|voir|saisir) un avocat",
            "(?:un|au|le|en) proces",
            "porter plainte",
            "(?:deposer|deposerai) (?:une )?plainte",
            "plainte contre",
            "mise en demeure",
            "tribunal",
            "en justice",
            "huissier",
            "dgccrf",
            "ufc que choisir",
            "60 millions de consommateurs",
        ]
    ),
    "outage": _rule(
        [
            "outage",
            "(?:is|are|s|was|went|still|all) down",
            "down (?:again|for everyone|for everybody)",
            "not working for (?:everyone|anyone|anybody)",
            "(?:nobody|no one) can (?:connect|log in|login|access|use)",
            "(?:service|site|website|app|network) (?:is )?(?:unavailable|unreachable)",
            "panne(?:s)?",
            "ne (?:fonctionne|marche) plus",
            "(?:service|site|appli|application|reseau) (?:est )?(?:indisponible|inaccessible)",
            "bug generalise",
            "hors service",
            "coupure(?:s)?",
            "plus de reseau",
        ]
    ),
    "in_store": _rule(
        [
            r"(?:i m|im|i am) (?:in|at) (?:your|the) (?:\w+ ){0,3}(?:store|shop|branch)",
            "in (?:your|the) (?:store|shop) (?:right )?now",
            "at the (?:checkout|till|register|counter)",
            "in store right now",
            "en magasin",
            "a la caisse",
            "en caisse",
            "au comptoir",
            "au guichet",
            "dans (?:votre|le|ce) (?:magasin|boutique)",
            "je suis (?:au|en|dans le) (?:magasin|boutique)",
        ]
    ),
}


def urgency(text: str) -> list[str]:
    """Why the message is urgent, among safety, legal, outage and in_store (in that order)."""
    return _urgency(normalise(text))


def _urgency(folded: str) -> list[str]:
    return [reason for reason in URGENCY_REASONS if _URGENCY[reason].search(folded)]


# A place name as written: capitalised words ("Lyon Part-Dieu", "Oxford Street"), joined by
# the small lower-case words of place names ("Boulogne sur Mer", "Stratford upon Avon").
# Lower-case words are not taken: "magasin de vêtements" names a kind of shop, not a place.
_CAPITALISED = r"[A-ZÀ-ÖØ-ÞŒ][\w'’]*(?:-[\w'’]+)*"
_NAME = rf"{_CAPITALISED}(?:\s+(?:(?:de|du|des|la|le|sur|en|upon|on)\s+)?{_CAPITALISED}){{0,3}}"
_DE = r"(?:(?i:de\s+la|du|des|de)\s+|(?i:d|de\s+l)['’]\s*)"
_PLACES = [
    # "at the Oxford Street store", "in your Lyon Part-Dieu store"
    re.compile(
        rf"(?<!\w)(?i:in|at|from|inside|outside)\s+(?i:your|the)\s+({_NAME})\s+"
        r"(?i:store|shop|branch|outlet|mall)(?!\w)"
    ),
    # "your store in Leeds", "the shop on Oxford Street"
    re.compile(rf"(?<!\w)(?i:store|shop|branch|outlet)\s+(?i:in|at|on)\s+({_NAME})"),
    # "gare de Lyon", "aéroport de Nice": the station's or airport's whole name
    re.compile(rf"(?<!\w)((?i:gare|a[ée]roport)\s+{_DE}?{_NAME})"),
    # "au magasin de Lille", "agence de Nantes", "boutique d'Orléans"
    re.compile(
        rf"(?<!\w)(?i:magasin|boutique|agence|succursale|supermarch[ée]|hypermarch[ée])\s+"
        rf"{_DE}?({_NAME})"
    ),
]


def place(text: str) -> str | None:
    """The store or place the message names first, as written, else None."""
    text = unicodedata.normalize("NFKC", text[:MAX_CHARS]).translate(INVISIBLE)
    found = [match for pattern in _PLACES if (match := pattern.search(text))]
    if not found:
        return None
    return min(found, key=lambda match: match.start())[1].strip()


_QUESTION = _rule(
    [
        "how (?:do|can|should|to|long|much|many)",
        "what (?:is|s|are|do|does|about|happened)",
        "when (?:will|is|are|do|does|can)",
        "where (?:is|are|can|do)",
        "why (?:is|are|do|does|did|has|have)",
        "(?:can|could|would|will) you",
        "is it possible",
        "is there",
        "do you",
        "any (?:update|news)",
        "comment (?:faire|puis je|je|on|ca)",
        "est ce (?:que|qu)",
        "pourquoi",
        "quand (?:est|sera|vais|va|allez|pourrai)",
        "ou (?:est|sont|puis je|peut on|trouver)",
        "(?:pouvez|pourriez|savez|auriez) vous",
        "y a t il",
        "quel(?:s|e|es)? (?:est|sont)",
        "(?:est il|c est|serait il) possible",
    ]
)
_COMPLAINT = _rule(
    [
        "still (?:not|no|nothing|waiting)",
        "still haven t",
        "never (?:received|arrived|got|came)",
        "(?:not|didn t|haven t|hasn t) (?:received|arrived)",
        "worst",
        "terrible",
        "awful",
        "horrible",
        "disgusting",
        "unacceptable",
        "ridiculous",
        "disappointed",
        "fed up",
        "rip off",
        "scam(?:s|ed)?",
        "shame on you",
        "toujours (?:pas|rien|aucun|aucune)",
        "jamais (?:recu|arrive|livre)",
        "pas (?:recu|arrive|ete livre)",
        "scandal(?:e|eux|euse)",
        "inadmissible",
        "honte",
        "honteu(?:x|se)",
        "lamentable",
        "pitoyable",
        "deplorable",
        "inacceptable",
        "decu(?:e|s)?",
        "degoute(?:e)?",
        "(?:j en ai|en ai) marre",
        "ras le bol",
        "arnaque(?:s|urs)?",
        "n importe quoi",
        "nul(?:s|e|es)?",
        "pire",
    ]
)
_INCIDENT = _rule(
    [
        "bug(?:s|ed)?",
        "error",
        "crash(?:es|ed|ing)?",
        "(?:doesn t|does not|isn t|is not|not) work(?:ing)?",
        "broken",
        "(?:can t|cannot|unable to) (?:log in|login|connect|pay|access)",
        "erreur",
        "beug(?:ue|e)?",
        "plante",
        "bloque(?:e)?",
        "ne (?:fonctionne|marche) pas",
        "impossible de (?:me connecter|se connecter|payer|acceder)",
    ]
)
_PRAISE = _rule(
    [
        "thank you so much",
        "thanks (?:so much|a lot|a million)",
        "many thanks",
        "(?<!would )(?<!d )love(?:d)?",
        "amazing",
        "awesome",
        "great (?:job|service|team|work|experience)",
        "well done",
        "brilliant",
        "excellent",
        "fantastic",
        "you rock",
        "merci (?:beaucoup|mille fois|infiniment)",
        "mille merci(?:s)?",
        "genial(?:e)?",
        "bravo",
        "felicitations",
        "au top",
        "trop bien",
        "super (?:service|sympa|equipe|rapide)",
        "j adore",
        "nickel",
        "chapeau",
        "parfait(?:e)?",
        "perfect",
    ]
)
_SUGGESTION = _rule(
    [
        "you (?:guys )?should",
        "it would be (?:great|nice|good|cool) (?:if|to)",
        "would be (?:great|nice|good|cool) if",
        "why not (?:add|make|offer)",
        "please (?:add|consider)",
        "i (?:suggest|wish)",
        "suggestion",
        "feature request",
        "vous devriez",
        "il faudrait",
        "(?:ce|ca) serait (?:bien|top|genial|cool|super)",
        "pourquoi ne pas",
        "je (?:suggere|propose)",
        "une idee",
    ]
)
_PURCHASE = _rule(
    [
        "(?:i want|i d like|i would like|looking|i m looking) to (?:buy|order|purchase)",
        "how much (?:is|are|does|for)",
        "price (?:of|for)",
        "(?:do you|where can i|can i) (?:buy|sell|order)",
        "in stock",
        "(?:je veux|je voudrais|j aimerais|je souhaite|je souhaiterais) (?:acheter|commander)",
        "prix (?:de|du|des|d)",
        "quel est le prix",
        "combien (?:coute|ca coute|pour)",
        "c est combien",
        "tarif(?:s)?",
        "devis",
        "en stock",
        "vous vendez",
        "ou (?:acheter|puis je acheter)",
    ]
)
_CHURN = _rule(
    [
        "cancel(?:ing)? my (?:subscription|account|contract|plan|membership)",
        "close my account",
        "(?:i m|im|i am) (?:leaving|switching|moving to another|done with)",
        "switching to",
        "take my business elsewhere",
        "go(?:ing)? elsewhere",
        "never (?:again|buying|ordering|using)",
        "resilier",
        "resiliation",
        "je (?:resilie|pars chez|passe chez|vais partir|vais vous quitter|vous quitte)",
        "changer d (?:operateur|banque|fournisseur)",
        "aller voir ailleurs",
        "plus jamais",
        "(?:fermer|cloturer) mon compte",
        "me desabonner",
    ]
)
_HINTS = {
    "question": _QUESTION,
    "complaint": _COMPLAINT,
    "incident": _INCIDENT,
    "praise": _PRAISE,
    "suggestion": _SUGGESTION,
    "purchase": _PURCHASE,
    "churn": _CHURN,
}

# Thanks and acknowledgements: a message made only of these asks for nothing.
_THANKS = _rule(["thank you", "thanks", "thx", "ty", "cheers", "merci"])
_ACKNOWLEDGEMENT = _rule(
    [
        "ok(?:ay)?",
        "noted",
        "got it",
        "great",
        "cool",
        "d accord",
        "ca marche",
        "bien recu",
        "top",
        "super",
        "bonne (?:journee|soiree)",
        "have a (?:nice|good|great) (?:day|evening)",
    ]
)
_ALPHANUMERIC = re.compile(r"[^\W_]")


def intent_hints(text: str) -> set[str]:
    """Intents the words alone suggest, among question, complaint, incident, praise,
    suggestion, purchase and churn. Thanks alone ("merci 🙏") count as praise."""
    folded = normalise(text)
    hints = {intent for intent, rule in _HINTS.items() if rule.search(folded)}
    if "?" in folded:
        hints.add("question")
    if _URGENCY["outage"].search(folded):
        hints.add("incident")
    if _THANKS.search(folded) and _courtesy_only(folded):
        hints.add("praise")
    return hints


def _courtesy_only(folded: str) -> bool:
    """Whether the message has words and all are thanks or acknowledgements ("ok merci !")."""
    rest = _ACKNOWLEDGEMENT.sub(" ", _THANKS.sub(" ", folded))
    return bool(_ALPHANUMERIC.search(folded)) and not _ALPHANUMERIC.search(rest)


_AUTOMATED = _rule(
    [
        "out of (?:the )?office",
        "auto(?: )?reply",
        "automatic reply",
        "automated (?:message|reply|response)",
        "do not reply",
        "donotreply",
        "no reply",
        "noreply",
        "absent(?:e)? du bureau",
        "(?:reponse|message) automatique",
        "ne pas repondre",
        "ne repondez pas",
    ]
)
# Intents that a person has to answer; praise and courtesies alone do not need one.
_ANSWERED_INTENTS = {"question", "complaint", "incident", "churn", "purchase", "suggestion"}


def needs_answer(text: str, intents: set[str], spam: bool) -> bool:
    """Whether someone should answer. No for spam, automated messages (out of office), empty
    or emoji-only text, and praise or thanks alone; yes for anything urgent or asking, and by
    default (nobody is left unanswered because a rule did not know their words)."""
    folded = normalise(text)
    if spam or _AUTOMATED.search(folded):
        return False
    if not _ALPHANUMERIC.search(folded):
        # "??" under an unanswered post still asks; emoji alone do not.
        return "?" in folded
    if intents & _ANSWERED_INTENTS or _urgency(folded):
        return True
    return not ("praise" in intents or _courtesy_only(folded))
