import pytest

from allo.triage.rules import intent_hints, needs_answer, normalise, place, urgency

CYRILLIC_A = "\u0430"


# normalise: how rules read a text


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("URGENT!!!", "urgent!!!"),
        ("SVPPPP", "svp"),
        ("héééé", "he"),
        ("Ça NE MARCHE PLUS", "ca ne marche plus"),
        ("ur\u200dgent", "urgent"),
        ("l'avocat", "l avocat"),
        ("I’m in   your\nstore", "i m in your store"),
        ("@SNCF_Help voir https://t.co/fire", "voir"),
    ],
)
def test_rules_read_text_without_case_accents_elongation_or_invisible_characters(
    text: str, folded: str
) -> None:
    assert normalise(text) == folded


def test_a_homoglyph_inside_a_latin_word_reads_as_its_latin_letter() -> None:
    assert normalise(f"p{CYRILLIC_A}ypal") == "paypal"


def test_cyrillic_words_are_left_as_they_are() -> None:
    assert normalise("Привет") == "привет"


# urgency


@pytest.mark.parametrize(
    "text",
    [
        "There is smoke coming out of the charger",
        "I think there is a gas leak near your pump",
        "My son got injured by the broken shelf",
        "the battery exploded",
        "Le chargeur a pris feu !",
        "De la fumée sort de la box",
        "Il y a une fuite de gaz dans la rue",
        "Un client a été blessé par la porte",
        "FUMÉÉÉE qui sort du four, URGENT!!!",
        f"there is a g{CYRILLIC_A}s leak",
        "fu\u200bite de gaz",
    ],
)
def test_fire_smoke_gas_and_injuries_are_urgent_for_safety(text: str) -> None:
    assert urgency(text) == ["safety"]


@pytest.mark.parametrize(
    "text",
    [
        "My lawyer will be in touch",
        "I will sue you",
        "See you in court",
        "Mon avocat va vous contacter",
        "Je vais porter plainte",
        "Vous recevrez une mise en demeure",
        "Je saisis la DGCCRF",
        "J'ai écrit à UFC-Que Choisir",
    ],
)
def test_lawyers_courts_and_complaints_to_authorities_are_urgent_as_legal_threats(
    text: str,
) -> None:
    assert urgency(text) == ["legal"]


@pytest.mark.parametrize(
    "text",
    [
        "Your app is down again",
        "Is the website down? It's not working for anyone here",
        "Major outage in Lyon",
        "Le site est en panne",
        "L'appli ne fonctionne plus",
        "Service indisponible depuis ce matin",
        "bug généralisé chez vous ?",
    ],
)
def test_services_down_for_everyone_are_urgent_as_outages(text: str) -> None:
    assert urgency(text) == ["outage"]


@pytest.mark.parametrize(
    "text",
    [
        "I'm in your store right now and nobody is helping",
        "I'm in your Lyon Part-Dieu store and nobody helps",
        "Stuck at the checkout, the card reader refuses my card",
        "Je suis à la caisse et le terminal refuse ma carte",
        "Personne pour m'aider dans votre boutique",
        "je suis en magasin là",
    ],
)
def test_a_customer_in_the_shop_now_is_urgent(text: str) -> None:
    assert urgency(text) == ["in_store"]


def test_several_reasons_come_in_a_fixed_order() -> None:
    text = "Je suis à la caisse, il y a de la fumée, j'appelle mon avocat"
    assert urgency(text) == ["safety", "legal", "in_store"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "😡😡😡",
        "Feu vert pour la livraison de demain",
        "The process is slow",
        "Calm down, it's fine",
        "Les avocats étaient pourris",
        "Un court délai serait apprécié",
        "You let me down",
        "Where is my parcel?",
    ],
)
def test_ordinary_words_that_look_alarming_are_not_urgent(text: str) -> None:
    assert urgency(text) == []


def test_rules_read_the_first_10_000_characters_of_a_100_kb_text() -> None:
    assert urgency("fire! " + "a" * 100_000) == ["safety"]
    assert urgency("a " * 50_000 + "fire") == []


# place


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("I'm in your Lyon Part-Dieu store and nobody helps", "Lyon Part-Dieu"),
        ("Terrible service at the Oxford Street store today", "Oxford Street"),
        ("Your store in Leeds closed early", "Leeds"),
        ("Je suis au magasin de Lille depuis une heure", "Lille"),
        ("L'agence de Nantes ne répond pas", "Nantes"),
        ("La boutique d'Orléans est fermée", "Orléans"),
        ("Coincé gare de Lyon, le guichet est fermé", "gare de Lyon"),
        ("Au magasin de Boulogne sur Mer, rien en rayon", "Boulogne sur Mer"),
    ],
)
def test_the_store_or_place_named_is_returned_as_written(text: str, named: str) -> None:
    assert place(text) == named


def test_the_first_place_named_is_returned() -> None:
    assert place("Après l'agence de Nantes, le magasin de Lille") == "Nantes"


@pytest.mark.parametrize(
    "text",
    ["", "I'm at the store", "Le magasin de vêtements est fermé", "Where is my order?", "🏬"],
)
def test_no_place_is_returned_when_none_is_named(text: str) -> None:
    assert place(text) is None


# intent_hints


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Where is my order?", "question"),
        ("how do i reset my password", "question"),
        ("Comment faire pour changer mon adresse", "question"),
        ("My parcel never arrived, worst service ever", "complaint"),
        ("Toujours pas reçu ma commande, c'est inadmissible", "complaint"),
        ("Quelle honte, un scandale", "complaint"),
        ("Service nulle, je suis dégoûtée", "complaint"),
        ("I got scammed", "complaint"),
        ("The checkout page is bugged", "incident"),
        ("Quelle est la date de livraison", "question"),
        ("The app crashes when I pay", "incident"),
        ("Le site est en panne", "incident"),
        ("Thank you so much, amazing team", "praise"),
        ("Merci beaucoup, génial, bravo !", "praise"),
        ("You should add a dark mode", "suggestion"),
        ("Ce serait bien d'avoir un mode sombre", "suggestion"),
        ("I want to buy the blue one", "purchase"),
        ("Je veux acheter deux places, quel est le prix ?", "purchase"),
        ("I want to cancel my subscription", "churn"),
        ("I'm switching to your competitor", "churn"),
        ("Je vais résilier, je pars chez Free", "churn"),
    ],
)
def test_words_hint_at_intents_in_french_and_english(text: str, intent: str) -> None:
    assert intent in intent_hints(text)


def test_a_message_can_hint_at_several_intents() -> None:
    hints = intent_hints("Toujours pas remboursé ! Je vais résilier. Comment je fais ?")
    assert hints >= {"complaint", "churn", "question"}


@pytest.mark.parametrize("text", ["thanks!", "merci 🙏", "Ok merci, bonne journée", "THANKS!!!"])
def test_thanks_alone_count_as_praise(text: str) -> None:
    assert intent_hints(text) == {"praise"}


@pytest.mark.parametrize("text", ["", "🙂", "ok", "Ma commande 12345"])
def test_a_text_without_telling_words_hints_at_nothing(text: str) -> None:
    assert intent_hints(text) == set()


def test_a_question_mark_in_a_link_is_not_a_question() -> None:
    assert intent_hints("https://example.com/track?id=1") == set()


# needs_answer


def answer_needed(text: str, spam: bool = False) -> bool:
    return needs_answer(text, intent_hints(text), spam)


@pytest.mark.parametrize(
    "text",
    [
        "Where is my order?",
        "Still no refund, this is a scandal",
        "The app is down",
        "I want to cancel my subscription",
        "How much is the blue one",
        "Je suis à la caisse et ça bloque",
        "Il y a de la fumée qui sort du chargeur",
        "??",
        "Bonjour, j'ai commandé un canapé la semaine dernière",
    ],
)
def test_questions_complaints_incidents_churn_purchases_and_urgent_messages_need_an_answer(
    text: str,
) -> None:
    assert answer_needed(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "🙏🙏",
        "thanks!",
        "merci 🙏",
        "ok",
        "Love it, amazing team!",
        "Out of office: I am away until Monday",
        "Réponse automatique : je suis absente du bureau",
        "This is an automated message, do not reply",
    ],
)
def test_thanks_praise_automated_and_empty_messages_need_no_answer(text: str) -> None:
    assert not answer_needed(text)


def test_spam_needs_no_answer_even_when_it_asks() -> None:
    assert not answer_needed("Want 10k followers? Click here", spam=True)


def test_praise_with_a_question_needs_an_answer() -> None:
    assert answer_needed("Love the app! Will it come to Android?")


def test_the_intents_given_are_what_decides() -> None:
    assert needs_answer("Bonjour", {"complaint"}, spam=False)
    assert not needs_answer("Très beau magasin", {"praise"}, spam=False)
