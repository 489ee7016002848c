"""What the job worker spends on each event, measured in one process with no HTTP.

For each target (the embedded PostgreSQL, the machine's PostgreSQL server) on a fresh
database, and for each network named: the events of bench/webhooks.py (each from a new
customer, so each makes a new conversation) are recorded directly, then read by the job
worker's three steps in turn, each timed alone:

- intake: `intake.process_all` (parse, contacts, threads, messages), batches of 500;
- triage: `triage.triage_pending` on the fast path (as under load);
- routing: `routing.route_pending` (team, clocks, timers, place in the queue).

For each step: microseconds an event of wall time, of this process's CPU (Python and the
driver) and of PostgreSQL's CPU (every process of the server). Rounds repeat the networks in
turn on the same database, which grows.

    .venv/bin/python bench/processing.py --targets embedded,server \\
        --networks api-named,x-mention --events 5000 --rounds 2

It prints a table and writes bench/results/processing.json (and .md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import figures
import intake as intake_bench
import webhooks
from allo import jobs
from allo.channels.credentials import CredentialsCipher, load_key
from allo.channels.registry import network_for
from allo.db import migrate
from allo.db.engine import Database, connect
from allo.intake import service as intake
from allo.routing import service as routing
from allo.settings import Settings
from allo.triage import service as triage
from allo.triage.assessor import Assessor
from databases import Target, embedded_database, server_database

BENCH = Path(__file__).resolve().parent
BATCH = 500
STEPS = ("intake", "triage", "routing")


async def recorded(url: str, network: webhooks.Network, events: int, tag: str) -> None:
    """`events` of the network, stored as the webhook endpoint stores them."""
    tenant = await intake_bench.make_tenant(url)
    if network.kind == "api":
        channel_id, parser = tenant.inbox_id, "api"
    else:
        cipher = CredentialsCipher(load_key(Settings()))
        channel_id, _ = await webhooks.connect_channels(url, tenant.account_id, network, cipher)
        found = network_for(network.kind)
        assert found is not None
        parser = found.PARSER
    new_events = []
    for n in range(events):
        message = webhooks.Message(n, tag, network.own_ids[0], n, n % 100, 1_764_500_000_000 + n)
        raw = json.dumps(network.make(message), separators=(",", ":")).encode()
        new_events.append(intake.NewEvent(tenant.account_id, channel_id, parser, f"{tag}-{n}", raw))
    db = connect(url, pool_size=2)
    try:
        async with db.transaction() as session:
            await intake.record_many(session, new_events)
    finally:
        await db.dispose()


async def timed(
    step: Callable[[], Awaitable[Any]], postgres: intake_bench.CpuMeter, events: int
) -> dict[str, float]:
    postgres.start()
    own, began = time.process_time(), time.perf_counter()
    await step()
    wall, own = time.perf_counter() - began, time.process_time() - own
    return {
        "wall_us": round(wall / events * 1e6, 1),
        "process_cpu_us": round(own / events * 1e6, 1),
        "postgres_cpu_us": round(postgres.used() / events * 1e6, 1),
    }


async def one_round(
    url: str, network: webhooks.Network, args: argparse.Namespace, tag: str, assessor: Assessor
) -> dict[str, Any]:
    await recorded(url, network, args.events, tag)
    _, postmaster = intake_bench.postgres_facts(url)
    postgres = intake_bench.CpuMeter(postmaster)
    db: Database = connect(url, pool_size=4)
    try:
        steps: dict[str, Callable[[], Awaitable[Any]]] = {
            "intake": lambda: intake.process_all(db, BATCH, timedelta(days=1)),
            "triage": lambda: triage.triage_pending(db, assessor, embeddings=False),
            "routing": lambda: routing.route_pending(db),
        }
        timings = {name: await timed(step, postgres, args.events) for name, step in steps.items()}
    finally:
        await db.dispose()
    return {"network": network.name, "round": tag, "events": args.events, **timings}


async def run_target(target: Target, args: argparse.Namespace) -> list[dict[str, Any]]:
    migrate.upgrade(target.url)
    assessor = Assessor()
    assessor.assess(["warming up"], ["fr", "en"], fast=True)
    jobs.settle_heap()  # as the worker does once its models are loaded
    results = []
    for round_number in range(args.rounds):
        for name in args.networks.split(","):
            result = await one_round(
                target.url, webhooks.NETWORKS[name], args, f"r{round_number}{name}", assessor
            )
            results.append({"target": target.name, **result})
            print(table([results[-1]]).splitlines()[-1], flush=True)
    return results


def table(results: list[dict[str, Any]]) -> str:
    header = "| target | network | round | events |"
    header += "".join(f" {s}: wall / own CPU / PostgreSQL CPU µs |" for s in STEPS)
    lines = [header, "|---" * (4 + len(STEPS)) + "|"]
    for r in results:
        cells = [r["target"], r["network"], r["round"], f"{r['events']:,}"]
        for step in STEPS:
            t = r[step]
            cells.append(
                f"{t['wall_us']:,.0f} / {t['process_cpu_us']:,.0f} / {t['postgres_cpu_us']:,.0f}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="embedded,server")
    parser.add_argument("--server-url", default=intake_bench.DEFAULT_SERVER_URL)
    parser.add_argument("--networks", default="api-named,x-mention")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "processing.json")
    args = parser.parse_args()
    unknown = set(args.networks.split(",")) - set(webhooks.NETWORKS)
    if unknown:
        parser.error(f"--networks: unknown {', '.join(sorted(unknown))}")
    results = []
    for name in args.targets.split(","):
        opened = embedded_database() if name == "embedded" else server_database(args.server_url)
        with opened as target:
            results += asyncio.run(run_target(target, args))
    figures.publish(args.json, results, table(results))


if __name__ == "__main__":
    main()
