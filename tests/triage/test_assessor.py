"""The whole reading of a batch, as intake runs it: the e5 second reading of unsure messages."""

import json
import subprocess
import sys

import numpy as np
import pytest

from allo.triage.assessor import Assessor
from allo.triage.linear import load_cascade, load_shipped
from tests.conftest import needs_e5

# Plain and hedged English messages: the first model is sure of some, unsure of others.
ENGLISH = [
    "Thank you so much, the support team was wonderful!",
    "My parcel is lost and nobody answers, this is unacceptable",
    "ok",
    "well I guess it works now, kind of",
    "not sure what to think about the new app",
    "is the store open on sunday?",
    "the update changed the menu",
    "hmm ok",
]


@pytest.fixture(scope="module")
def assessor() -> Assessor:
    return Assessor()


@needs_e5
def test_english_messages_the_first_model_is_unsure_of_are_read_again_with_e5(
    assessor: Assessor,
) -> None:
    cascade = load_cascade("sentiment_en")
    assert cascade.second is not None
    first = cascade.first.predict_proba(ENGLISH)
    again = cascade.second.predict_proba(ENGLISH)
    unsure = first.max(axis=1) < cascade.below
    assert unsure.any() and not unsure.all()
    expected = np.where(unsure[:, None], again, first)
    positive, negative = cascade.classes.index("positive"), cascade.classes.index("negative")

    read = assessor.assess(ENGLISH, ("fr", "en"), fallbacks=["en"] * len(ENGLISH))

    for assessment, probabilities in zip(read, expected, strict=True):
        assert assessment.sentiment.label == cascade.classes[int(probabilities.argmax())]
        score = probabilities[positive] - probabilities[negative]
        assert assessment.sentiment.score == pytest.approx(score, abs=1e-3)


def test_the_fast_path_and_french_have_no_second_reading(assessor: Assessor) -> None:
    assert load_cascade("sentiment_fr").second is None
    fast = assessor._sentiment_model("en", True)
    assert fast.second is None
    read = assessor.assess(ENGLISH, ("fr", "en"), fallbacks=["en"] * len(ENGLISH), fast=True)
    assert [a.sentiment.label for a in read] == fast.first.predict(ENGLISH)


WARMED = """
import json
from allo.triage import features, language
from allo.triage.assessor import Assessor
assessor = Assessor()
def loaded():
    return {
        "sentiment": len(assessor._sentiment_models),
        "others": sorted(set(vars(assessor)) & {"_offensive", "_spam"}),
        "lingua": language._lingua.cache_info().currsize,
        "e5": "e5" in features._encoders,
    }
before = loaded()
assessor.warm()
print(json.dumps({"before": before, "after": loaded()}))
"""


@needs_e5
def test_warming_loads_every_model_and_the_e5_encoder_before_any_message() -> None:
    # In a process of its own: the encoder is loaded once per process.
    done = subprocess.run(
        [sys.executable, "-c", WARMED], capture_output=True, text=True, check=True, timeout=120
    )
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state["before"] == {"sentiment": 0, "others": [], "lingua": 0, "e5": False}
    # Both languages, with embeddings and on the fast path; lingua for French and English.
    assert state["after"] == {
        "sentiment": 4,
        "others": ["_offensive", "_spam"],
        "lingua": 1,
        "e5": True,
    }


PROMOTIONS_AND_CARE = [
    "Check out my channel and subscribe!!! http://bit.ly/x",
    "Get 3 months of Premium for only $0.99! Limited time only. https://t.co/abc",
    "My card payment was declined twice today",
    "@SpotifyCares the link to the track: https://t.co/a1 the artist: https://t.co/b2 thanks!",
    "Bonjour, mon colis n'est jamais arrivé, pouvez-vous m'aider ?",
]


def test_with_embeddings_spam_needs_both_spam_models_and_the_fast_path_reads_n_grams(
    assessor: Assessor,
) -> None:
    ngrams, embeddings = load_shipped("spam"), load_shipped("spam_embeddings")
    p = ngrams.predict_proba(PROMOTIONS_AND_CARE)[:, ngrams.classes.index("spam")]
    q = embeddings.predict_proba(PROMOTIONS_AND_CARE)[:, embeddings.classes.index("spam")]

    read = assessor.assess(PROMOTIONS_AND_CARE, ("fr", "en"))
    fast = assessor.assess(PROMOTIONS_AND_CARE, ("fr", "en"), fast=True)

    assert [a.spam for a in read] == (np.sqrt(p * q) >= 0.5).tolist()
    assert [a.spam for a in fast] == (p >= 0.5).tolist()
    assert read[0].spam and read[0].intents == ["spam"]
    assert not read[2].spam and not read[4].spam
    # Reading both models changes what the n-grams alone would decide.
    assert (np.sqrt(p * q) >= 0.5).tolist() != (p >= 0.5).tolist()
