"""`allo triage …` and `allo eval`: triage from the command line, for batch work and builds."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import typer

triage_app = typer.Typer(help="Triage: read messages, train intents, build models.")

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="The training and validation data (default: ALLO_SHARED_DATA, else the data "
        "folder beside the repository).",
    ),
]


@triage_app.command("classify")
def classify(
    intents: Annotated[
        Path | None, typer.Option(help="A custom intent model (from train-intents) to add.")
    ] = None,
    fast: Annotated[bool, typer.Option(help="The fast path: no sentence embeddings.")] = False,
    languages: Annotated[
        str, typer.Option(help="The account's languages, comma-separated.")
    ] = "fr,en",
) -> None:
    """Read JSON lines with `text` (and optional `lang`, `channel`) on standard input; write one
    assessment per line. A line that cannot be read gets `{"line": N, "error": …}`."""
    from allo.triage.assessor import Assessor, CustomIntents
    from allo.triage.intents import IntentModel

    custom = CustomIntents(0, IntentModel.load(intents)) if intents else None
    assessor = Assessor()
    wanted = tuple(code.strip() for code in languages.split(",") if code.strip())
    for batch in _batches(sys.stdin, 256):
        readable = [(n, request) for n, request in batch if isinstance(request, dict)]
        assessments = assessor.assess(
            [r["text"] for _, r in readable],
            wanted,
            [r.get("lang") for _, r in readable],
            fast=fast,
            custom=custom,
        )
        answers: dict[int, dict[str, Any]] = {
            n: a.model_dump() for (n, _), a in zip(readable, assessments, strict=True)
        }
        for n, request in batch:
            answer = answers.get(n) or {"line": n, "error": request}
            sys.stdout.write(json.dumps(answer, ensure_ascii=False) + "\n")
        sys.stdout.flush()


def _batches(lines: IO[str], size: int) -> Iterator[list[tuple[int, dict[str, Any] | str]]]:
    """Numbered requests (a dict) or why a line is not one (a str), `size` at a time."""
    batch: list[tuple[int, dict[str, Any] | str]] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            batch.append((number, _request(line)))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _request(line: str) -> dict[str, Any] | str:
    try:
        request = json.loads(line)
    except json.JSONDecodeError as error:
        return f"not JSON: {error}"
    if not isinstance(request, dict) or not isinstance(request.get("text"), str):
        return 'a JSON object with a "text" string is needed'
    if request.get("lang") is not None and not isinstance(request["lang"], str):
        return '"lang" must be a language code'
    return request


@triage_app.command("train-intents")
def train_intents(
    csv_file: Annotated[Path, typer.Argument(help="Rows of text,label (with that header).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the model to.")],
) -> None:
    """Train a custom intent model from examples, exactly as an account's admin would."""
    from allo.triage.intents import read_training_csv, train_intent_model

    try:
        texts, labels = read_training_csv(csv_file)
        model = train_intent_model(texts, labels)
    except (OSError, ValueError) as error:
        raise typer.BadParameter(str(error), param_hint="CSV_FILE") from None
    model.save(out)
    typer.echo(f"{len(model.labels)} intents from {len(texts)} examples written to {out}")


@triage_app.command("train")
def train_account(
    account: Annotated[int, typer.Option("--account", help="Account id.")],
) -> None:
    """Train the account's intents from its labels' examples and its agents' corrections.

    The new version becomes active; the previous ones are kept (see the API to list them)."""
    from allo.cli import database, run
    from allo.db.engine import one_off_session
    from allo.settings import get_settings
    from allo.triage import service as triage

    async def training(url: str) -> str:
        async with one_off_session(url) as session:
            version = await triage.train_account_intents(session, account)
            return (
                f"version {version.version}: {len(version.labels)} intents, "
                f"{version.examples} examples ({version.corrections} from corrections)"
            )

    with database(get_settings()) as url:
        try:
            typer.echo(run(training(url)))
        except triage.TriageError as error:
            raise typer.BadParameter(str(error), param_hint="--account") from None


@triage_app.command("build")
def build(
    data: DataOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write the artifacts (default: the package's).")
    ] = None,
) -> None:
    """Train the shipped models from the data, reproducibly, and record what they learnt from."""
    from allo.triage import build as building
    from allo.triage.datasets import data_dir
    from allo.triage.linear import ARTIFACTS

    manifest = building.build(
        data_dir(data), out or ARTIFACTS, log=lambda line: typer.echo(line, err=True)
    )
    typer.echo(json.dumps(manifest.get("scores", manifest), indent=2, ensure_ascii=False))


def evaluate(
    data: DataOption = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results as JSON here.")
    ] = None,
) -> None:
    """Measure triage on the validation data: a table per task, with goals and baselines."""
    from allo.triage import evaluate as evaluation
    from allo.triage.datasets import data_dir
    from allo.triage.linear import ARTIFACTS

    results = evaluation.evaluate(
        data_dir(data), ARTIFACTS, log=lambda line: typer.echo(line, err=True)
    )
    typer.echo(evaluation.render(results))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))
