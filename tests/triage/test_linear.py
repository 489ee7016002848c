from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from allo.triage.features import FeatureSpec, Featurizer, HashSpec, TextBatch
from allo.triage.linear import (
    SECOND_READING,
    Cascade,
    Consensus,
    LinearModel,
    Standardiser,
    TextClassifier,
    cross_validate,
    fit_logistic,
    load_cascade,
    naive_bayes_ratio,
    unsure_rows,
)
from tests.conftest import needs_e5

GOOD = ["great service, thank you", "love it, perfect", "merci, super accueil", "excellent!"]
BAD = ["awful, never again", "terrible delay, angry", "nul, très déçu", "worst support ever"]
SPEC = FeatureSpec(vader="en", hashing=HashSpec(n_features=2**12, chars=(2, 4)))


def trained() -> TextClassifier:
    batch = TextBatch(GOOD + BAD)
    featurizer = Featurizer.fit(SPEC, batch)
    standardiser = Standardiser.fit(featurizer.dense(batch).astype(np.float64), 0.5)
    labels = ["positive"] * len(GOOD) + ["negative"] * len(BAD)
    model = fit_logistic(
        featurizer.transform(batch), labels, 10.0, n_dense=SPEC.n_dense, standardiser=standardiser
    )
    return TextClassifier(featurizer, model, {"note": "test"})


def test_a_multiclass_model_gives_softmax_probabilities() -> None:
    model = LinearModel(
        coef=np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]),
        intercept=np.zeros(3),
        classes=("a", "b", "c"),
    )
    X = np.array([[5.0, 0.0], [0.0, 5.0], [0.0, 0.0]])
    probabilities = model.predict_proba(X)
    assert probabilities.sum(axis=1) == pytest.approx(1.0)
    assert model.predict(X) == ["a", "b", "a"]  # the tie goes to the first class
    assert probabilities[2] == pytest.approx([1 / 3] * 3)


def test_a_binary_model_has_one_row_of_coefficients() -> None:
    model = LinearModel(np.array([[2.0]]), np.array([-1.0]), ("ham", "spam"))
    probabilities = model.predict_proba(np.array([[0.0], [1.0]]))
    assert probabilities[:, 1] == pytest.approx(1 / (1 + np.exp([1.0, -1.0])))
    assert model.predict(np.array([[0.0], [1.0]])) == ["ham", "spam"]


def test_standardising_is_folded_into_the_weights_for_dense_and_sparse_inputs() -> None:
    mean, scale = np.array([10.0, 0.0]), np.array([2.0, 1.0])
    model = LinearModel(np.array([[1.0, -1.0, 3.0]]), np.array([0.5]), ("n", "y"), mean, scale)
    X = np.array([[12.0, 1.0, 1.0], [8.0, 0.0, 0.0]])
    expected = ((X[:, :2] - mean) / scale) @ np.array([1.0, -1.0]) + X[:, 2] * 3.0 + 0.5
    assert model.decision_function(X)[:, 0] == pytest.approx(expected, rel=1e-5)
    assert model.decision_function(sp.csr_matrix(X))[:, 0] == pytest.approx(expected, rel=1e-5)


def test_a_model_refuses_inputs_of_another_width() -> None:
    model = LinearModel(np.ones((1, 3)), np.zeros(1), ("n", "y"))
    with pytest.raises(ValueError, match="2 features given, the model reads 3"):
        model.predict_proba(np.ones((1, 2)))
    with pytest.raises(ValueError, match="coefficient rows"):
        LinearModel(np.ones((2, 3)), np.zeros(2), ("a", "b", "c"))


def test_training_keeps_only_the_columns_the_texts_used() -> None:
    classifier = trained()
    model = classifier.model
    assert model.columns is not None
    assert model.width == SPEC.n_features
    assert len(model.columns) < SPEC.n_features / 4
    assert classifier.predict(["thank you, great", "terrible, angry"]) == ["positive", "negative"]


def test_save_and_load_give_identical_probabilities_and_identical_bytes(tmp_path: Path) -> None:
    classifier = trained()
    texts = ["super, merci", "never again", "", "🙂", "z" * 100_000]
    classifier.save(tmp_path / "one" / "model")
    loaded = TextClassifier.load(tmp_path / "one" / "model")
    assert np.array_equal(loaded.predict_proba(texts), classifier.predict_proba(texts))
    assert loaded.metadata == {"note": "test"}
    assert loaded.featurizer.spec == SPEC
    # The same model saved again (later) is the same bytes: builds are reproducible.
    trained().save(tmp_path / "two" / "model")
    for suffix in (".npz", ".json"):
        first = (tmp_path / "one" / "model").with_suffix(suffix).read_bytes()
        assert first == (tmp_path / "two" / "model").with_suffix(suffix).read_bytes()


def test_a_linear_model_round_trips_alone(tmp_path: Path) -> None:
    model = trained().model
    model.save(tmp_path / "linear", {"trained_on": "test"})
    loaded = LinearModel.load(tmp_path / "linear")
    X = TextBatch(["merci"])
    features = trained().featurizer.transform(X)
    assert np.array_equal(loaded.predict_proba(features), model.predict_proba(features))
    assert loaded.classes == model.classes


def test_cross_validation_gives_out_of_fold_probabilities() -> None:
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(2, 1, (20, 3)), rng.normal(-2, 1, (20, 3))])
    y = ["up"] * 20 + ["down"] * 20
    probabilities, classes = cross_validate(X, y, 1.0, n_dense=3, dense_weight=1.0)
    assert classes == ("down", "up")
    assert probabilities.shape == (40, 2)
    predicted = [classes[i] for i in probabilities.argmax(axis=1)]
    assert np.mean(np.array(predicted) == np.array(y)) > 0.9


NEUTRAL = ["order 1234 shipped", "store opens at nine", "colis en route", "question sur ma facture"]
THREE_WAY = ["positive"] * 4 + ["negative"] * 4 + ["neutral"] * 4


def test_the_naive_bayes_ratio_favours_columns_of_the_positive_rows() -> None:
    present = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=float))
    ratio = naive_bayes_ratio(present, np.array([True, True, False, False]))
    # Positive rows: counts 1+2, 1+1, 1+0 (of 6); the others: 1+0, 1+1, 1+2 (of 6).
    assert ratio == pytest.approx(np.log([3 / 1, 2 / 2, 1 / 3]))


@pytest.mark.parametrize("standardised", [True, False], ids=["standardised", "raw dense"])
def test_naive_bayes_weighting_is_folded_into_one_model_per_class(standardised: bool) -> None:
    """Only the n-grams are weighted: the dense columns never are, standardised or not."""
    from sklearn.linear_model import LogisticRegression

    batch = TextBatch(GOOD + BAD + NEUTRAL)
    featurizer = Featurizer.fit(SPEC, batch)
    standardiser = (
        Standardiser.fit(featurizer.dense(batch).astype(np.float64), 0.5) if standardised else None
    )
    X = featurizer.transform(batch)
    model = fit_logistic(
        X, THREE_WAY, 10.0, n_dense=SPEC.n_dense, standardiser=standardiser, naive_bayes=True
    )
    assert model.one_vs_rest and model.classes == ("negative", "neutral", "positive")

    # The same class trained by hand on n-grams scaled by their ratio decides alike.
    columns = np.union1d(np.arange(SPEC.n_dense), np.unique(X.indices))
    weighted = (standardiser.apply(X) if standardiser else X)[:, columns].tocsr()
    present = weighted[:, SPEC.n_dense :].copy()
    present.data[:] = 1
    is_positive = np.array(THREE_WAY) == "positive"
    scaling = np.concatenate([np.ones(SPEC.n_dense), naive_bayes_ratio(present, is_positive)])
    reference = LogisticRegression(C=10.0, max_iter=3000).fit(
        weighted @ sp.diags(scaling), is_positive
    )
    expected = reference.decision_function(weighted @ sp.diags(scaling))
    assert model.decision_function(X)[:, 2] == pytest.approx(expected, rel=1e-3, abs=1e-3)

    # Probabilities are the classes' sigmoids, normalised.
    sigmoids = 1 / (1 + np.exp(-model.decision_function(X).astype(np.float64)))
    assert model.predict_proba(X) == pytest.approx(
        sigmoids / sigmoids.sum(axis=1, keepdims=True), rel=1e-5
    )
    assert model.predict(X) == THREE_WAY


def test_a_naive_bayes_model_of_two_classes_has_one_row_and_round_trips(tmp_path: Path) -> None:
    batch = TextBatch(GOOD + BAD)
    featurizer = Featurizer.fit(SPEC, batch)
    labels = ["positive"] * 4 + ["negative"] * 4
    model = fit_logistic(
        featurizer.transform(batch), labels, 10.0, n_dense=SPEC.n_dense, naive_bayes=True
    )
    assert model.coef.shape[0] == 1 and not model.one_vs_rest
    three = TextBatch(GOOD + BAD + NEUTRAL)
    featurizer = Featurizer.fit(SPEC, three)
    classifier = TextClassifier(
        featurizer,
        fit_logistic(
            featurizer.transform(three), THREE_WAY, 10.0, n_dense=SPEC.n_dense, naive_bayes=True
        ),
    )
    classifier.save(tmp_path / "model")
    loaded = TextClassifier.load(tmp_path / "model")
    assert loaded.model.one_vs_rest
    texts = ["super, merci", "awful", "", "🙂"]
    assert np.array_equal(loaded.predict_proba(texts), classifier.predict_proba(texts))


def test_a_standardiser_must_cover_the_dense_columns_exactly() -> None:
    batch = TextBatch(GOOD + BAD)
    featurizer = Featurizer.fit(SPEC, batch)
    standardiser = Standardiser.fit(featurizer.dense(batch).astype(np.float64), 0.5)
    labels = ["positive"] * len(GOOD) + ["negative"] * len(BAD)
    with pytest.raises(ValueError, match="standardiser of 4 columns for 0"):
        fit_logistic(featurizer.transform(batch), labels, 1.0, n_dense=0, standardiser=standardiser)


def test_naive_bayes_weighting_needs_hashed_n_grams() -> None:
    with pytest.raises(ValueError, match="hashed n-grams"):
        fit_logistic(np.ones((4, 2)), ["a", "b", "a", "b"], 1.0, n_dense=2, naive_bayes=True)


def second_reading(classes: list[str] | None = None) -> TextClassifier:
    """A model that reads e5 embeddings too, trained on the same texts."""
    spec = FeatureSpec(e5=True, vader="en", hashing=HashSpec(n_features=2**12))
    batch = TextBatch(GOOD + BAD)
    featurizer = Featurizer.fit(spec, batch)
    standardiser = Standardiser.fit(featurizer.dense(batch).astype(np.float64), 0.5)
    labels = classes or ["positive"] * len(GOOD) + ["negative"] * len(BAD)
    model = fit_logistic(
        featurizer.transform(batch), labels, 1.0, n_dense=spec.n_dense, standardiser=standardiser
    )
    return TextClassifier(featurizer, model, {"rereads": "first", "rereads_below": 0.8})


CASCADE_TEXTS = ["great service, thank you", "meh", "worst support ever", "ok then", ""]


@needs_e5
def test_a_cascade_reads_again_only_the_rows_its_first_model_is_unsure_of() -> None:
    first, second = trained(), second_reading()
    alone = first.predict_proba(CASCADE_TEXTS)
    again = second.predict_proba(CASCADE_TEXTS)
    below = float(np.median(alone.max(axis=1)))
    unsure = unsure_rows(alone, below)
    assert 0 < len(unsure) < len(CASCADE_TEXTS)
    batch = TextBatch(CASCADE_TEXTS)
    combined = Cascade(first, second, below).predict_proba(batch)
    sure = np.setdiff1d(np.arange(len(CASCADE_TEXTS)), unsure)
    assert np.array_equal(combined[sure], alone[sure])
    assert np.allclose(combined[unsure], again[unsure], atol=1e-6)
    # Only the unsure rows were embedded by e5, in a batch of their own.
    assert batch._e5 is None


@needs_e5
def test_a_cascade_without_a_second_model_or_unsure_rows_is_its_first_model() -> None:
    first = trained()
    alone = first.predict_proba(CASCADE_TEXTS)
    assert np.array_equal(Cascade(first).predict_proba(CASCADE_TEXTS), alone)
    assert np.array_equal(Cascade(first, second_reading(), 0.0).predict_proba(CASCADE_TEXTS), alone)
    assert Cascade(first).predict(CASCADE_TEXTS) == first.predict(CASCADE_TEXTS)


@needs_e5
def test_a_second_reading_must_answer_with_the_same_classes() -> None:
    other = second_reading(["happy"] * len(GOOD) + ["negative"] * len(BAD))
    with pytest.raises(ValueError, match="re-read"):
        Cascade(trained(), other, 0.5)


@needs_e5
def test_a_shipped_model_is_loaded_with_its_second_reading_when_one_is_saved(
    tmp_path: Path,
) -> None:
    trained().save(tmp_path / "sentiment_xx")
    assert load_cascade("sentiment_xx", tmp_path).second is None
    second_reading().save(tmp_path / f"sentiment_xx{SECOND_READING}")
    cascade = load_cascade("sentiment_xx", tmp_path)
    assert cascade.second is not None
    assert cascade.below == 0.8
    assert cascade.classes == trained().classes


def test_models_read_together_score_the_geometric_mean_of_their_probabilities() -> None:
    first, second = trained(), trained()
    second.model = fit_logistic(
        second.featurizer.transform(TextBatch(GOOD + BAD)),
        ["positive"] * len(GOOD) + ["negative"] * len(BAD),
        0.1,
        n_dense=SPEC.n_dense,
        standardiser=Standardiser.fit(
            second.featurizer.dense(TextBatch(GOOD + BAD)).astype(np.float64), 0.5
        ),
    )
    texts = ["great, thank you", "awful delay", "", "🙂"]
    p = first.predict_proba(texts)[:, first.classes.index("positive")]
    q = second.predict_proba(texts)[:, second.classes.index("positive")]
    assert not np.allclose(p, q)
    together = Consensus((first, second)).score(texts, "positive")
    assert np.allclose(together, np.sqrt(p * q))
    assert np.allclose(Consensus((first,)).score(texts, "positive"), p)


def test_where_e5_cannot_run_a_shipped_model_is_read_without_its_second_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    trained().save(tmp_path / "sentiment_xx")
    trained().save(tmp_path / f"sentiment_xx{SECOND_READING}")
    monkeypatch.setattr("allo.triage.linear.e5_available", lambda: False)
    with caplog.at_level("WARNING", logger="allo.triage.linear"):
        cascade = load_cascade("sentiment_xx", tmp_path)
    assert cascade.second is None
    assert "sentiment_xx is read without its second reading" in caplog.text
    assert cascade.predict(CASCADE_TEXTS) == trained().predict(CASCADE_TEXTS)
