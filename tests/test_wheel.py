"""The built wheel: everything Allo reads at run time is inside, and nothing else is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from allo.db import migrate
from allo.demo.service import load_traffic

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PIP = Path(sys.executable).parent / "pip"
DATA_FILES = (
    "allo/demo/traffic.json",
    "allo/web/templates/home.html",
    "allo/web/templates/_macros.html",
    "allo/web/static/allo.js",
    "allo/web/static/allo.css",
    "allo/web/static/vendor/htmx.min.js",
    "allo/web/locale/fr/LC_MESSAGES/messages.mo",
    "allo/db/migrations/versions/0004_workspace.py",
    "allo/db/migrations/env.py",
    "allo/db/migrations/script.py.mako",
    "allo/db/migrations/versions/0001_initial_schema.py",
    "allo/db/migrations/versions/0002_triage.py",
    "allo/triage/artifacts/manifest.json",
    "allo/triage/artifacts/sentiment_fr.npz",
    "allo/py.typed",
)


def build_wheel(source: Path, out: Path) -> tuple[Path, str]:
    """pip wheel, with the environment's setuptools if it can, else in an isolated build."""
    env = os.environ | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    log = ""
    for isolation in (["--no-build-isolation"], []):
        result = subprocess.run(
            [str(PIP), "wheel", "--no-deps", *isolation, "-w", str(out), str(source)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        log += result.stdout + result.stderr
        wheels = list(out.glob("allo-*.whl"))
        if result.returncode == 0 and len(wheels) == 1:
            return wheels[0], log
    pytest.fail(f"pip wheel failed:\n{log[-4000:]}")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    # Built from a copy: building in the repository would leave build/ and stale files there.
    source = tmp_path_factory.mktemp("source")
    shutil.copy2(REPO / "pyproject.toml", source)
    for extra in (*REPO.glob("README*"), *REPO.glob("LICENSE*")):
        shutil.copy2(extra, source)
    shutil.copytree(
        REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    yield build_wheel(source, tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def wheel(built: tuple[Path, str]) -> Path:
    return built[0]


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder)
    return folder


def names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_ships_the_files_allo_reads_at_run_time(wheel: Path) -> None:
    missing = [name for name in DATA_FILES if name not in names(wheel)]
    assert not missing


def test_the_wheel_ships_every_module_of_the_package(wheel: Path) -> None:
    modules = {
        path.relative_to(REPO / "src").as_posix() for path in (REPO / "src" / "allo").rglob("*.py")
    }
    assert modules
    assert modules - names(wheel) == set()


def test_the_wheel_ships_no_shared_paths_tests_or_twcs_data(wheel: Path) -> None:
    listed = names(wheel)
    assert not [name for name in listed if name.endswith(".csv")]
    assert not [name for name in listed if name.startswith(("tests/", "bench/", "shared/"))]
    # The package's files, not its metadata (the README names the data a user may import).
    package = [name for name in listed if name.startswith("allo/")]
    with zipfile.ZipFile(wheel) as archive:
        referring = [name for name in package if b"shared/" in archive.read(name)]
    assert package and referring == []


def test_the_wheel_declares_the_allo_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read("allo-0.1.0.dist-info/entry_points.txt").decode()
    assert "[console_scripts]" in entry_points
    assert "allo = allo.cli:main" in entry_points


def test_the_wheel_metadata_carries_the_readme(built: tuple[Path, str]) -> None:
    wheel, log = built
    assert "README.md' cannot be found" not in log
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read("allo-0.1.0.dist-info/METADATA").decode()
    header, _, description = metadata.partition("\n\n")
    assert "Description-Content-Type: text/markdown" in header
    assert description.strip()


PROBE = """
import json
import allo
from allo.db import migrate
from allo.demo.service import load_traffic
from allo.web.i18n import templates, translations
from allo.triage.linear import load_shipped

print(json.dumps({
    "file": allo.__file__,
    "conversations": len(load_traffic()["conversations"]),
    "head": migrate.head_revision(),
    "template": templates.get_template("home.html").filename,
    "french": translations("fr").gettext("Sign in"),
    "sentiment": load_shipped("sentiment_fr_fast").predict(["Merci beaucoup, génial !"]),
}))
"""


def test_the_unpacked_wheel_finds_its_data_through_the_package(
    unpacked: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLO_")}
    env["PYTHONPATH"] = str(unpacked)
    # Outside the repository, so nothing can be read from the source tree by a relative path.
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(found["file"]).is_relative_to(unpacked)
    assert found["conversations"] == len(load_traffic()["conversations"]) == 46
    assert found["head"] == migrate.head_revision()
    assert found["french"] == "Se connecter"
    assert found["sentiment"] == ["positive"]
    assert Path(found["template"]).is_relative_to(unpacked)
