"""Faults with real processes: a worker killed mid-batch, the database restarted under load."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from allo.accounts import service as accounts
from allo.channels import service as channels
from allo.db import migrate
from allo.db.embedded import EmbeddedPostgres
from allo.db.engine import connect, libpq_url
from allo.intake import service as intake

pytestmark = pytest.mark.slow

ALLO = str(Path(sys.executable).parent / "allo")


def allo_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLO_")}
    return env | {"ALLO_DATABASE_URL": database_url, "ALLO_LOG_LEVEL": "WARNING"} | extra


def counts(database_url: str) -> dict[str, int]:
    with psycopg.connect(libpq_url(database_url)) as connection:
        rows = connection.execute(
            "SELECT status, count(*) FROM inbound_events GROUP BY status"
        ).fetchall()
    return {status: count for status, count in rows}


def wait_for(condition, seconds: float, message: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(message)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


async def tenant_with_events(database_url: str, number: int) -> None:
    db = connect(database_url, pool_size=2)
    try:
        async with db.transaction() as session:
            account = await accounts.create_account(session, "Brand")
            inbox = await channels.create_channel_account(session, account.id, "api", "API", "api")
            await intake.record_many(
                session,
                [
                    intake.NewEvent(
                        account_id=account.id,
                        channel_account_id=inbox.id,
                        parser="api",
                        external_id=f"m{n}",
                        raw=json.dumps(
                            {
                                "external_id": f"m{n}",
                                "contact": {"id": f"c{n % 300}"},
                                "text": f"message {n}",
                            }
                        ).encode(),
                    )
                    for n in range(number)
                ],
            )
    finally:
        await db.dispose()


def test_a_worker_killed_in_the_middle_of_a_batch_loses_and_repeats_nothing(
    database_url: str,
) -> None:
    total = 4000
    asyncio.run(tenant_with_events(database_url, total))
    env = allo_env(database_url, ALLO_INTAKE_BATCH_SIZE="100")
    worker = subprocess.Popen([ALLO, "worker"], env=env, start_new_session=True)
    try:
        wait_for(
            lambda: counts(database_url).get("processed", 0) >= 300, 60, "the worker never started"
        )
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        stop(worker)
    after_kill = counts(database_url)
    assert after_kill.get("pending", 0) > 0, "the kill came after the end: the test proves nothing"

    restarted = subprocess.Popen([ALLO, "worker"], env=env, start_new_session=True)
    try:
        wait_for(
            lambda: counts(database_url).get("processed", 0) == total,
            120,
            "processing did not resume",
        )
    finally:
        stop(restarted)
    with psycopg.connect(libpq_url(database_url)) as connection:
        messages, events, once = connection.execute(
            """
            SELECT (SELECT count(*) FROM messages),
                   (SELECT count(DISTINCT inbound_event_id) FROM messages),
                   (SELECT bool_and(cardinality(message_ids) = 1) FROM inbound_events)
            """
        ).fetchone()
    assert (messages, events, once) == (total, total, True)
    assert counts(database_url) == {"processed": total}


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL this test may restart, whatever server the suite runs on."""
    folder = Path(tempfile.mkdtemp(prefix="allo-r-", dir="/tmp"))
    server = EmbeddedPostgres(folder)
    try:
        migrate.upgrade(server.url)
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def tenant_and_token(database_url: str) -> tuple[str, int]:
    db = connect(database_url, pool_size=2)
    try:
        async with db.transaction() as session:
            account = await accounts.create_account(session, "Brand")
            token = await accounts.create_api_token(session, account.id, "load")
            inbox = await channels.create_channel_account(session, account.id, "api", "API", "api")
        return token, inbox.id
    finally:
        await db.dispose()


async def push_all(
    base_url: str, token: str, inbox_id: int, total: int, restart
) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Push `total` messages, retrying on 503 and refused connections as a client should."""
    refused = 0
    accepted = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(total):
        queue.put_nowait(n)

    async def sender(http: httpx.AsyncClient) -> None:
        nonlocal refused, accepted
        while not queue.empty():
            n = queue.get_nowait()
            body = {
                "external_id": f"load-{n}",
                "contact": {"id": f"c{n % 50}"},
                "text": f"load {n}",
            }
            for _ in range(200):
                try:
                    response = await http.post(f"/api/v1/inboxes/{inbox_id}/messages", json=body)
                except httpx.TransportError:
                    refused += 1
                    await asyncio.sleep(0.1)
                    continue
                if response.status_code == 202:
                    accepted += 1
                    if accepted == total // 4:
                        asyncio.get_running_loop().run_in_executor(None, restart)
                    break
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"] == "1"
                refused += 1
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"message {n} was never accepted")

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as http:
        await asyncio.gather(*(sender(http) for _ in range(8)))
    return accepted, refused


def start_serve(database_url: str, port: int) -> subprocess.Popen[bytes]:
    """`allo serve` with its job worker, in a process group of its own, once it answers."""
    server = subprocess.Popen(
        [ALLO, "serve", "--port", str(port)],
        env=allo_env(database_url, ALLO_SERVE_RUNS_WORKER="true"),
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 30, "allo serve did not start"
        )
    except AssertionError:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
        raise
    return server


def test_a_database_restart_under_load_costs_retries_not_messages(
    own_postgres: EmbeddedPostgres,
) -> None:
    url = own_postgres.url
    token, inbox_id = asyncio.run(tenant_and_token(url))
    port = free_port()
    server = start_serve(url, port)
    try:
        total = 800
        accepted, refused = asyncio.run(
            push_all(f"http://127.0.0.1:{port}", token, inbox_id, total, own_postgres.restart)
        )
        assert accepted == total
        assert refused > 0, "no request met the restart: the test proves nothing"
        wait_for(
            lambda: counts(url).get("processed", 0) == total, 60, "processing did not catch up"
        )
    finally:
        stop(server)
    with psycopg.connect(libpq_url(url)) as connection:
        stored = connection.execute(
            "SELECT count(*), count(DISTINCT external_id) FROM messages"
            " WHERE external_id LIKE 'load-%'"
        ).fetchone()
    assert stored == (total, total)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def worker_children(serve_pid: int) -> list[int]:
    """`allo worker --parent PID` processes started by that `allo serve`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in command and b"--parent" in command and str(serve_pid).encode() in command:
            found.append(int(entry.name))
    return found


def triaged(database_url: str) -> int:
    with psycopg.connect(libpq_url(database_url)) as connection:
        row = connection.execute(
            "SELECT count(*) FROM messages WHERE triaged_at IS NOT NULL AND triage IS NOT NULL"
        ).fetchone()
    return int(row[0]) if row else 0


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[16])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_serve_processes_and_triages_in_its_own_niced_worker_which_leaves_when_killed(
    own_postgres: EmbeddedPostgres,
) -> None:
    url = own_postgres.url
    token, inbox_id = asyncio.run(tenant_and_token(url))
    port = free_port()
    server = start_serve(url, port)
    try:
        workers = worker_children(server.pid)
        assert len(workers) == 1, workers
        wanted = niceness(server.pid) + 10  # HTTP first; it renices itself as it starts
        wait_for(lambda: niceness(workers[0]) == wanted, 15, "the worker is not niced")
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/inboxes/{inbox_id}/messages",
            json={"external_id": "w1", "contact": {"id": "c1"}, "text": "hello"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 202, response.text
        wait_for(lambda: counts(url).get("processed") == 1, 30, "the worker did not process")
        wait_for(lambda: triaged(url) == 1, 60, "the worker did not triage the message")

        server.kill()  # the main process only: no chance to stop its child
        server.wait(10)
        wait_for(lambda: not alive(workers[0]), 15, "the orphaned worker kept running")
    finally:
        # Granian's HTTP workers, orphaned too, are in the same process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
