"""The whole reading of a batch of messages: language, sentiment, intents, urgency, spam, PII.

Models are loaded once per process, on first use. Texts are read as a batch so that each kind
of feature (embeddings, lexicon scores, n-grams) is computed once for all the models that use it.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from allo.triage import pii, rules
from allo.triage.features import MAX_CHARS, TextBatch
from allo.triage.intents import IntentModel
from allo.triage.language import LanguageDetector
from allo.triage.linear import (
    ARTIFACTS,
    Cascade,
    Consensus,
    TextClassifier,
    load_cascade,
    load_shipped,
    probability_of,
)
from allo.triage.schemas import Assessment, Sentiment

# A custom intent is named when the model gives it at least this probability.
CUSTOM_INTENT_THRESHOLD = 0.5
# A message triage calls negative, and that names no other grievance, is a complaint.
COMPLAINT_BELOW = -0.5
SENTIMENT_LANGUAGES = ("fr", "en")
WARMING_TEXTS = ["Bonjour, ma commande n'est pas arrivée", "My order never came"]


@dataclass(frozen=True)
class CustomIntents:
    """One trained version of an account's own intents."""

    version: int
    model: IntentModel

    @classmethod
    def of(cls, version: int, artifact: bytes) -> CustomIntents:
        key = hashlib.sha256(artifact).hexdigest()
        with _UNPACKED_LOCK:
            if key not in _UNPACKED:
                _UNPACKED[key] = cls(version, unpack_intent_model(artifact))
            return _UNPACKED[key]

    def labels(self, texts: Sequence[str]) -> list[list[str]]:
        return [
            [label for label, p in ranked[:1] if p >= CUSTOM_INTENT_THRESHOLD]
            for ranked in self.model.predict(texts)
        ]


_UNPACKED: dict[str, CustomIntents] = {}
_UNPACKED_LOCK = threading.Lock()


def pack_intent_model(model: IntentModel) -> bytes:
    """The model's folder as one gzipped tar, to keep in the database."""
    with tempfile.TemporaryDirectory() as folder:
        model.save(Path(folder))
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for path in sorted(Path(folder).iterdir()):
                archive.add(path, arcname=path.name)
        return buffer.getvalue()


def unpack_intent_model(artifact: bytes) -> IntentModel:
    with tempfile.TemporaryDirectory() as folder:
        with tarfile.open(fileobj=io.BytesIO(artifact), mode="r:gz") as archive:
            archive.extractall(folder, filter="data")
        return IntentModel.load(Path(folder))


class Assessor:
    """Reads messages. Thread-safe for reading; built once per process."""

    def __init__(self, artifacts: Path = ARTIFACTS) -> None:
        self._artifacts = artifacts
        self._detectors: dict[tuple[str, ...], LanguageDetector] = {}
        self._sentiment_models: dict[tuple[str, bool], Cascade] = {}

    def _model(self, name: str) -> TextClassifier:
        return load_shipped(name, self._artifacts)

    def _sentiment_model(self, language: str, fast: bool) -> Cascade:
        """The language's model, with embeddings (and its e5 second reading where one ships)
        or on the fast path; loaded on first use, so a process on the fast path alone never
        loads the others."""
        key = (language, fast)
        if key not in self._sentiment_models:
            self._sentiment_models[key] = (
                Cascade(self._model(f"sentiment_{language}_fast"))
                if fast
                else load_cascade(f"sentiment_{language}", self._artifacts)
            )
        return self._sentiment_models[key]

    @cached_property
    def _offensive(self) -> dict[bool, TextClassifier]:
        return {False: self._model("offensive"), True: self._model("offensive_fast")}

    @cached_property
    def _spam(self) -> dict[bool, Consensus]:
        """On the path with embeddings, the n-gram and the embeddings models read together; the
        fast path has the n-gram model alone."""
        ngrams = self._model("spam")
        return {
            False: Consensus((ngrams, self._model("spam_embeddings"))),
            True: Consensus((ngrams,)),
        }

    def warm(self) -> None:
        """Load every model and encoder now, the language detectors and second readings
        included, rather than on the first messages that need them. A worker does so before
        its first job, from its main thread: loading e5 sets OMP_NUM_THREADS (see features)."""
        self._detector(SENTIMENT_LANGUAGES).warm()
        for fast in (False, True):
            self.assess(WARMING_TEXTS, SENTIMENT_LANGUAGES, fast=fast)
            for language in SENTIMENT_LANGUAGES:
                cascade = self._sentiment_model(language, fast)
                if cascade.second is not None:
                    cascade.second.predict_proba(WARMING_TEXTS)

    def _detector(self, languages: tuple[str, ...]) -> LanguageDetector:
        if languages not in self._detectors:
            self._detectors[languages] = LanguageDetector(languages)
        return self._detectors[languages]

    def assess(
        self,
        texts: Sequence[str],
        languages: Sequence[str],
        fallbacks: Sequence[str | None] | None = None,
        fast: bool = False,
        custom: CustomIntents | None = None,
    ) -> list[Assessment]:
        """One assessment per text. `languages` are the account's; `fallbacks` the language
        known for each sender (used for texts too short to tell); `fast` leaves embeddings out.
        """
        if not texts:
            return []
        texts = [text[:MAX_CHARS] for text in texts]
        detector = self._detector(tuple(languages))
        known = fallbacks or [None] * len(texts)
        detected = [detector.detect(t, f) for t, f in zip(texts, known, strict=True)]
        batch = TextBatch(texts)
        sentiments = self._sentiments(batch, detected, fast)
        offensive = probability_of(self._offensive[fast], batch, "offensive") >= 0.5
        spam = self._spam[fast].score(batch, "spam") >= 0.5
        custom_labels = custom.labels(texts) if custom else [[] for _ in texts]
        return [
            _assessment(text, language, sentiment, bool(is_spam), bool(is_offensive), extra)
            for text, language, sentiment, is_spam, is_offensive, extra in zip(
                texts, detected, sentiments, spam, offensive, custom_labels, strict=True
            )
        ]

    def _sentiments(
        self, batch: TextBatch, detected: Sequence[str | None], fast: bool
    ) -> list[Sentiment]:
        """Each language's own model; other languages get the English one (its embeddings
        are multilingual), or neutral on the fast path, whose lexicons are French and English."""
        result: list[Sentiment] = [Sentiment(label="neutral", score=0.0)] * len(batch)
        for language in SENTIMENT_LANGUAGES:
            rows = [
                i
                for i, found in enumerate(detected)
                if found == language or (language == "en" and not fast and found != "fr")
            ]
            if not rows:
                continue
            model = self._sentiment_model(language, fast)
            probabilities = model.predict_proba(batch.subset(rows))
            for row, p in zip(rows, probabilities, strict=True):
                result[row] = _sentiment(model.classes, p)
        return result


def _sentiment(classes: Sequence[str], probabilities: np.ndarray) -> Sentiment:
    by_class = dict(zip(classes, (float(p) for p in probabilities), strict=True))
    score = by_class.get("positive", 0.0) - by_class.get("negative", 0.0)
    label = max(by_class, key=lambda name: by_class[name])
    return Sentiment(label=label, score=round(score, 3))


def _assessment(
    text: str,
    language: str | None,
    sentiment: Sentiment,
    spam: bool,
    offensive: bool,
    custom: list[str],
) -> Assessment:
    urgency = [] if spam else rules.urgency(text)
    intents = rules.intent_hints(text)
    if "outage" in urgency:
        intents.add("incident")
    if sentiment.score <= COMPLAINT_BELOW and not intents & {"incident", "churn", "praise"}:
        intents.add("complaint")
    if spam:
        intents = {"spam"}
    ordered = sorted(intents) + [label for label in custom if label not in intents]
    return Assessment(
        language=language,
        sentiment=sentiment,
        intents=ordered or ["other"],
        urgent=bool(urgency),
        urgency=urgency,
        needs_answer=rules.needs_answer(text, intents, spam) or bool(urgency),
        spam=spam,
        offensive=offensive,
        pii=pii.pii_kinds(text),
        place=rules.place(text),
    )
