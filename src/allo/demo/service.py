"""Demo account set-up and the replay of demo traffic through the real HTTP intake endpoint."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from sqlalchemy import select

from allo.accounts import service as accounts
from allo.accounts.models import Account, User
from allo.channels import service as channels
from allo.channels.models import ChannelAccount
from allo.db.engine import one_off_session
from allo.routing import service as routing
from allo.routing.schemas import AgentIn, SlaPolicyIn, TeamIn

logger = logging.getLogger(__name__)

DEMO_ACCOUNT = "Velia (demo)"
ADMIN_EMAIL = "admin@velia.example"
DEMO_TARGETS = {
    "normal": {"first_response": 3600, "next_response": 3600, "resolution": 86400},
    "urgent": {"first_response": 900, "next_response": 900, "resolution": 14400},
}
DEMO_HOURS = {
    "time_zone": "Europe/Paris",
    "hours": {day: [["08:00", "20:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat")},
}
DEMO_ACKNOWLEDGEMENTS = {
    "fr": "Merci pour votre message. Notre équipe est fermée ; réponse vers le {expected}.",
    "en": "Thanks for your message. Our team is closed; expect an answer around {expected}.",
}


def load_traffic() -> dict[str, Any]:
    traffic: dict[str, Any] = json.loads(
        resources.files("allo.demo").joinpath("traffic.json").read_text(encoding="utf-8")
    )
    return traffic


@dataclass(frozen=True)
class DemoSetup:
    account_id: int
    inboxes: dict[str, int]
    admin_email: str
    admin_password: str
    api_token: str
    run_id: str

    def welcome(self, base_url: str) -> str:
        return "\n".join(
            [
                "",
                "Allo demo",
                f"  open        {base_url}/  (API documentation: {base_url}/api/docs)",
                f"  admin       {self.admin_email}",
                f"  password    {self.admin_password}",
                f"  API token   {self.api_token}",
                "  try         curl -H 'Authorization: Bearer "
                f"{self.api_token}' {base_url}/api/v1/conversations",
                "  French and English customer messages arrive over the next five minutes;",
                "  the Support team's queue: GET /api/v1/teams, then /api/v1/teams/{id}/queue.",
                "",
            ]
        )


async def prepare(database_url: str) -> DemoSetup:
    """The demo account (created once, reused after), a fresh admin password and API token."""
    traffic = load_traffic()
    password = accounts.generate_password()
    async with one_off_session(database_url) as session:
        account = await session.scalar(select(Account).where(Account.name == DEMO_ACCOUNT))
        if account is None:
            account = await accounts.create_account(session, DEMO_ACCOUNT)
        admin = await session.scalar(
            select(User).where(User.account_id == account.id, User.email == ADMIN_EMAIL)
        )
        if admin is None:
            admin = await accounts.create_user(
                session, account.id, ADMIN_EMAIL, "Admin", "admin", password
            )
        else:
            accounts.set_password(admin, password)
        token = await accounts.create_api_token(session, account.id, "demo")
        inboxes = await _inboxes(session, account.id, traffic["channel_accounts"])
        await _support_team(session, account.id, admin.id)
    return DemoSetup(
        account_id=account.id,
        inboxes=inboxes,
        admin_email=ADMIN_EMAIL,
        admin_password=password,
        api_token=token,
        run_id=str(int(time.time())),
    )


async def _support_team(session: Any, account_id: int, admin_id: int) -> None:
    """A support team on business hours with an SLA policy, the admin its agent (online), so
    that the demo's conversations get clocks, a queue and an assignee."""
    if await routing.list_teams(session, account_id):
        return
    policy = await routing.save_sla_policy(
        session, account_id, SlaPolicyIn(name="Standard", targets=DEMO_TARGETS)
    )
    await routing.save_team(
        session,
        account_id,
        TeamIn(
            name="Support",
            calendar=DEMO_HOURS,
            sla_policy_id=policy.id,
            member_ids=[admin_id],
            acknowledgements=DEMO_ACKNOWLEDGEMENTS,
        ),
    )
    await routing.save_agent(
        session, account_id, admin_id, AgentIn(presence="online"), datetime.now(UTC)
    )


async def _inboxes(session: Any, account_id: int, declared: list[dict[str, str]]) -> dict[str, int]:
    existing = {
        (c.kind, c.external_id): c.id
        for c in await session.scalars(
            select(ChannelAccount).where(ChannelAccount.account_id == account_id)
        )
    }
    inboxes = {}
    for inbox in declared:
        key = (inbox["kind"], inbox["external_id"])
        if key not in existing:
            created = await channels.create_channel_account(
                session,
                account_id,
                inbox["kind"],
                inbox["name"],
                inbox["external_id"],
                settings={"language": inbox.get("language")},
            )
            existing[key] = created.id
        inboxes[inbox["key"]] = existing[key]
    return inboxes


@dataclass(frozen=True)
class ScheduledMessage:
    at: float
    inbox_id: int
    body: dict[str, Any]


def schedule(traffic: dict[str, Any], setup: DemoSetup) -> list[ScheduledMessage]:
    """Every demo message as an API-channel push, in the order it arrives."""
    scheduled = []
    for number, conversation in enumerate(traffic["conversations"]):
        contact = conversation["contact"]
        thread = f"demo-{setup.run_id}-{number}"
        previous: list[str] = []
        for index, message in enumerate(conversation["messages"]):
            external_id = f"{thread}-{index}"
            body: dict[str, Any] = {
                "external_id": external_id,
                "contact": {
                    "id": contact.get("handle") or contact["name"],
                    "name": contact["name"],
                    "handle": contact.get("handle"),
                    "email": contact.get("email"),
                    "phone": contact.get("phone"),
                    "followers": contact.get("followers"),
                    "verified": bool(contact.get("verified")),
                    "language": conversation.get("language"),
                },
                "text": message["text"],
                "direction": message["direction"],
                "visibility": conversation["visibility"],
            }
            if conversation["visibility"] == "public":
                body["thread_id"] = thread
            if previous:
                body["in_reply_to"] = previous[-1]
                body["references"] = list(previous)
            if conversation.get("subject"):
                body["subject"] = conversation["subject"]
            if message["direction"] == "out":
                body["author_name"] = message.get("author")
            previous.append(external_id)
            scheduled.append(
                ScheduledMessage(
                    at=float(message["at"]),
                    inbox_id=setup.inboxes[conversation["channel_account"]],
                    body={k: v for k, v in body.items() if v is not None},
                )
            )
    return sorted(scheduled, key=lambda s: s.at)


class Replay:
    """Pushes the demo messages to the running server at their times, in a background thread."""

    def __init__(self, base_url: str, token: str, messages: list[ScheduledMessage], speed: float):
        self._base_url = base_url
        self._token = token
        self._messages = messages
        self._speed = speed
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-replay", daemon=True)

    def start(self) -> Replay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        if not self._wait_for_server():
            return
        started = time.monotonic()
        for message in self._messages:
            delay = started + message.at / self._speed - time.monotonic()
            if delay > 0 and self._stopped.wait(delay):
                return
            self._push(message)
        logger.info("demo replay: %d messages sent", len(self._messages))

    def _wait_for_server(self) -> bool:
        while not self._stopped.is_set():
            try:
                with urllib.request.urlopen(f"{self._base_url}/healthz", timeout=2):  # noqa: S310
                    return True
            except (urllib.error.URLError, OSError):
                self._stopped.wait(0.3)
        return False

    def _push(self, message: ScheduledMessage) -> None:
        request = urllib.request.Request(  # noqa: S310
            f"{self._base_url}/api/v1/inboxes/{message.inbox_id}/messages",
            data=json.dumps(message.body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._token}"},
            method="POST",
        )
        for attempt in range(5):
            try:
                with urllib.request.urlopen(request, timeout=10):  # noqa: S310
                    return
            except (urllib.error.URLError, OSError) as error:
                # Retrying is safe: the external id makes a second delivery a no-op.
                logger.warning("demo replay: attempt %d failed: %s", attempt + 1, error)
                if self._stopped.wait(0.5 * (attempt + 1)):
                    return


def start_replay(setup: DemoSetup, host: str, port: int, speed: float) -> Replay:
    local_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    messages = schedule(load_traffic(), setup)
    return Replay(f"http://{local_host}:{port}", setup.api_token, messages, speed).start()
