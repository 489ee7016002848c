"""Custom intents: an account's own labels, learnt from a few examples each.

This is the path an account admin takes (and `allo triage train-intents`): `text,label` rows in,
an `IntentModel` out, saved in a folder with what it was trained on. Training runs at run time,
so it uses scikit-learn; predicting uses numpy alone.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from allo.triage.features import (
    EMBEDDING_DIM,
    FeatureSpec,
    Featurizer,
    HashSpec,
    TextBatch,
    normalize,
)
from allo.triage.linear import Standardiser, TextClassifier, fit_logistic

FORMAT_VERSION = 1
MIN_EXAMPLES = 3
MIN_LABELS = 2
MAX_LABEL_CHARS = 100
# Sentence embeddings beside word and character n-grams: the embeddings know paraphrases, the
# n-grams know an account's own words (product names, codes). Both blocks have norm 1. C is not
# searched per account (too slow for an admin waiting on a form): 10, the usual value for tf-idf
# models, was compared with 30 on two banking77 folds, so the banking77 figure `allo eval`
# reports is slightly optimistic.
SPEC = FeatureSpec(embedding=True, hashing=HashSpec(chars=(2, 5)))
C = 10.0
MODEL_FILE = "intents"


class TrainingDataError(ValueError):
    """The examples cannot train a model; the message says which row or label, and why."""


@dataclass
class IntentModel:
    """A custom intent classifier with what it was trained on."""

    classifier: TextClassifier
    counts: dict[str, int]
    trained_at: str
    version: int = FORMAT_VERSION

    @property
    def labels(self) -> tuple[str, ...]:
        return self.classifier.classes

    def predict(
        self, texts: Sequence[str] | TextBatch, top: int | None = None
    ) -> list[list[tuple[str, float]]]:
        """For each text, (label, probability) pairs, most probable first (`top` of them)."""
        probabilities = self.classifier.predict_proba(texts)
        ranked = []
        for row in probabilities:
            order = np.argsort(-row, kind="stable")[:top]
            ranked.append([(self.labels[i], float(row[i])) for i in order])
        return ranked

    def save(self, folder: Path) -> None:
        metadata = {
            "kind": "custom_intents",
            "version": self.version,
            "trained_at": self.trained_at,
            "counts": self.counts,
        }
        classifier = TextClassifier(self.classifier.featurizer, self.classifier.model, metadata)
        folder.mkdir(parents=True, exist_ok=True)
        classifier.save(folder / MODEL_FILE)

    @classmethod
    def load(cls, folder: Path) -> IntentModel:
        path = folder / MODEL_FILE
        if not path.with_suffix(".json").is_file():
            raise FileNotFoundError(f"no intent model in {folder}")
        classifier = TextClassifier.load(path)
        meta = classifier.metadata
        if meta.get("kind") != "custom_intents" or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{folder} holds no intent model of version {FORMAT_VERSION}")
        return cls(classifier, dict(meta["counts"]), str(meta["trained_at"]), FORMAT_VERSION)


def check_examples(texts: Sequence[str], labels: Sequence[str]) -> dict[str, int]:
    """Refuse examples that cannot train a useful model; else the count of each label."""
    if len(texts) != len(labels):
        raise TrainingDataError(f"{len(texts)} texts but {len(labels)} labels")
    for number, (text, label) in enumerate(zip(texts, labels, strict=True), 1):
        if not label.strip():
            raise TrainingDataError(f"example {number} has an empty label")
        if len(label) > MAX_LABEL_CHARS:
            raise TrainingDataError(
                f"example {number}: a label is at most {MAX_LABEL_CHARS} characters"
            )
        if not normalize(text):
            raise TrainingDataError(f"example {number} ({label!r}) has an empty text")
    counts = Counter(labels)
    if len(counts) < MIN_LABELS:
        raise TrainingDataError(
            f"at least {MIN_LABELS} different labels are needed, found {len(counts)}"
        )
    few = sorted(label for label, count in counts.items() if count < MIN_EXAMPLES)
    if few:
        raise TrainingDataError(
            f"each label needs at least {MIN_EXAMPLES} examples; too few for: {', '.join(few)}"
        )
    return dict(sorted(counts.items()))


def train_intent_model(texts: Sequence[str] | TextBatch, labels: Sequence[str]) -> IntentModel:
    """Train a custom intent model on examples (at least 2 labels, 3 examples each).

    `texts` may be a TextBatch whose features are already computed (cross-validation).
    """
    labels = [label.strip() for label in labels]
    batch = texts if isinstance(texts, TextBatch) else TextBatch(texts)
    counts = check_examples(batch.texts, labels)
    featurizer = Featurizer.fit(SPEC, batch)
    # The embeddings are used as they are (norm 1, like the n-gram block): a zero mean and a
    # unit scale keep them raw.
    raw = Standardiser(np.zeros(EMBEDDING_DIM), np.ones(EMBEDDING_DIM))
    # float16 halves what is stored (77 intents on banking77: 9 MB) and moves no prediction.
    model = fit_logistic(
        featurizer.transform(batch),
        labels,
        C,
        n_dense=featurizer.spec.n_dense,
        standardiser=raw,
        dtype=np.float16,
    )
    trained_at = datetime.now(UTC).isoformat(timespec="seconds")
    return IntentModel(TextClassifier(featurizer, model), counts, trained_at)


def read_training_csv(path: Path) -> tuple[list[str], list[str]]:
    """`text,label` rows (a header naming those two columns, UTF-8) as texts and labels."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [name.strip().lower() for name in next(reader, [])]
            if header != ["text", "label"]:
                found = ",".join(header)
                raise TrainingDataError(
                    f"{path}: the first row must be the header 'text,label', found {found!r}"
                )
            texts, labels = [], []
            for number, row in enumerate(reader, 2):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != 2:
                    raise TrainingDataError(
                        f"{path}:{number}: expected 2 columns, found {len(row)}"
                    )
                texts.append(row[0])
                labels.append(row[1].strip())
    except UnicodeDecodeError as error:
        raise TrainingDataError(f"{path} is not UTF-8: {error}") from error
    except csv.Error as error:
        raise TrainingDataError(f"{path}: {error}") from error
    check_examples(texts, labels)
    return texts, labels
