"""`allo triage classify` and `allo triage train-intents`, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ALLO = str(Path(sys.executable).parent / "allo")


def allo(*arguments: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ALLO, *arguments], input=stdin, capture_output=True, text=True, timeout=300, check=False
    )


def test_classify_answers_every_line_and_says_which_could_not_be_read() -> None:
    requests = [
        json.dumps({"text": "Votre appli est en panne depuis ce matin, c'est une honte"}),
        "not json at all",
        json.dumps({"message": "no text field"}),
        json.dumps({"text": ""}),
        json.dumps({"text": "😡😡😡"}),
        json.dumps({"text": "https://example.com/deal"}),
        json.dumps({"text": "ok", "lang": "fr", "channel": "x"}),
        json.dumps({"text": "my order has still not arrived, please help. " * 2_500}),
    ]

    result = allo("triage", "classify", stdin="\n".join(requests) + "\n\n")

    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == len(requests)
    outage = answers[0]
    assert outage["language"] == "fr" and outage["sentiment"]["label"] == "negative"
    assert outage["urgent"] and "outage" in outage["urgency"] and "incident" in outage["intents"]
    assert answers[1] == {"line": 2, "error": answers[1]["error"]} and "JSON" in answers[1]["error"]
    assert answers[2]["line"] == 3 and "text" in answers[2]["error"]
    assert answers[3]["language"] is None and answers[3]["needs_answer"] is False
    assert answers[4]["language"] is None
    assert answers[6]["language"] == "fr"  # too short to tell: the given language
    assert answers[7]["language"] == "en"
    for answer in answers[:1] + answers[3:]:
        assert set(answer) >= {
            "language",
            "sentiment",
            "intents",
            "urgent",
            "needs_answer",
            "spam",
            "offensive",
            "pii",
            "place",
        }


def test_train_intents_writes_a_model_that_classify_uses(tmp_path: Path) -> None:
    rows = ["text,label"]
    for text in ("I want my money back", "refund please", "remboursez moi", "refund my order"):
        rows.append(f"{text},refund")
    for text in ("where is my parcel", "package late", "colis pas arrivé", "delivery delay"):
        rows.append(f'"{text}",delivery')
    csv_file = tmp_path / "intents.csv"
    csv_file.write_text("\n".join(rows) + "\n")

    trained = allo("triage", "train-intents", str(csv_file), "--out", str(tmp_path / "model"))
    classified = allo(
        "triage",
        "classify",
        "--intents",
        str(tmp_path / "model"),
        stdin=json.dumps({"text": "please refund my money"}) + "\n",
    )

    assert trained.returncode == 0, trained.stderr
    assert "2 intents from 8 examples" in trained.stdout
    assert "refund" in json.loads(classified.stdout)["intents"]


def test_train_intents_refuses_a_file_it_cannot_learn_from(tmp_path: Path) -> None:
    cases = {
        "header.csv": "sentence,category\nhello,greeting\n",
        "one_label.csv": "text,label\n" + "".join(f"hello {n},greeting\n" for n in range(5)),
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_text(content)
        result = allo("triage", "train-intents", str(path), "--out", str(tmp_path / "m"))
        assert result.returncode == 2, (name, result.stdout)
        assert "Invalid value" in result.stderr
    assert not (tmp_path / "m").exists()
