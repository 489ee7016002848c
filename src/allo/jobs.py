"""Background jobs: the Procrastinate app and its tasks, all in PostgreSQL.

Intake does not defer one job per event: the inbound_events table is itself the queue. A job
drains it in batches; web processes defer that job (at most one waiting at a time, by its
queueing lock) when they have recorded events, and a periodic sweep defers it whenever events
are pending, which also repairs a worker that died in the middle of a batch. The job itself
is not retried by Procrastinate: the next sweep defers it again. Triage works the same way on
unread messages (`triage.assess`), deferred by the intake job when it stored messages.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import procrastinate
from procrastinate import JobContext, PsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued

from allo.channels import attachments
from allo.channels import service as channels
from allo.channels.credentials import CredentialsCipher, load_key
from allo.db.engine import Database, libpq_url
from allo.intake import service as intake
from allo.replies.sender import Sender
from allo.routing import service as routing
from allo.routing.timers import TimerLoop
from allo.settings import Settings
from allo.triage import service as triage
from allo.triage.assessor import Assessor

logger = logging.getLogger(__name__)

app = procrastinate.App(connector=PsycopgConnector())

PROCESS_INTAKE = "intake.process"
INTAKE_QUEUE = "intake"
ASSESS_MESSAGES = "triage.assess"
TRIAGE_QUEUE = "triage"
ROUTE_CONVERSATIONS = "routing.route"
ROUTING_QUEUE = "routing"
SEND_REPLIES = "outbox.send"
OUTBOX_QUEUE = "outbox"
CHANNELS_QUEUE = "channels"
DOWNLOAD_ATTACHMENTS = "attachments.download"
ATTACHMENTS_QUEUE = "attachments"
HEALTH_CHECK_EVERY = timedelta(minutes=15)
NETWORK_TIMEOUT_SECONDS = 20.0
WORKER_RESTART_SECONDS = 1.0
# Job workers of one `allo worker` process: name, queues, jobs run at once.
WORKERS = (
    ("intake", (INTAKE_QUEUE,), 1),
    ("background", (TRIAGE_QUEUE, ROUTING_QUEUE), 2),
    # Replies wait on networks' answers: never behind triage, and one sender at a time.
    ("outbox", (OUTBOX_QUEUE, CHANNELS_QUEUE), 1),
    # Downloads of customers' files can be slow: they hold up nothing else.
    ("attachments", (ATTACHMENTS_QUEUE,), 1),
)
TIMER_STOP_SECONDS = 5.0
# The cyclic collector's thresholds in the worker (Python's are 700, 10, 10). A batch keeps
# thousands of new objects alive until it ends (rows, ORM states, parsed messages): at 700,
# young collections ran every few events and walked them again and again.
COLLECTOR_THRESHOLDS = (10_000, 10, 10)


@dataclass
class Runtime:
    """What tasks need, handed to the worker as its context."""

    settings: Settings
    db: Database
    _assessor: Assessor | None = None
    _sender: Sender | None = None
    _http: httpx.AsyncClient | None = None

    @property
    def cipher(self) -> CredentialsCipher:
        return CredentialsCipher(load_key(self.settings))

    @property
    def http(self) -> httpx.AsyncClient:
        """One client for every network call: its connections are reused."""
        if self._http is None:
            # No proxy from the environment: attachments are fetched from the address Allo
            # checked (allo.channels.attachments), whose certificate is checked by name.
            self._http = httpx.AsyncClient(timeout=NETWORK_TIMEOUT_SECONDS, trust_env=False)
        return self._http

    @property
    def sender(self) -> Sender:
        if self._sender is None:
            self._sender = Sender(
                self.db, self.cipher, self.http, self.settings.outbox_max_attempts
            )
        return self._sender

    @property
    def assessor(self) -> Assessor:
        """Loaded on first use: its models take a second and a few hundred MB."""
        if self._assessor is None:
            self._assessor = Assessor()
        return self._assessor


def _runtime(context: JobContext) -> Runtime:
    runtime = context.additional_context["runtime"]
    assert isinstance(runtime, Runtime)
    return runtime


@app.task(
    name=PROCESS_INTAKE,
    queue=INTAKE_QUEUE,
    pass_context=True,
)
async def process_intake(context: JobContext) -> None:
    runtime = _runtime(context)
    report = await intake.process_all(
        runtime.db, runtime.settings.intake_batch_size, runtime.settings.reopen_window
    )
    if report.events:
        logger.info(
            "intake: %s processed, %s failed, %s skipped",
            report.processed,
            report.failed,
            report.skipped,
        )
    if report.messages:
        await defer_once(ASSESS_MESSAGES)
        await defer_once(DOWNLOAD_ATTACHMENTS)


@app.task(name=ASSESS_MESSAGES, queue=TRIAGE_QUEUE, pass_context=True)
async def assess_messages(context: JobContext) -> None:
    runtime = _runtime(context)
    report = await triage.triage_pending(
        runtime.db,
        runtime.assessor,
        embeddings=runtime.settings.triage_embeddings,
        step_aside=lambda: _intake_waits(runtime),
    )
    if report.assessed or report.failed:
        logger.info(
            "triage: %s assessed (%s on the fast path), %s failed",
            report.assessed,
            report.fast,
            report.failed,
        )
        await defer_once(ROUTE_CONVERSATIONS)


@app.task(name=ROUTE_CONVERSATIONS, queue=ROUTING_QUEUE, pass_context=True)
async def route_conversations(context: JobContext) -> None:
    runtime = _runtime(context)
    report = await routing.route_pending(runtime.db, step_aside=lambda: _intake_waits(runtime))
    if report.routed or report.failed:
        logger.info(
            "routing: %s routed, %s assigned, %s acknowledged, %s failed",
            report.routed,
            report.assigned,
            report.acknowledged,
            report.failed,
        )


async def _intake_waits(runtime: Runtime) -> bool:
    """Intake first: triage and routing take the CPU intake leaves, and step aside while it
    has a batch waiting (the intake job defers triage again when it has stored messages, and
    triage defers routing)."""
    return await intake.pending_at_least(runtime.db, runtime.settings.intake_batch_size)


@app.periodic(cron="* * * * * */5")
@app.task(name="intake.sweep", queue=INTAKE_QUEUE, pass_context=True)
async def sweep_intake(context: JobContext, timestamp: int) -> None:
    runtime = _runtime(context)
    async with runtime.db.sessions() as session:
        if await intake.pending_exists(session):
            await defer_intake_processing()
        if await triage.pending_exists(session):
            await defer_once(ASSESS_MESSAGES)
        if await routing.pending_exists(session):
            await defer_once(ROUTE_CONVERSATIONS)
        if await attachments.pending_exists(session, datetime.now(UTC)):
            await defer_once(DOWNLOAD_ATTACHMENTS)


@app.periodic(cron="* * * * * */5")
@app.task(name="routing.sweep", queue=ROUTING_QUEUE, pass_context=True)
async def sweep_routing(context: JobContext, timestamp: int) -> None:
    """Conversations of agents gone offline past their grace go back to the queue, and agents
    with room (a conversation resolved, an agent back online) are given the next ones."""
    runtime = _runtime(context)
    now = datetime.now(UTC)
    async with runtime.db.transaction() as session:
        released = await routing.release_offline_agents(session, now)
    if released:
        logger.info("routing: %s conversations of offline agents back to the queue", released)
        await defer_once(ROUTE_CONVERSATIONS)
    await routing.fill_all(runtime.db, now)


@app.task(name=SEND_REPLIES, queue=OUTBOX_QUEUE, pass_context=True)
async def send_replies(context: JobContext) -> None:
    await _send_due(_runtime(context))


async def _send_due(runtime: Runtime) -> None:
    report = await runtime.sender.send_due()
    if report.done:
        logger.info(
            "outbox: %s sent, %s to retry, %s failed, %s reconciled",
            report.sent,
            report.retried,
            report.failed,
            report.reconciled,
        )


@app.periodic(cron="* * * * * */5")
@app.task(name="outbox.sweep", queue=OUTBOX_QUEUE, pass_context=True)
async def sweep_outbox(context: JobContext, timestamp: int) -> None:
    """Retries come due, and leases of interrupted sends run out, without anyone asking."""
    await _send_due(_runtime(context))


@app.periodic(cron="*/1 * * * *")
@app.task(name="channels.watch", queue=CHANNELS_QUEUE, pass_context=True)
async def watch_channels(context: JobContext, timestamp: int) -> None:
    """Poll the channels that poll, and check each connection's health now and then."""
    runtime = _runtime(context)
    if await channels.poll_due(runtime.db, runtime.cipher, runtime.http):
        await defer_intake_processing()
    await channels.check_all(runtime.db, runtime.cipher, runtime.http, HEALTH_CHECK_EVERY)


@app.task(name=DOWNLOAD_ATTACHMENTS, queue=ATTACHMENTS_QUEUE, pass_context=True)
async def download_attachments(context: JobContext) -> None:
    runtime = _runtime(context)
    report = await attachments.download_pending(runtime.db, runtime.settings, runtime.http)
    if report.messages:
        logger.info(
            "attachments: %s stored, %s refused, %s to retry",
            report.stored,
            report.refused,
            report.retrying,
        )
    if report.messages >= attachments.BATCH_SIZE:
        await defer_once(DOWNLOAD_ATTACHMENTS)


async def defer_sending() -> None:
    """Send a reply just written soon; the sweep does it anyway."""
    try:
        await defer_once(SEND_REPLIES)
    except Exception:
        logger.warning("could not defer sending", exc_info=True)


async def defer_after_reply() -> None:
    """A reply was written: routing reads its conversation again, and the outbox sends it."""
    await defer_routing()
    await defer_sending()


async def defer_intake_processing() -> None:
    await defer_once(PROCESS_INTAKE)


async def defer_routing() -> None:
    """Ask for routing soon (a status or team changed); the sweep does it anyway."""
    try:
        await defer_once(ROUTE_CONVERSATIONS)
    except Exception:
        logger.warning("could not defer routing", exc_info=True)


async def defer_once(task_name: str) -> None:
    """Defer a draining task unless one is already waiting (its queueing lock)."""
    with suppress(AlreadyEnqueued):
        await app.configure_task(task_name, queueing_lock=task_name).defer_async()


@asynccontextmanager
async def opened(database_url: str) -> AsyncIterator[procrastinate.App]:
    """The job app connected to this database for the duration of the block."""
    connector = PsycopgConnector(conninfo=libpq_url(database_url), min_size=1, max_size=4)
    with app.replace_connector(connector):
        async with app.open_async():
            yield app


async def run_worker(runtime: Runtime) -> None:
    """Run jobs until cancelled.

    Procrastinate's worker stops when it loses its database connection (a restart, a
    failover); it is started again here, so the process survives what the database goes
    through.
    """
    runtime.assessor.warm()  # loaded before start, to be frozen with the rest
    settle_heap()
    loop = TimerLoop(runtime.db, after_fire=_route_after_timers)
    timers = asyncio.create_task(loop.run())
    try:
        await _run_jobs(runtime)
    finally:
        loop.stop()
        with suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(timers, TIMER_STOP_SECONDS)


def settle_heap() -> None:
    """Take what the worker keeps for its whole life out of garbage collection.

    The modules, ORM mappers and triage models are about 150,000 objects that every full
    collection walked, in pauses of 100-200 ms: a quarter of intake's CPU went to collections
    (docs/benchmarks.md, "Job worker, per event"). Frozen, they are never walked again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


async def _route_after_timers(fired: int) -> None:
    # An escalation may have moved a conversation to another team or raised its priority.
    await defer_routing()


async def _run_jobs(runtime: Runtime) -> None:
    """Intake has a worker of its own: a long triage or routing job never holds the slot that
    stored events wait for."""
    await asyncio.gather(
        *(
            _keep_working(runtime, name, queues, concurrency)
            for name, queues, concurrency in WORKERS
        )
    )


async def _keep_working(
    runtime: Runtime, name: str, queues: tuple[str, ...], concurrency: int
) -> None:
    while True:
        try:
            await app.run_worker_async(
                name=name,
                queues=list(queues),
                concurrency=concurrency,
                install_signal_handlers=False,
                additional_context={"runtime": runtime},
                delete_jobs="always",
            )
            logger.warning("job worker stopped; restarting")
        except Exception:
            logger.warning("job worker stopped on an error; restarting", exc_info=True)
        await asyncio.sleep(WORKER_RESTART_SECONDS)


class IntakeKicker:
    """Defers intake processing soon after events are recorded, at most every `interval` s.

    A running job keeps draining while events arrive, so a longer interval costs little
    latency and spares the database a refused defer (the queueing lock) per interval.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self._wanted = asyncio.Event()
        self._interval = interval

    def poke(self) -> None:
        self._wanted.set()

    async def run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await defer_intake_processing()
            except Exception:
                # The periodic sweep defers it anyway; the events themselves are safe.
                logger.warning("could not defer intake processing", exc_info=True)
            await asyncio.sleep(self._interval)
