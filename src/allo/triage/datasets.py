"""Loaders for the labelled data sets the triage models are trained and measured on.

Each loader returns the texts and their labels as two lists of equal length, with the quirks of
its files repaired here (escapes, encodings, placeholders), so models and evaluation never see
them. The data folder is not in the package: it is found from a parameter, `ALLO_SHARED_DATA`,
or the folder next to the repository.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

SENTIMENT = ("negative", "neutral", "positive")
REVIEW_LABELS = ("negative", "positive")
OFFENSIVE_LABELS = ("not_offensive", "offensive")
SPAM_LABELS = ("ham", "spam")

# Licences as the data folder's README gives them (none is given for the tweet and review sets).
LICENCES = {
    "tweets_fr": "not stated in the data README (cardiffnlp/xlm-t, DEFT 2017)",
    "tweets_en": "not stated in the data README (cardiffnlp/xlm-t, SemEval 2017)",
    "reviews_fr": "not stated in the data README (Dong & de Melo release of Allociné reviews)",
    "banking77": "CC BY 4.0",
    "offensive": "not stated in the data README (cardiffnlp/tweeteval)",
    "spam": "CC BY 4.0 (UCI YouTube Spam Collection)",
}

_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


class DataError(Exception):
    """The data folder or one of its files is missing or not as expected."""


@dataclass(frozen=True)
class Labelled:
    """Texts with their labels (strings), and the files they were read from."""

    texts: list[str]
    labels: list[str]
    files: tuple[Path, ...]


def data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: `path`, else `ALLO_SHARED_DATA`, else the one beside the repository."""
    if path is None:
        path = os.environ.get("ALLO_SHARED_DATA") or _beside_repository()
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(
            f"data folder {folder} not found: pass it, or set ALLO_SHARED_DATA to the folder "
            "that holds sentiment/, intent/, offensive/ and spam/"
        )
    return folder


def _beside_repository() -> Path:
    # The repository root is the first parent holding pyproject.toml; the data sits in a sibling
    # folder. Joined part by part so no path literal of it is written into the package.
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent.parent / "shared" / "data"
    raise DataError("no data folder given, ALLO_SHARED_DATA is unset and no repository was found")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    # splitlines: some files have no final newline, and a trailing empty line is not a row.
    return path.read_text(encoding="utf-8").splitlines()


def _paired(text_file: Path, label_file: Path, names: tuple[str, ...]) -> Labelled:
    texts, raw = _lines(text_file), _lines(label_file)
    if len(texts) != len(raw):
        raise DataError(f"{text_file} has {len(texts)} rows but {label_file} has {len(raw)}")
    try:
        labels = [names[int(value)] for value in raw]
    except (ValueError, IndexError) as error:
        raise DataError(f"{label_file}: a label is not one of 0..{len(names) - 1}") from error
    return Labelled(texts, labels, (text_file, label_file))


def _unescape_tweet(text: str) -> str:
    # The English tweets carry literal "\u2019" escapes and CSV quoting left over from an export
    # ('"\""""Speed Kills\""""..."'): repaired so the text reads as it was posted.
    text = _ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), text)
    text = text.replace('\\"', '"')
    if len(text) > 1 and text.startswith('"') and text.rstrip().endswith('"'):
        text = text.strip()[1:-1]
    return re.sub(r'"{2,}', '"', text).strip()


def tweets(language: str, split: str, folder: Path | None = None) -> Labelled:
    """Sentiment tweets, `language` fr or en, `split` train or val: negative/neutral/positive."""
    if language not in ("fr", "en") or split not in ("train", "val"):
        raise ValueError(f"no tweets for {language!r} {split!r}")
    base = data_dir(folder) / "sentiment" / f"tweets_{language}"
    found = _paired(base / f"{split}_text.txt", base / f"{split}_labels.txt", SENTIMENT)
    if language == "en":
        return Labelled([_unescape_tweet(t) for t in found.texts], found.labels, found.files)
    return found


def reviews_fr(split: str, folder: Path | None = None) -> Labelled:
    """French TV-series reviews (lower-cased, tokenised), `split` train or dev: polarity."""
    if split not in ("train", "dev"):
        raise ValueError(f"no reviews split {split!r}")
    path = data_dir(folder) / "sentiment" / "reviews_fr" / f"{split}.tsv"
    texts, labels = [], []
    for number, line in enumerate(_lines(path), 1):
        label, tab, text = line.partition("\t")
        if not tab or label not in ("0", "1"):
            raise DataError(f"{path}:{number}: expected 'label<TAB>text' with label 0 or 1")
        texts.append(text)
        labels.append(REVIEW_LABELS[int(label)])
    return Labelled(texts, labels, (path,))


def banking77(folder: Path | None = None) -> Labelled:
    """banking77's train part (the only part here): 77 intent names."""
    path = data_dir(folder) / "intent" / "banking77" / "train.csv"
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or set(rows[0]) != {"text", "category"}:
        raise DataError(f"{path}: expected a header 'text,category'")
    return Labelled([row["text"] for row in rows], [row["category"] for row in rows], (path,))


def offensive(split: str, folder: Path | None = None) -> Labelled:
    """TweetEval offensive (English), `split` train or val; not_offensive/offensive."""
    if split not in ("train", "val"):
        raise ValueError(f"no offensive split {split!r}")
    base = data_dir(folder) / "offensive"
    found = _paired(base / f"{split}_text.txt", base / f"{split}_labels.txt", OFFENSIVE_LABELS)
    # The set replaced links by the word URL; "http" is the placeholder the features use.
    texts = [re.sub(r"\bURL\b", "http", text) for text in found.texts]
    return Labelled(texts, found.labels, found.files)


def spam(folder: Path | None = None) -> Labelled:
    """YouTube comments (one video), ham/spam.

    The file has no header, and its labels are the words spam/ham (not 0/1 as the source says);
    it is cp1252 with bytes cp1252 leaves undefined, which become U+FFFD.
    """
    path = data_dir(folder) / "spam" / "Youtube01-Psy.csv"
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    raw = path.read_bytes().decode("cp1252", errors="replace")
    texts, labels = [], []
    for number, row in enumerate(csv.reader(io.StringIO(raw, newline="")), 1):
        if len(row) != 2 or row[0] not in SPAM_LABELS:
            raise DataError(f"{path}:{number}: expected 'spam|ham,text'")
        labels.append(row[0])
        texts.append(row[1])
    return Labelled(texts, labels, (path,))


def relative(path: Path, folder: Path) -> str:
    """A data file's name inside the data folder (what a manifest records)."""
    return path.relative_to(folder).as_posix()


def twcs_customer_texts(folder: Path | None = None) -> tuple[list[str], Path]:
    """Customers' tweets to brands (TWCS union), without labels: for evaluation only.

    Its licence is non-commercial (CC BY-NC-SA 4.0): no shipped model is trained on it. It
    measures how often models flag ordinary customer-care messages (as spam, say).
    """
    path = data_dir(folder) / "twcs" / "union.csv"
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    with path.open(encoding="utf-8", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle) if row["inbound"] == "True"]
    return texts, path
