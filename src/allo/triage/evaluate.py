"""`allo eval`: every figure the triage issue asks for, measured on the data folder.

Scores are on validation parts the models never chose anything on, or by cross-validation on
a training part where there is no other (banking77, the YouTube spam set). Each figure comes
with its goal and the baselines beside it; nothing here is a stored number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from allo.triage import datasets
from allo.triage.build import (
    RECIPES,
    Data,
    accuracy,
    choose,
    fit_recipe,
    load_data,
    macro_f1,
    polarity,
    spam_embeddings_training_set,
    spam_f1,
    spam_training_set,
)
from allo.triage.features import Featurizer, TextBatch, vader
from allo.triage.intents import train_intent_model
from allo.triage.linear import (
    ARTIFACTS,
    SEED,
    Cascade,
    Consensus,
    Reader,
    load_cascade,
    load_shipped,
)

SPEED_BATCH = 500
# VADER's usual thresholds on its compound score for a three-way label.
VADER_NEUTRAL = 0.05

Log = Callable[[str], None]
# The shipped models by name; sentiment_fr and sentiment_en with their second reading, if any.
Models = dict[str, Reader]
# Reads a batch of texts whose languages are known.
Runner = Callable[[list[str], list[str]], None]


@dataclass
class Figure:
    """One measured figure, its goal (at least, or at most) and the baselines beside it."""

    measure: str
    value: float
    unit: str = ""
    goal: float | None = None
    at_most: bool = False
    baselines: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.value <= self.goal if self.at_most else self.value >= self.goal

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"met": self.met}


def _majority(train_labels: Sequence[str], size: int) -> list[str]:
    values, counts = np.unique(np.asarray(train_labels), return_counts=True)
    return [str(values[counts.argmax()])] * size


def _vader_labels(texts: Sequence[str], language: str) -> list[str]:
    compound = vader(TextBatch(texts).texts, language)[:, 3]
    return [
        "positive" if c >= VADER_NEUTRAL else "negative" if c <= -VADER_NEUTRAL else "neutral"
        for c in compound
    ]


def language_figures(data: Data) -> list[Figure]:
    """Accuracy of the language detector (French and English only) on every tweet of each set:
    the detector learns nothing from them, so train and val parts are both fair."""
    from allo.triage.language import LanguageDetector

    detector = LanguageDetector(("fr", "en"))
    figures = []
    for language, name in (("fr", "French"), ("en", "English")):
        texts = (
            data.sets[f"tweets_{language}/train"].texts + data.sets[f"tweets_{language}/val"].texts
        )
        found = [detector.detect(text) for text in texts]
        figures.append(
            Figure(
                f"accuracy, {name} tweets ({len(texts):,})",
                accuracy([language] * len(texts), [str(code) for code in found]),
                goal=0.99,
                note=f"undecided: {sum(code is None for code in found)}",
            )
        )
    return figures


def sentiment_figures(data: Data, models: Models) -> list[Figure]:
    figures = []
    for language, name, goal in (("fr", "French", 0.72), ("en", "English", 0.68)):
        train, val = data.sets[f"tweets_{language}/train"], data.sets[f"tweets_{language}/val"]
        batch = data.batch(f"tweets_{language}/val")
        model = models[f"sentiment_{language}"]
        baselines = {}
        if isinstance(model, Cascade) and model.second is not None:
            baselines["without e5 second reading"] = macro_f1(
                val.labels, model.first.predict(batch)
            )
        baselines |= {
            "fast path": macro_f1(val.labels, models[f"sentiment_{language}_fast"].predict(batch)),
            "VADER": macro_f1(val.labels, _vader_labels(val.texts, language)),
            "majority": macro_f1(val.labels, _majority(train.labels, len(val.labels))),
        }
        figures.append(
            Figure(
                f"macro-F1, {name} tweets (val, {len(val.labels)})",
                macro_f1(val.labels, model.predict(batch)),
                goal=goal,
                baselines=baselines,
            )
        )
    train, dev = data.sets["reviews_fr/train"], data.sets["reviews_fr/dev"]
    batch = data.batch("reviews_fr/dev")
    fast = models["sentiment_fr_fast"]
    compound = vader(batch.texts, "fr")[:, 3]
    figures.append(
        Figure(
            f"accuracy, French reviews (dev, {len(dev.labels)})",
            accuracy(
                dev.labels,
                polarity(
                    models["sentiment_fr"].predict_proba(batch), models["sentiment_fr"].classes
                ),
            ),
            goal=0.90,
            baselines={
                "fast path": accuracy(
                    dev.labels, polarity(fast.predict_proba(batch), fast.classes)
                ),
                "VADER": accuracy(
                    dev.labels, ["positive" if c >= 0 else "negative" for c in compound]
                ),
                "majority": accuracy(dev.labels, _majority(train.labels, len(dev.labels))),
            },
            note="the French sentiment model (trained on tweets and reviews), read as the likelier "
            "of negative and positive",
        )
    )
    return figures


def intent_figures(data: Data, folds: int, log: Log) -> list[Figure]:
    """banking77 by cross-validation, each fold trained as an account's custom intents are."""
    from sklearn.model_selection import StratifiedKFold

    banking = data.sets["banking77/train"]
    labels = np.asarray(banking.labels)
    batch = data.batch("banking77/train")
    correct, started = 0, time.process_time()
    splitter = StratifiedKFold(folds, shuffle=True, random_state=SEED)
    for number, (train, test) in enumerate(splitter.split(np.zeros(len(labels)), labels), 1):
        model = train_intent_model(batch.subset(train), labels[train].tolist())
        predicted = [ranked[0][0] for ranked in model.predict(batch.subset(test), top=1)]
        correct += int(np.sum(np.asarray(predicted) == labels[test]))
        log(f"banking77 fold {number}/{folds}: {correct} right so far")
    cpu = time.process_time() - started
    return [
        Figure(
            f"accuracy, banking77 ({folds}-fold CV on its {len(labels):,} train rows, 77 intents)",
            correct / len(labels),
            goal=0.92,
            baselines={
                "majority": accuracy(banking.labels, _majority(banking.labels, len(labels)))
            },
            note=f"custom-intents training: {cpu / folds:.0f} s of CPU per fold",
        )
    ]


def offensive_figures(data: Data, models: Models) -> list[Figure]:
    train, val = data.sets["offensive/train"], data.sets["offensive/val"]
    batch = data.batch("offensive/val")
    return [
        Figure(
            f"macro-F1, offensive tweets (val, {len(val.labels):,})",
            macro_f1(val.labels, models["offensive"].predict(batch)),
            goal=0.75,
            baselines={
                "fast path": macro_f1(val.labels, models["offensive_fast"].predict(batch)),
                "majority": macro_f1(val.labels, _majority(train.labels, len(val.labels))),
            },
        )
    ]


def spam_figures(data: Data, models: Models, folds: int = 5) -> list[Figure]:
    """Nested cross-validation on the YouTube set: in each fold, both spam models choose C on
    its training part, with the build's recipes (their extra ham included), and its YouTube
    test rows are read as triage reads them with embeddings (both models together) and, beside,
    by each model alone."""
    from sklearn.model_selection import StratifiedKFold

    recipes = {recipe.name: recipe for recipe, _ in RECIPES if recipe.task == "spam"}
    training_sets = {"spam": spam_training_set, "spam_embeddings": spam_embeddings_training_set}
    youtube = data.sets["spam"]
    batch = data.batch("spam")
    spam = {name: np.zeros(len(youtube.labels)) for name in [*recipes, "together"]}
    for name, recipe in recipes.items():
        # Features of every comment and ham text, computed once: each fold's rows are cut
        # from that batch with them.
        everything = training_sets[name](data).batch
        Featurizer.fit(recipe.spec, everything).transform(everything)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=SEED)
    for train, test in splitter.split(np.zeros(len(youtube.labels)), youtube.labels):
        fold = {}
        for name, recipe in recipes.items():
            training = training_sets[name](data, train.tolist())
            best = choose(recipe, training).best
            fold[name] = fit_recipe(
                recipe, training.batch, training.labels, best.C, best.dense_weight
            )
        rows = batch.subset(test.tolist())
        for name, model in fold.items():
            spam[name][test] = Consensus((model,)).score(rows, "spam")
        spam["together"][test] = Consensus(tuple(fold.values())).score(rows, "spam")
    customers, _ = datasets.twcs_customer_texts(data.folder)
    customer_batch = TextBatch(customers)
    ngrams = Consensus((models["spam"],)).score(customer_batch, "spam")
    both = Consensus((models["spam"], models["spam_embeddings"])).score(customer_batch, "spam")

    def f1(scores: NDArray[np.float64]) -> float:
        return spam_f1(youtube.labels, ["spam" if s >= 0.5 else "ham" for s in scores])

    return [
        Figure(
            f"F1 of spam, YouTube comments ({folds}-fold nested CV, {len(youtube.labels)})",
            f1(spam["together"]),
            goal=0.90,
            baselines={
                "n-grams alone (fast path)": f1(spam["spam"]),
                "embeddings alone": f1(spam["spam_embeddings"]),
                "all spam": spam_f1(youtube.labels, ["spam"] * len(youtube.labels)),
            },
        ),
        Figure(
            f"share flagged as spam, TWCS customer tweets ({len(customers):,}, never trained on)",
            float(np.mean(both >= 0.5)),
            baselines={"n-grams alone (fast path)": float(np.mean(ngrams >= 0.5))},
            note="ordinary customer-care messages: lower is better",
        ),
    ]


def _model_part(models: Models, fast: bool) -> Runner:
    """What triage's models do with a batch: sentiment by language, offensive, spam (with
    embeddings, both spam models)."""
    suffix = "_fast" if fast else ""

    def run(texts: list[str], languages: list[str]) -> None:
        batch = TextBatch(texts)
        for language in ("fr", "en"):
            rows = [i for i, found in enumerate(languages) if found == language]
            if rows:
                models[f"sentiment_{language}{suffix}"].predict_proba(batch.subset(rows))
        models[f"offensive{suffix}"].predict_proba(batch)
        models["spam"].predict_proba(batch)
        if not fast:
            models["spam_embeddings"].predict_proba(batch)

    return run


def _whole_triage(fast: bool) -> Runner:
    from allo.triage.assessor import Assessor

    assessor = Assessor()

    def run(texts: list[str], languages: list[str]) -> None:
        assessor.assess(texts, ("fr", "en"), fast=fast)

    return run


def _throughput(run: Runner, texts: list[str], languages: list[str]) -> tuple[float, float]:
    """Messages per CPU second (best of three runs of the whole batch), and the p99 wall time
    of one message read alone, in milliseconds."""
    run(texts[:10], languages[:10])  # loads the models, the encoder and the lexicons
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        run(texts, languages)
        best = min(best, time.process_time() - started)
    latencies = []
    for text, language in zip(texts, languages, strict=True):
        started = time.perf_counter()
        run([text], [language])
        latencies.append(time.perf_counter() - started)
    return len(texts) / best, float(np.percentile(latencies, 99) * 1000)


def speed_figures(data: Data, models: Models) -> list[Figure]:
    """Single-thread speed on a batch of 500 tweets (half French, half English)."""
    half = SPEED_BATCH // 2
    texts = data.sets["tweets_fr/val"].texts[:half] + data.sets["tweets_en/val"].texts[:half]
    languages = ["fr"] * half + ["en"] * half
    runners: tuple[tuple[str, Callable[[bool], Runner], bool], ...] = (
        ("models", lambda fast: _model_part(models, fast), False),
        ("whole triage", _whole_triage, True),
    )
    figures = []
    for label, make, with_goal in runners:
        # The issue's goals are for the whole triage; the models' part is shown to say where
        # the time goes.
        for fast, path, goal in ((False, "with embeddings", 150.0), (True, "fast path", 3000.0)):
            rate, p99 = _throughput(make(fast), texts, languages)
            figures.append(
                Figure(
                    f"{label}, {path}: messages/s per core",
                    rate,
                    "msg/s",
                    goal if with_goal else None,
                )
            )
            figures.append(Figure(f"{label}, {path}: p99 latency of one message", p99, "ms"))
    return figures


MEMORY_PROBE = """
import json, sys
from allo import jobs  # the worker's own modules
from allo.triage.assessor import Assessor
assessor = Assessor(__import__("pathlib").Path(sys.argv[1]))
assessor.warm()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({key: int(status[key].split()[0]) for key in ("VmRSS", "VmHWM")}))
"""


def memory_figures(artifacts: Path) -> list[Figure]:
    """Resident memory of a fresh process with the worker's modules and every model loaded."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(  # noqa: S603 (this interpreter, fixed code)
        [sys.executable, "-c", MEMORY_PROBE, str(artifacts)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=True,
    )
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return [
        Figure(
            "resident memory, worker modules and all models loaded",
            found["VmRSS"] / 1024,
            "MB",
            600.0,
            at_most=True,
            note=f"peak {found['VmHWM'] / 1024:.0f} MB",
        ),
    ]


def evaluate(
    data_dir: Path | None = None,
    artifacts_dir: Path = ARTIFACTS,
    *,
    intent_folds: int = 5,
    log: Log = print,
) -> dict[str, Any]:
    """Every figure of `allo eval`, grouped by task (see `render`)."""
    started = time.monotonic()
    data = load_data(datasets.data_dir(data_dir).resolve())
    models: Models = {
        name: load_cascade(name, artifacts_dir) for name in ("sentiment_fr", "sentiment_en")
    }
    # A second reading is loaded with the model it re-reads, in its cascade.
    models |= {
        recipe.name: load_shipped(recipe.name, artifacts_dir)
        for recipe, _ in RECIPES
        if recipe.name not in models and recipe.rereads is None
    }
    manifest = json.loads((artifacts_dir / "manifest.json").read_text())
    tasks: dict[str, list[Figure]] = {}
    steps: tuple[tuple[str, Callable[[], list[Figure]]], ...] = (
        ("language", lambda: language_figures(data)),
        ("sentiment", lambda: sentiment_figures(data, models)),
        ("intents", lambda: intent_figures(data, intent_folds, log)),
        ("offensive", lambda: offensive_figures(data, models)),
        ("spam", lambda: spam_figures(data, models)),
        ("speed", lambda: speed_figures(data, models)),
        ("memory", lambda: memory_figures(artifacts_dir)),
    )
    for task, step in steps:
        began = time.monotonic()
        tasks[task] = step()
        log(f"{task}: done in {time.monotonic() - began:.0f} s")
    return {
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifacts_built_at": manifest["built_at"],
        "seconds": round(time.monotonic() - started, 1),
        "tasks": {
            task: [figure.to_json() for figure in figures] for task, figures in tasks.items()
        },
    }


def _format(value: float, unit: str) -> str:
    if unit in ("msg/s", "MB"):
        return f"{value:,.0f} {unit}"
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:.3f}"


def render(results: dict[str, Any]) -> str:
    """One Markdown table per task."""
    lines = [f"Evaluated {results['evaluated_at']} (models built {results['artifacts_built_at']})."]
    for task, figures in results["tasks"].items():
        lines += [
            "",
            f"### {task.capitalize()}",
            "",
            "| measure | value | beside it | goal | met |",
            "|---|---|---|---|---|",
        ]
        for figure in figures:
            beside = " · ".join(
                f"{name} {_format(value, figure['unit'])}"
                for name, value in figure["baselines"].items()
            )
            if figure["note"]:
                beside = f"{beside} ({figure['note']})" if beside else figure["note"]
            goal = ""
            if figure["goal"] is not None:
                goal = ("≤ " if figure["at_most"] else "≥ ") + _format(
                    figure["goal"], figure["unit"]
                )
            met = {True: "yes", False: "**no**", None: ""}[figure["met"]]
            value = _format(figure["value"], figure["unit"])
            lines.append(f"| {figure['measure']} | {value} | {beside} | {goal} | {met} |")
    return "\n".join(lines) + "\n"
