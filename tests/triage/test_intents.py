from pathlib import Path

import pytest

from allo.triage.intents import (
    FORMAT_VERSION,
    IntentModel,
    TrainingDataError,
    read_training_csv,
    train_intent_model,
)

EXAMPLES = {
    "delivery": [
        "where is my parcel",
        "my order has not arrived yet",
        "the package is late",
        "tracking says delivered but nothing came",
        "when will my delivery come",
        "mon colis n'est pas arrivé",
        "toujours pas reçu ma commande",
        "the courier never showed up",
        "delivery is two weeks late",
        "has my order shipped",
    ],
    "refund": [
        "I want my money back",
        "please refund my purchase",
        "how do I get a refund",
        "je veux être remboursé",
        "remboursement de ma commande svp",
        "return the item and refund me",
        "the refund has not reached my account",
        "cancel and reimburse me",
        "refund request for order 1234",
        "can I have a refund for the broken item",
    ],
    "password": [
        "I forgot my password",
        "cannot log in to my account",
        "reset my password please",
        "mot de passe oublié",
        "je n'arrive pas à me connecter",
        "login keeps failing",
        "how do I change my password",
        "account locked after too many attempts",
        "password reset email never came",
        "I can't sign in",
    ],
}
TEXTS = [text for texts in EXAMPLES.values() for text in texts]
LABELS = [label for label, texts in EXAMPLES.items() for _ in texts]


@pytest.fixture(scope="module")
def model() -> IntentModel:
    return train_intent_model(TEXTS, LABELS)


def test_a_model_trained_on_30_examples_names_their_intents(model: IntentModel) -> None:
    assert model.labels == ("delivery", "password", "refund")
    assert model.counts == {"delivery": 10, "password": 10, "refund": 10}
    assert model.version == FORMAT_VERSION
    ranked = model.predict(
        ["my parcel still has not arrived", "give me a refund", "I forgot my login password"]
    )
    assert [labels[0][0] for labels in ranked] == ["delivery", "refund", "password"]


def test_predictions_are_every_label_with_its_probability_most_probable_first(
    model: IntentModel,
) -> None:
    for ranked in model.predict(["", "😀", "x" * 100_000, "colis remboursement"]):
        probabilities = [p for _, p in ranked]
        assert sorted(label for label, _ in ranked) == sorted(model.labels)
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    assert [len(ranked) for ranked in model.predict(["refund"], top=1)] == [1]


def test_a_saved_model_loads_with_identical_probabilities(
    model: IntentModel, tmp_path: Path
) -> None:
    model.save(tmp_path / "v1")
    loaded = IntentModel.load(tmp_path / "v1")
    texts = ["where is my order", "refund please", "mot de passe"]
    assert loaded.predict(texts) == model.predict(texts)
    assert (loaded.counts, loaded.trained_at) == (model.counts, model.trained_at)
    with pytest.raises(FileNotFoundError):
        IntentModel.load(tmp_path / "none")


def write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "examples.csv"
    path.write_text(content, encoding="utf-8")
    return path


def test_a_training_csv_is_read_as_texts_and_labels(tmp_path: Path) -> None:
    rows = "".join(f'"{text}",{label}\n' for text, label in zip(TEXTS, LABELS, strict=True))
    texts, labels = read_training_csv(write(tmp_path, "\ufefftext,label\n" + rows + "\n"))
    assert texts == TEXTS
    assert labels == LABELS


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("question,intent\nhello,greeting\n", "header 'text,label', found 'question,intent'"),
        ("", "header 'text,label', found ''"),
        ("text,label\n" + "hello,greeting\n" * 5, "at least 2 different labels"),
        ("text,label\n" + "hi,a\n" * 3 + "bye,b\n" * 2, "too few for: b"),
        ("text,label\n" + "hi,a\n" * 3 + "bye,\n" * 3, "example 4 has an empty label"),
        ("text,label\n" + "hi,a\n" * 3 + "bye,b,c\n", "expected 2 columns, found 3"),
        ("text,label\n" + "hi,a\n" * 3 + "\u200b,b\n", "example 4 ('b') has an empty text"),
    ],
)
def test_a_bad_training_csv_is_refused_with_a_clear_message(
    tmp_path: Path, content: str, message: str
) -> None:
    with pytest.raises(TrainingDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_training_csv(write(tmp_path, content))


def test_a_training_csv_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ncafé,a\n".encode("latin-1"))
    with pytest.raises(TrainingDataError, match="not UTF-8"):
        read_training_csv(path)


def test_training_refuses_mismatched_examples() -> None:
    with pytest.raises(TrainingDataError, match="3 texts but 2 labels"):
        train_intent_model(["a", "b", "c"], ["x", "y"])
