"""`allo demo`, for real: its own embedded PostgreSQL, the HTTP server and the replayed traffic."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest

from allo.accounts import service as accounts
from allo.accounts.models import User
from allo.db.embedded import EmbeddedPostgres
from allo.demo.service import ADMIN_EMAIL, DEMO_ACCOUNT, load_traffic

pytestmark = pytest.mark.slow

ALLO = Path(sys.executable).parent / "allo"
TRAFFIC = load_traffic()
TRAFFIC_MESSAGES = [m for c in TRAFFIC["conversations"] for m in c["messages"]]
HOSTILE = next(m["text"] for m in TRAFFIC_MESSAGES if "<script>" in m["text"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postmasters(data_dir: Path) -> list[psutil.Process]:
    """PostgreSQL server processes running on this data folder."""
    found = []
    for candidate in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(candidate.info["cmdline"] or [])
            if "postgres" in cmdline and str(data_dir) in cmdline:
                found.append(candidate)
    return found


@dataclass
class Demo:
    process: subprocess.Popen[str]
    data_dir: Path
    port: int
    output: list[str] = field(default_factory=list)
    email: str = ""
    password: str = ""
    token: str = ""
    stop_seconds: float | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        log = self.data_dir / "demo.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        return "stdout:\n" + "".join(self.output)[-2000:] + "\nstderr:\n" + tail

    def terminate(self) -> float:
        """SIGTERM to the demo's process group, as a terminal's Ctrl-C would; seconds to exit."""
        if self.stop_seconds is None:
            started = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
            self.stop_seconds = time.monotonic() - started
        return self.stop_seconds

    def kill(self) -> None:
        """Last-resort cleanup: the demo's group, then a PostgreSQL it may have left behind."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        for server in postmasters(self.data_dir):
            with contextlib.suppress(psutil.Error):
                server.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
                server.wait(timeout=10)


def read_output(demo: Demo) -> None:
    assert demo.process.stdout is not None
    for line in demo.process.stdout:
        demo.output.append(line)


def wait_for(demo: Demo, condition: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if demo.process.poll() is not None:
            pytest.fail(
                f"the demo exited ({demo.process.returncode}) waiting for {what}\n{demo.log()}"
            )
        result = condition()
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{demo.log()}")


def printed(demo: Demo, label: str) -> str | None:
    for line in list(demo.output):
        found = re.match(rf"\s+{label}\s+(\S+)\s*$", line)
        if found:
            return found[1]
    return None


def start_demo(data_dir: Path) -> Demo:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ALLO_")}
    env |= {"ALLO_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    port = free_port()
    with (data_dir / "demo.log").open("ab") as log:
        process = subprocess.Popen(
            [str(ALLO), "demo", "--port", str(port), "--speed", "30"],
            env=env,
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
    demo = Demo(process=process, data_dir=data_dir, port=port)
    threading.Thread(target=read_output, args=(demo,), daemon=True).start()
    try:
        wait_for(demo, lambda: printed(demo, "API token"), 60, "the API token line")
        demo.email = printed(demo, "admin") or ""
        demo.password = printed(demo, "password") or ""
        demo.token = printed(demo, "API token") or ""

        def home_answers() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(demo.base + "/", timeout=2).status_code == 200
            return False

        wait_for(demo, home_answers, 60, "GET / to answer 200")
    except BaseException:
        demo.kill()
        raise
    return demo


@contextlib.contextmanager
def running_demo(data_dir: Path) -> Iterator[Demo]:
    demo = start_demo(data_dir)
    try:
        yield demo
    finally:
        try:
            demo.terminate()
        except subprocess.TimeoutExpired:
            pass
        finally:
            demo.kill()


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    # Short: PostgreSQL's Unix socket lives in it.
    folder = Path(tempfile.mkdtemp(prefix="allo-d-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def demo(data_dir: Path) -> Iterator[Demo]:
    with running_demo(data_dir) as running:
        yield running


def api(demo: Demo, path: str, token: str | None = None, **params: Any) -> httpx.Response:
    return httpx.get(
        demo.base + path,
        params=params,
        headers={"Authorization": f"Bearer {token or demo.token}"},
        timeout=10,
    )


@dataclass
class Stored:
    conversations: list[dict[str, Any]]
    messages: list[dict[str, Any]]  # what the demo traffic sent
    acknowledgements: list[dict[str, Any]]  # what routing answered out of hours


def is_acknowledgement(message: dict[str, Any]) -> bool:
    return (
        message["direction"] == "out"
        and message["author_name"] == "Allo"
        and message["delivery_status"] == "queued"
    )


@pytest.fixture(scope="module")
def stored(demo: Demo) -> Stored:
    """Everything the demo's traffic became, once all of it has arrived and been processed."""

    def counts() -> dict[str, int]:
        page = httpx.get(demo.base + "/", timeout=5).text
        found = dict(re.findall(r"<dt>([^<]+)</dt><dd>(\d+)</dd>", page))
        return {name: int(value) for name, value in found.items()}

    def all_arrived() -> bool:
        # Events, not messages: routing's out-of-hours acknowledgements are messages too.
        now = counts()
        return now.get("Events received", 0) >= len(TRAFFIC_MESSAGES) and (
            now.get("Waiting to be processed") == 0
        )

    wait_for(demo, all_arrived, 45, "every demo message to be processed", interval=0.5)
    conversations = api(demo, "/api/v1/conversations", limit=200).json()["conversations"]
    messages = []
    for conversation in conversations:
        response = api(demo, f"/api/v1/conversations/{conversation['id']}/messages", limit=200)
        assert response.status_code == 200, response.text
        messages.extend(response.json()["messages"])
    return Stored(
        conversations=conversations,
        messages=[m for m in messages if not is_acknowledgement(m)],
        acknowledgements=[m for m in messages if is_acknowledgement(m)],
    )


def test_the_demo_prints_the_admin_credentials_and_an_api_token(demo: Demo) -> None:
    assert demo.email == ADMIN_EMAIL
    assert len(demo.password) >= 12
    assert demo.token.startswith("allo_")
    welcome = "".join(demo.output)
    assert f"http://127.0.0.1:{demo.port}/api/docs" in welcome
    inboxes = api(demo, "/api/v1/inboxes")
    assert inboxes.status_code == 200
    assert len(inboxes.json()) == len(TRAFFIC["channel_accounts"])


def test_the_demo_traffic_becomes_conversations_on_every_channel(stored: Stored) -> None:
    assert len(stored.conversations) >= 40
    channels = {c["channel"] for c in stored.conversations}
    assert {"x", "whatsapp", "email", "facebook"} <= channels
    assert len(stored.messages) == len(TRAFFIC_MESSAGES)


def test_french_and_english_messages_are_stored_as_sent(stored: Stored) -> None:
    texts = {m["text"] for m in stored.messages}
    by_language: dict[str, list[str]] = {}
    for conversation in TRAFFIC["conversations"]:
        by_language.setdefault(conversation["language"], []).extend(
            m["text"] for m in conversation["messages"]
        )
    assert set(by_language) == {"fr", "en"}
    for language, sent in by_language.items():
        missing = [text for text in sent if text not in texts]
        assert not missing, f"{language} messages missing: {missing[:3]}"
    assert any("Bonjour" in text for text in texts)
    assert sorted(m["direction"] for m in stored.messages) == sorted(
        m["direction"] for m in TRAFFIC_MESSAGES
    )


def test_out_of_hours_acknowledgements_are_once_per_conversation_in_its_language(
    stored: Stored,
) -> None:
    # The demo team works 08:00-20:00 in Paris, Monday to Saturday: whether any is sent
    # depends on when the demo runs, but never two in one conversation.
    by_conversation = [m["conversation_id"] for m in stored.acknowledgements]
    assert len(by_conversation) == len(set(by_conversation))
    for message in stored.acknowledgements:
        assert message["text"].startswith(("Merci pour votre message.", "Thanks for your message."))


def test_a_hostile_message_is_stored_as_plain_text(stored: Stored) -> None:
    [hostile] = [m for m in stored.messages if "<script>" in m["text"]]
    assert hostile["text"] == HOSTILE
    assert "<script>alert(1)</script>" in hostile["text"]
    assert hostile["html"] is None or "<script" not in hostile["html"]


def test_the_home_page_shows_counts_but_no_customer_content(demo: Demo, stored: Stored) -> None:
    page = httpx.get(demo.base + "/", timeout=5)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "<script>alert" not in page.text
    assert "onerror" not in page.text
    for conversation in TRAFFIC["conversations"]:
        assert conversation["contact"]["name"] not in page.text
        for message in conversation["messages"]:
            assert message["text"][:40] not in page.text
    assert f"<dd>{len(stored.conversations)}</dd>" in page.text


def test_the_api_documentation_is_served_with_its_own_assets(demo: Demo) -> None:
    docs = httpx.get(demo.base + "/api/docs", timeout=5)
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    assert "/api/docs/assets/swagger-ui-bundle.js" in docs.text
    assert "/api/openapi.json" in docs.text
    bundle = httpx.get(demo.base + "/api/docs/assets/swagger-ui-bundle.js", timeout=5)
    assert bundle.status_code == 200
    assert "javascript" in bundle.headers["content-type"]
    assert len(bundle.content) > 100_000
    css = httpx.get(demo.base + "/api/docs/assets/swagger-ui.css", timeout=5)
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


def test_the_openapi_schema_documents_the_push_endpoint_body(demo: Demo) -> None:
    schema = httpx.get(demo.base + "/api/openapi.json", timeout=5).json()
    push = schema["paths"]["/api/v1/inboxes/{inbox_id}/messages"]["post"]
    body = push["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ApiInboundMessage"}
    components = schema["components"]["schemas"]
    assert "ApiInboundMessage" in components
    properties = components["ApiInboundMessage"]["properties"]
    assert {"external_id", "contact", "text"} <= set(properties)
    # Every reference in the document resolves.
    text = str(schema)
    for name in set(re.findall(r"#/components/schemas/([\w.-]+)", text)):
        assert name in components, name


def test_sigterm_stops_the_demo_and_its_postgresql(demo: Demo, stored: Stored) -> None:
    assert postmasters(demo.data_dir), "the demo runs PostgreSQL on its data folder"
    seconds = demo.terminate()
    assert seconds <= 20
    assert demo.process.returncode in (0, 128 + signal.SIGTERM), demo.log()
    deadline = time.monotonic() + 10
    while postmasters(demo.data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert postmasters(demo.data_dir) == []
    assert not (demo.data_dir / "pg" / "postmaster.pid").exists()
    assert "Traceback" not in demo.log()


def test_a_second_demo_on_the_same_folder_reuses_the_account_with_a_new_password(
    demo: Demo, data_dir: Path
) -> None:
    demo.terminate()
    with running_demo(data_dir) as second:
        assert second.token != demo.token
        assert second.password != demo.password
        inboxes = api(second, "/api/v1/inboxes")
        assert inboxes.status_code == 200
        assert len(inboxes.json()) == len(TRAFFIC["channel_accounts"])
        # The first run's token still works and sees the very same inboxes: same account.
        first_inboxes = api(second, "/api/v1/inboxes", token=demo.token)
        assert first_inboxes.status_code == 200
        assert {i["id"] for i in first_inboxes.json()} == {i["id"] for i in inboxes.json()}
        second.terminate()
        assert second.process.returncode in (0, 128 + signal.SIGTERM), second.log()
    assert postmasters(data_dir) == []

    embedded = EmbeddedPostgres(data_dir)
    try:
        with psycopg.connect(embedded.url) as connection:
            names = connection.execute("SELECT name FROM accounts").fetchall()
            admins = connection.execute(
                "SELECT password_hash FROM users WHERE email = %s", (ADMIN_EMAIL,)
            ).fetchall()
    finally:
        embedded.stop()
    assert names == [(DEMO_ACCOUNT,)]
    [(password_hash,)] = admins
    admin = User(password_hash=password_hash)
    assert accounts.password_matches(admin, second.password)
    assert not accounts.password_matches(admin, demo.password)
