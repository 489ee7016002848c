"""Intake benchmark: HTTP events per second, end to end, against the database's own ceiling.

For each target (the embedded PostgreSQL, the machine's PostgreSQL server) the benchmark makes a
fresh database, starts `allo serve` on it and has `wrk` push N messages to
POST /api/v1/inboxes/{id}/messages (each with its own external_id). It measures:

- the HTTP accept rate (N / load duration) and the latency percentiles wrk sees;
- the end-to-end rate: N / (time from load start to the last event processed into a message);
- the backlog (pending events) sampled every 0.5 s, at its peak and when the load ends;
- the resident memory of the `allo serve` process tree, idle and at its peak;
- the CPU seconds of `allo serve`, PostgreSQL, wrk and this script while the load runs;
- then, with `allo serve` stopped, on the same database: the rate at which the same rows go in
  with one COPY and with batched 1,000-row INSERTs from Python (the ceiling), and the ratios.

    .venv/bin/python bench/intake.py --events 100000 --targets embedded,server

Needs `wrk` (Debian: apt-get install -y wrk). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

import figures
from allo.accounts import service as accounts
from allo.channels import service as channels
from allo.db import migrate
from allo.db.engine import connect, libpq_url
from databases import Target, embedded_database, server_database

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ALLO = Path(sys.executable).parent / "allo"
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SAMPLE_SECONDS = 0.5
FULL_COUNT_EVERY = 4  # samples: processed/failed counts every 2 s, pending every 0.5 s
INSERT_BATCH = 1000
MB = 1024 * 1024

# About 100 characters of customer text; the event number is appended to it.
TEXT = (
    "Hi, my order still has not arrived and the tracking page has shown no update since "
    "Monday. Help?"
)
# The JSON body, byte for byte the same in Lua (wrk) and in Python (the ceiling rows).
BODY_FORMAT = '{"external_id":"%s%d","contact":{"id":"c%d"},"text":"%s #%d"}'
# What the endpoint keeps of wrk's request headers (see allo.intake.routes.KEPT_HEADERS).
STORED_HEADERS = json.dumps({"content-type": "application/json"})
COLUMNS = "account_id, channel_account_id, parser, external_id, raw, content_type, headers"

LUA = r"""
-- Written by bench/intake.py. Each thread sends its share of the unique messages, then its
-- connections wait (delay) and the thread stops when the last of its answers arrives.
local total = __TOTAL__
local nthreads = __THREADS__
local contacts = __CONTACTS__
local path = "__PATH__"
local text = "__TEXT__"
local body_format = '__BODY_FORMAT__'
local prefix = "__PREFIX__"
local rate = __RATE__
-- Fixed rate: each thread's requests have slots `interval` ms apart from its first; a
-- connection waits for its slot, so a slow answer on one connection delays no other.
local interval = 0
if rate > 0 then
  interval = 1000 * nthreads / rate
end
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } allo_timespec;
  int clock_gettime(int clock, allo_timespec *now);
]]
local clock = ffi.new("allo_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer __TOKEN__",
}

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
  table.insert(threads, thread)
end

function init(args)
  share = math.floor(total / nthreads)
  if id <= total % nthreads then
    share = share + 1
  end
  reserved = 0
  sent = 0
  answered = 0
  bad = 0
  first_bad = ""
  started = nil
  late = 0
  max_lag = 0
end

function delay()
  -- Called before each request of each connection: once the share is reserved, park it.
  if reserved >= share then
    return 3600000
  end
  reserved = reserved + 1
  if interval == 0 then
    return 0
  end
  local now = now_ms()
  if started == nil then
    started = now
  end
  local slot = started + (reserved - 1) * interval
  if slot > now then
    return math.floor(slot - now)
  end
  -- Every connection was busy when this slot came: the request goes late.
  if now - slot > max_lag then
    max_lag = now - slot
  end
  if now - slot > 10 then
    late = late + 1
  end
  return 0
end

function request()
  if sent >= reserved then
    -- wrk calls this once on its own before the load, to check the request: never sent.
    return wrk.format("POST", path, headers, "{}")
  end
  local n = sent * nthreads + (id - 1)
  sent = sent + 1
  local body = string.format(body_format, prefix, n, n % contacts, text, n)
  return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
  answered = answered + 1
  if status < 200 or status > 299 then
    bad = bad + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body or "", 1, 200)
    end
  end
  if answered >= share then
    -- wrk itself runs for its whole duration: this file tells bench/intake.py to stop it.
    local marker = io.open("__MARKERS__/done-" .. id, "w")
    marker:close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local sent_all, answered_all, bad_all, first = 0, 0, 0, ""
  local late_all, max_lag_all = 0, 0
  for _, thread in ipairs(threads) do
    sent_all = sent_all + thread:get("sent")
    answered_all = answered_all + thread:get("answered")
    bad_all = bad_all + thread:get("bad")
    late_all = late_all + thread:get("late")
    max_lag_all = math.max(max_lag_all, thread:get("max_lag"))
    if first == "" then
      first = thread:get("first_bad")
    end
  end
  local e = summary.errors
  io.write(string.format(
    'ALLO_BENCH {"duration_us":%d,"requests":%d,"bytes":%d,"sent":%d,"answered":%d,' ..
    '"non_2xx":%d,"first_non_2xx":"%s","late_over_10ms":%d,"max_lag_ms":%.1f,' ..
    '"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"latency_us":{"mean":%.1f,' ..
    '"stdev":%.1f,"min":%d,"max":%d,"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p99_9":%d}}\n',
    summary.duration, summary.requests, summary.bytes, sent_all, answered_all, bad_all,
    string.gsub(first, '[%c"\\]', " "), late_all, max_lag_all,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max, latency:percentile(50),
    latency:percentile(75), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


def body(n: int, contacts: int, prefix: str = "b") -> bytes:
    return (BODY_FORMAT % (prefix, n, n % contacts, TEXT, n)).encode()


@dataclass
class Load:
    """One wrk run: how many events, into which inbox, how fast (0: as fast as it can)."""

    name: str
    events: int
    inbox_id: int
    connections: int
    rate: float = 0.0
    prefix: str = "b"


def lua_script(load: Load, threads: int, contacts: int, token: str, markers: Path) -> str:
    replacements = {
        "__PREFIX__": load.prefix,
        "__RATE__": repr(float(load.rate)),
        "__MARKERS__": str(markers),
        "__TOTAL__": str(load.events),
        "__THREADS__": str(threads),
        "__CONTACTS__": str(contacts),
        "__PATH__": f"/api/v1/inboxes/{load.inbox_id}/messages",
        "__TEXT__": TEXT,
        "__BODY_FORMAT__": BODY_FORMAT,
        "__TOKEN__": token,
    }
    script = LUA
    for placeholder, value in replacements.items():
        script = script.replace(placeholder, value)
    return script


# --- processes: memory and CPU -------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_memory(pid: int) -> dict[str, float]:
    """RSS (and PSS, which counts shared pages once) of a process and all its children, in MB."""
    rss = pss = 0
    processes = 0
    for process in tree(pid):
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        processes += 1
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return {"rss_mb": round(rss / MB, 1), "pss_mb": round(pss / MB, 1), "processes": processes}


class CpuMeter:
    """CPU seconds used by a process tree since start().

    Live processes are read directly; children that exited (short-lived PostgreSQL backends)
    are counted through the root's cumulative CPU time of reaped children.
    """

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self._start: dict[tuple[int, float], float] = {}
        self._live: dict[tuple[int, float], float] = {}
        self._reaped_start = 0.0
        self._reaped = 0.0
        self._lock = threading.Lock()

    def sample(self) -> None:
        seen: dict[tuple[int, float], float] = {}
        reaped = None
        for process in tree(self.root_pid):
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    key = (process.pid, process.create_time())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            seen[key] = times.user + times.system
            if process.pid == self.root_pid:
                reaped = times.children_user + times.children_system
        with self._lock:
            # A child gone since the last sample is in the root's reaped time, whole.
            self._live = seen
            if reaped is not None:
                self._reaped = reaped

    def start(self) -> None:
        self.sample()
        with self._lock:
            self._start = dict(self._live)
            self._reaped_start = self._reaped

    def by_process(self) -> list[float]:
        """CPU seconds of each live process since start(), largest first."""
        self.sample()
        with self._lock:
            return sorted(
                (round(v - self._start.get(k, 0.0), 2) for k, v in self._live.items()),
                reverse=True,
            )

    def used(self) -> float:
        self.sample()
        with self._lock:
            live = sum(v - self._start.get(k, 0.0) for k, v in self._live.items())
            return live + self._reaped - self._reaped_start


def cpu_snapshot() -> dict[tuple[int, float], tuple[str, float]]:
    """CPU seconds of every process on the machine, by (pid, start time)."""
    snapshot = {}
    for process in psutil.process_iter(["name", "create_time", "cpu_times"]):
        times = process.info["cpu_times"]
        if times is not None and process.info["create_time"] is not None:
            key = (process.pid, process.info["create_time"])
            snapshot[key] = (process.info["name"] or "?", times.user + times.system)
    return snapshot


def other_processes(
    before: dict[tuple[int, float], tuple[str, float]],
    after: dict[tuple[int, float], tuple[str, float]],
    exclude: set[int],
) -> dict[str, Any]:
    """CPU taken by processes outside the benchmark (another job on the machine skews it)."""
    used: dict[str, float] = {}
    for key, (name, seconds) in after.items():
        if key[0] in exclude:
            continue
        delta = seconds - before.get(key, (name, 0.0))[1]
        if delta > 0:
            used[name] = used.get(name, 0.0) + delta
    top = sorted(used.items(), key=lambda item: item[1], reverse=True)[:5]
    return {"total": round(sum(used.values()), 2), "top": [[n, round(v, 2)] for n, v in top]}


def machine_cpu(before: Any, after: Any) -> dict[str, float]:
    """Machine-wide CPU seconds by kind between two psutil.cpu_times() (all cores together)."""
    return {
        kind: round(getattr(after, kind) - getattr(before, kind), 2)
        for kind in ("user", "system", "idle", "iowait", "irq", "softirq", "steal")
        if hasattr(after, kind)
    }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- databases -------------------------------------------------------------------------------


def postgres_facts(url: str) -> tuple[dict[str, str], int]:
    """A few settings that explain the numbers, and the postmaster's pid."""
    names = (
        "server_version",
        "shared_buffers",
        "synchronous_commit",
        "fsync",
        "wal_sync_method",
        "commit_delay",
        "max_connections",
    )
    with psycopg.connect(libpq_url(url)) as connection:
        facts = {n: str(connection.execute(f"SHOW {n}").fetchone()[0]) for n in names}
        backend = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
        postmaster = psutil.Process(backend).ppid()
    return facts, postmaster


@dataclass
class Tenant:
    account_id: int
    token: str
    inbox_id: int
    copy_inbox_id: int
    insert_inbox_id: int
    paced_inbox_id: int


async def make_tenant(url: str) -> Tenant:
    db = connect(url, pool_size=2)
    try:
        async with db.transaction() as session:
            account = await accounts.create_account(session, "Bench")
            token = await accounts.create_api_token(session, account.id, "bench")
            inboxes = [
                await channels.create_channel_account(session, account.id, "api", name, name)
                for name in ("bench-http", "bench-copy", "bench-insert", "bench-paced")
            ]
        return Tenant(account.id, token, *(inbox.id for inbox in inboxes))
    finally:
        await db.dispose()


def database_activity(connection: psycopg.Connection[Any]) -> dict[str, int]:
    """Cumulative counters of this database: sessions opened, commits, rollbacks."""
    connection.execute("SELECT pg_stat_clear_snapshot()")
    row = connection.execute(
        "SELECT sessions, xact_commit, xact_rollback FROM pg_stat_database"
        " WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return dict(zip(("sessions", "commits", "rollbacks"), (int(v) for v in row), strict=True))


def pending_count(connection: psycopg.Connection[Any], inbox_id: int) -> int:
    row = connection.execute(
        "SELECT count(*) FROM inbound_events WHERE status = 'pending' AND channel_account_id = %s",
        (inbox_id,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def event_counts(connection: psycopg.Connection[Any], inbox_id: int) -> dict[str, int]:
    rows = connection.execute(
        "SELECT status, count(*) FROM inbound_events WHERE channel_account_id = %s GROUP BY status",
        (inbox_id,),
    ).fetchall()
    return {status: count for status, count in rows}


# --- allo serve ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@contextlib.contextmanager
def allo_serve(url: str, port: int, args: argparse.Namespace, log: Path) -> Iterator[int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLO_")}
    env |= {
        "ALLO_DATABASE_URL": url,
        "ALLO_HTTP_WORKERS": str(args.http_workers),
        "ALLO_LOG_LEVEL": "WARNING",
    }
    env |= dict(item.split("=", 1) for item in args.serve_env)
    with log.open("wb") as output:
        # cwd: a folder without a .env file, so only these variables configure it.
        process = subprocess.Popen(
            [str(ALLO), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=log.parent,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not answers(f"http://127.0.0.1:{port}/healthz"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"allo serve did not start:\n{tail(log)}")
            time.sleep(0.1)
        yield process.pid
    finally:
        stop_process_group(process)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- sampling during the load ----------------------------------------------------------------


class Sampler(threading.Thread):
    """Every 0.5 s: pending events, the serve tree's memory and CPU of both trees (and every
    2 s the processed and failed events)."""

    def __init__(self, url: str, inbox_id: int, serve: CpuMeter, postgres: CpuMeter) -> None:
        super().__init__(daemon=True, name="sampler")
        self.url = url
        self.inbox_id = inbox_id
        self.serve = serve
        self.postgres = postgres
        self.samples: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.t0 = time.time()
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(libpq_url(self.url), autocommit=True) as connection:
                while True:
                    self.take(connection)
                    if self._stop_event.wait(SAMPLE_SECONDS):
                        return
        except BaseException as error:  # reported by the main thread
            self.error = error

    def take(self, connection: psycopg.Connection[Any]) -> dict[str, Any]:
        at = time.time()
        sample: dict[str, Any] = {"t": round(at - self.t0, 3)}
        if len(self.samples) % FULL_COUNT_EVERY == 0:
            # Counting every status reads the whole table (~15 ms at 100,000 rows): not always.
            counts = event_counts(connection, self.inbox_id)
            sample["pending"] = counts.get("pending", 0)
            sample["processed"] = counts.get("processed", 0)
            sample["failed"] = counts.get("failed", 0) + counts.get("skipped", 0)
        else:
            sample["pending"] = pending_count(connection, self.inbox_id)
        memory = tree_memory(self.serve.root_pid)
        self.serve.sample()
        self.postgres.sample()
        sample["rss_mb"] = memory["rss_mb"]
        sample["pss_mb"] = memory["pss_mb"]
        self.samples.append(sample)
        return sample

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


def backlog_growth(samples: list[dict[str, Any]], until: float) -> float:
    """Least-squares slope of pending events over the load (events/s; > 0: growing)."""
    points = [(s["t"], s["pending"]) for s in samples if s["t"] <= until]
    if len(points) < 3:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_p = sum(p for _, p in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (p - mean_p) for t, p in points) / spread


# --- the load ------------------------------------------------------------------------------


def run_wrk(
    args: argparse.Namespace,
    port: int,
    load: Load,
    token: str,
    workdir: Path,
    make_script: Callable[[Path], str] | None = None,
    path: str | None = None,
) -> tuple[dict[str, Any], str, float]:
    """Run wrk until every thread has its answers; returns its numbers, output and CPU seconds.

    `make_script` (given the folder of the threads' done markers) and `path` replace the API
    channel's script and path (bench/webhooks.py)."""
    if path is None:
        path = f"/api/v1/inboxes/{load.inbox_id}/messages"
    markers = workdir / f"wrk-done-{load.name}"
    markers.mkdir()
    script = workdir / f"intake-{load.name}.lua"
    if make_script is None:
        script.write_text(lua_script(load, args.wrk_threads, args.contacts, token, markers))
    else:
        script.write_text(make_script(markers))
    command = [
        str(shutil.which("wrk")),
        f"-t{args.wrk_threads}",
        f"-c{load.connections}",
        f"-d{args.max_load_seconds}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]
    before = children_cpu()
    out_path = workdir / f"wrk-{load.name}.out"
    with out_path.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        # wrk sleeps for its whole -d duration; SIGINT ends it once all threads have stopped.
        while process.poll() is None:
            if len(list(markers.iterdir())) >= args.wrk_threads:
                process.send_signal(signal.SIGINT)
                break
            time.sleep(0.002)
        returncode = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    wrk_cpu = children_cpu() - before
    output = out_path.read_text(errors="replace")
    match = re.search(r"^ALLO_BENCH (\{.*\})$", output, re.MULTILINE)
    if returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({returncode}):\n{output}")
    return json.loads(match.group(1)), output, wrk_cpu


# --- the ceiling ---------------------------------------------------------------------------


def ceiling(url: str, tenant: Tenant, events: int, contacts: int) -> dict[str, Any]:
    """The same rows through one COPY, then through 1,000-row INSERTs; each one transaction."""
    raws = [body(n, contacts) for n in range(events)]
    result: dict[str, Any] = {}
    with psycopg.connect(libpq_url(url)) as connection:
        started = time.perf_counter()
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY inbound_events ({COLUMNS}) FROM STDIN") as copy,
        ):
            for n, raw in enumerate(raws):
                copy.write_row(
                    (
                        tenant.account_id,
                        tenant.copy_inbox_id,
                        "api",
                        f"b{n}",
                        raw,
                        "application/json",
                        STORED_HEADERS,
                    )
                )
        connection.commit()
        seconds = time.perf_counter() - started
        result["copy"] = {
            "rows": events,
            "seconds": round(seconds, 3),
            "rows_per_s": events / seconds,
        }

        def statement(rows: int) -> sql.Composed:
            values = sql.SQL("(%s, %s, %s, %s, %s, %s, %s::jsonb)")
            return sql.SQL("INSERT INTO inbound_events ({}) VALUES {}").format(
                sql.SQL(COLUMNS), sql.SQL(", ").join([values] * rows)
            )

        def params(start: int, stop: int) -> list[Any]:
            flat: list[Any] = []
            for n in range(start, stop):
                flat += (
                    tenant.account_id,
                    tenant.insert_inbox_id,
                    "api",
                    f"b{n}",
                    raws[n],
                    "application/json",
                    STORED_HEADERS,
                )
            return flat

        full = events // INSERT_BATCH * INSERT_BATCH
        batches = [params(s, s + INSERT_BATCH) for s in range(0, full, INSERT_BATCH)]
        rest = params(full, events)
        started = time.perf_counter()
        with connection.cursor() as cursor:
            if batches:
                cursor.executemany(statement(INSERT_BATCH), batches)
            if rest:
                cursor.execute(statement(events - full), rest)
        connection.commit()
        seconds = time.perf_counter() - started
        result["insert"] = {
            "rows": events,
            "batch": INSERT_BATCH,
            "seconds": round(seconds, 3),
            "rows_per_s": events / seconds,
        }
        stored = connection.execute(
            "SELECT channel_account_id, count(*) FROM inbound_events"
            " WHERE channel_account_id IN (%s, %s) GROUP BY 1",
            (tenant.copy_inbox_id, tenant.insert_inbox_id),
        ).fetchall()
    counts = dict(stored)
    if counts != {tenant.copy_inbox_id: events, tenant.insert_inbox_id: events}:
        raise RuntimeError(f"the ceiling stored {counts}, not {events} rows each")
    return result


# --- one target ----------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def bench_target(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="allo-bw-", dir="/tmp"))
    try:
        return _bench_target(target, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bench_target(target: Target, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    n = args.events
    log(f"{target.name}: migrating")
    migrate.upgrade(target.url)
    target.postgres, postmaster = postgres_facts(target.url)
    tenant = asyncio.run(make_tenant(target.url))
    port = free_port()
    serve_log = workdir / "serve.log"
    result: dict[str, Any] = {"target": target.name, "events": n, "postgres": target.postgres}

    log(f"{target.name}: starting allo serve on port {port}")
    with allo_serve(target.url, port, args, serve_log) as serve_pid:
        time.sleep(args.idle_seconds)
        result["memory_idle"] = tree_memory(serve_pid)
        serve_cpu, postgres_cpu = CpuMeter(serve_pid), CpuMeter(postmaster)
        serve_cpu.start()
        postgres_cpu.start()
        own_before = own_cpu()
        machine_before = psutil.cpu_times()
        processes_before = cpu_snapshot()
        with psycopg.connect(libpq_url(target.url), autocommit=True) as connection:
            activity_before = database_activity(connection)
        sampler = Sampler(target.url, tenant.inbox_id, serve_cpu, postgres_cpu)

        log(f"{target.name}: {n} events through wrk ({args.connections} connections)")
        sampler.start()
        load_start = sampler.t0
        saturation = Load("saturation", n, tenant.inbox_id, args.connections)
        wrk, wrk_output, wrk_cpu = run_wrk(args, port, saturation, tenant.token, workdir)
        load_end = time.time()
        cpu_load = {
            "seconds": round(load_end - load_start, 3),
            "allo_serve": round(serve_cpu.used(), 2),
            "postgres": round(postgres_cpu.used(), 2),
            "wrk": round(wrk_cpu, 2),
            "bench": round(own_cpu() - own_before, 2),
            "allo_serve_by_process": serve_cpu.by_process(),
            "machine": machine_cpu(machine_before, psutil.cpu_times()),
            "other_processes": other_processes(
                processes_before,
                cpu_snapshot(),
                {
                    os.getpid(),
                    *(p.pid for p in tree(serve_pid)),
                    *(p.pid for p in tree(postmaster)),
                },
            ),
        }
        with psycopg.connect(libpq_url(target.url), autocommit=True) as connection:
            at_end = event_counts(connection, tenant.inbox_id)
            accepted = sum(at_end.values())
            log(f"{target.name}: load done, {at_end}; waiting for processing")
            deadline = time.monotonic() + args.drain_timeout
            # Cheap (the partial index of pending events): this loop must not load the server.
            while pending_count(connection, tenant.inbox_id) and time.monotonic() < deadline:
                time.sleep(0.1)
            drained = time.time()
            counts = event_counts(connection, tenant.inbox_id)
            last_processed = connection.execute(
                "SELECT extract(epoch FROM max(processed_at)) FROM inbound_events"
                " WHERE channel_account_id = %s",
                (tenant.inbox_id,),
            ).fetchone()[0]
            in_range = connection.execute(
                "SELECT count(*) FROM inbound_events WHERE channel_account_id = %s"
                " AND substr(external_id, 2)::int < %s",
                (tenant.inbox_id, n),
            ).fetchone()[0]
            messages = connection.execute(
                "SELECT count(*) FROM messages WHERE channel_account_id = %s",
                (tenant.inbox_id,),
            ).fetchone()[0]
        sampler.stop()
        if sampler.error is not None:
            raise RuntimeError(f"sampling failed: {sampler.error!r}")
        cpu_total = {
            "seconds": round(drained - load_start, 3),
            "allo_serve": round(serve_cpu.used(), 2),
            "postgres": round(postgres_cpu.used(), 2),
        }
        if args.rate > 0:
            result["paced"] = paced_phase(
                args, target.url, tenant, port, serve_pid, postmaster, workdir
            )
        warnings = sum(" WARNING " in line for line in tail(serve_log, 10**9).splitlines())
    # allo serve is stopped here (its sessions have reported their statistics on exit): the
    # ceiling runs alone on the same database.
    with psycopg.connect(libpq_url(target.url), autocommit=True) as connection:
        activity_after = database_activity(connection)

    load_seconds = wrk["duration_us"] / 1e6
    samples = sampler.samples
    load_t = load_end - load_start
    during_load = [s for s in samples if s["t"] <= load_t] or samples[:1]
    processed = counts.get("processed", 0)
    end_to_end = float(last_processed) - load_start if last_processed else float("nan")
    result |= {
        "http": {
            "requests": wrk["answered"],
            "sent": wrk["sent"],
            "non_2xx": wrk["non_2xx"],
            "first_non_2xx": wrk["first_non_2xx"],
            "socket_errors": {k: wrk[f"{k}_errors"] for k in ("connect", "read", "write", "status")}
            | {"timeout": wrk["timeouts"]},
            "seconds": round(load_seconds, 3),
            "events_per_s": wrk["answered"] / load_seconds,
            "latency_ms": {k: v / 1000 for k, v in wrk["latency_us"].items()},
            "connections": args.connections,
            "wrk_threads": args.wrk_threads,
            "wrk_output": wrk_output,
        },
        "processing": {
            "stored": accepted,
            "processed": processed,
            "failed_or_skipped": counts.get("failed", 0) + counts.get("skipped", 0),
            "pending_left": counts.get("pending", 0),
            "messages": messages,
            "external_ids_in_range": in_range,
            "seconds_from_load_start": round(end_to_end, 3),
            "events_per_s": processed / end_to_end if end_to_end > 0 else 0.0,
            "processed_by_load_end": at_end.get("processed", 0),
            "events_per_s_during_load": at_end.get("processed", 0) / load_t,
            "max_pending": max(s["pending"] for s in samples),
            "pending_at_load_end": at_end.get("pending", 0),
            "backlog_growth_per_s": round(backlog_growth(samples, load_t), 1),
            "serve_log_warnings": warnings,
        },
        "database_activity": {k: activity_after[k] - activity_before[k] for k in activity_before},
        "memory_peak": {
            "rss_mb": max(s["rss_mb"] for s in samples),
            "pss_mb": max(s["pss_mb"] for s in samples),
            "rss_mb_during_load_max": max(s["rss_mb"] for s in during_load),
        },
        "cpu_seconds_during_load": cpu_load,
        "cpu_seconds_load_and_drain": cpu_total,
        "samples": samples,
    }
    if warnings:
        result["serve_log_tail"] = tail(serve_log)

    log(f"{target.name}: ceiling (COPY, batched INSERT) of {n} rows")
    result["ceiling"] = ceiling(target.url, tenant, n, args.contacts)
    http_rate = result["http"]["events_per_s"]
    result["ratios"] = {
        "http_over_copy": http_rate / result["ceiling"]["copy"]["rows_per_s"],
        "http_over_insert": http_rate / result["ceiling"]["insert"]["rows_per_s"],
        "processing_over_copy": result["processing"]["events_per_s"]
        / result["ceiling"]["copy"]["rows_per_s"],
    }
    return result


def paced_phase(
    args: argparse.Namespace,
    url: str,
    tenant: Tenant,
    port: int,
    serve_pid: int,
    postmaster: int,
    workdir: Path,
) -> dict[str, Any]:
    """Events at a fixed rate (below saturation): the latency a sender sees, and whether
    processing keeps up, i.e. the backlog stays flat."""
    load = Load(
        "paced", args.paced_events, tenant.paced_inbox_id, args.paced_connections, args.rate, "p"
    )
    log(f"paced: {load.events} events at {load.rate:,.0f}/s ({load.connections} connections)")
    serve_cpu, postgres_cpu = CpuMeter(serve_pid), CpuMeter(postmaster)
    serve_cpu.start()
    postgres_cpu.start()
    sampler = Sampler(url, load.inbox_id, serve_cpu, postgres_cpu)
    sampler.start()
    wrk, output, wrk_cpu = run_wrk(args, port, load, tenant.token, workdir)
    load_seconds = time.time() - sampler.t0
    cores = {
        "allo_serve": round(serve_cpu.used() / load_seconds, 2),
        "postgres": round(postgres_cpu.used() / load_seconds, 2),
        "wrk": round(wrk_cpu / load_seconds, 2),
    }
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        at_end = event_counts(connection, load.inbox_id)
        deadline = time.monotonic() + args.drain_timeout
        while pending_count(connection, load.inbox_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        drained = time.time() - sampler.t0
        counts = event_counts(connection, load.inbox_id)
    sampler.stop()
    if sampler.error is not None:
        raise RuntimeError(f"sampling failed: {sampler.error!r}")
    return {
        "rate_target": load.rate,
        "events": load.events,
        "connections": load.connections,
        **wrk_figures(wrk),
        "cpu_cores_during_load": cores,
        "processing": {
            "processed": counts.get("processed", 0),
            "failed_or_skipped": counts.get("failed", 0) + counts.get("skipped", 0),
            "pending_at_load_end": at_end.get("pending", 0),
            "max_pending": max(s["pending"] for s in sampler.samples),
            "backlog_growth_per_s": round(backlog_growth(sampler.samples, load_seconds), 1),
            "drained_after_s": round(drained, 3),
        },
        "wrk_output": output,
        "samples": sampler.samples,
    }


# --- report --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(
        [str(shutil.which("wrk")), "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[:1]

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *arguments], capture_output=True, text=True, check=False
        ).stdout

    # The code measured is the working tree (allo is installed editable): note what differs.
    changed = [
        line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
    ]
    diff = git("diff", "HEAD", "--", "src")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_total_mb": round(psutil.virtual_memory().total / MB),
        "python": sys.version.split()[0],
        "wrk": wrk_version[0] if wrk_version else "",
        "git_commit": git("rev-parse", "HEAD").strip(),
        "git_changed_files": changed,
        "git_src_diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None,
    }


def table(results: list[dict[str, Any]]) -> str:
    header = (
        "| target | PostgreSQL | events | HTTP events/s | p50 ms | p90 ms | p99 ms | non-2xx "
        "| processing events/s | max pending | pending at end of load | COPY rows/s "
        "| INSERT rows/s | HTTP/COPY | HTTP/INSERT | RSS idle MB | RSS peak MB |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in results:
        http, proc, lat = r["http"], r["processing"], r["http"]["latency_ms"]
        lines.append(
            f"| {r['target']} | {r['postgres']['server_version'].split()[0]} | {r['events']:,} "
            f"| {http['events_per_s']:,.0f} | {lat['p50']:.1f} | {lat['p90']:.1f} "
            f"| {lat['p99']:.1f} | {http['non_2xx']} | {proc['events_per_s']:,.0f} "
            f"| {proc['max_pending']:,} | {proc['pending_at_load_end']:,} "
            f"| {r['ceiling']['copy']['rows_per_s']:,.0f} "
            f"| {r['ceiling']['insert']['rows_per_s']:,.0f} "
            f"| {r['ratios']['http_over_copy']:.3f} | {r['ratios']['http_over_insert']:.3f} "
            f"| {r['memory_idle']['rss_mb']:.0f} | {r['memory_peak']['rss_mb']:.0f} |"
        )
    lines += [
        "",
        "CPU during the HTTP load (cores busy = CPU seconds / wall seconds):",
        "",
        "| target | load s | allo serve | PostgreSQL | wrk | bench | other processes | sum "
        "| machine busy | of which kernel | steal | idle |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cpu = r["cpu_seconds_during_load"]
        parts = [cpu[k] / cpu["seconds"] for k in ("allo_serve", "postgres", "wrk", "bench")]
        parts.append(cpu["other_processes"]["total"] / cpu["seconds"])
        whole = cpu["machine"]
        busy = sum(v for k, v in whole.items() if k not in ("idle", "iowait", "steal"))
        kernel = sum(whole.get(k, 0.0) for k in ("system", "irq", "softirq"))
        idle = whole.get("idle", 0.0) + whole.get("iowait", 0.0)
        machine_parts = [busy, kernel, whole.get("steal", 0.0), idle]
        lines.append(
            f"| {r['target']} | {cpu['seconds']:.1f} | "
            + " | ".join(f"{p:.2f}" for p in parts)
            + f" | {sum(parts):.2f} | "
            + " | ".join(f"{p / cpu['seconds']:.2f}" for p in machine_parts)
            + " |"
        )
    paced = [r for r in results if "paced" in r]
    if paced:
        lines += [
            "",
            "At a fixed rate (wrk paced; late = sent over 10 ms after its slot, every "
            "connection busy):",
            "",
            "| target | events | target /s | achieved /s | p50 ms | p90 ms | p99 ms | p99.9 ms "
            "| non-2xx | late | max pending | pending at end of load | backlog growth /s "
            "| allo serve cores | PostgreSQL cores |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in paced:
        pr, lat, proc = r["paced"], r["paced"]["latency_ms"], r["paced"]["processing"]
        cores = pr["cpu_cores_during_load"]
        lines.append(
            f"| {r['target']} | {pr['events']:,} | {pr['rate_target']:,.0f} "
            f"| {pr['events_per_s']:,.0f} | {lat['p50']:.1f} | {lat['p90']:.1f} "
            f"| {lat['p99']:.1f} | {lat['p99_9']:.1f} | {pr['non_2xx']} | {pr['late_over_10ms']} "
            f"| {proc['max_pending']:,} | {proc['pending_at_load_end']:,} "
            f"| {proc['backlog_growth_per_s']} | {cores['allo_serve']:.2f} "
            f"| {cores['postgres']:.2f} |"
        )
    return "\n".join(lines)


def goals(results: list[dict[str, Any]]) -> list[str]:
    """Issue 2: >= 1,500 events/s; p99 < 50 ms and no growing backlog at that rate."""
    lines = []
    for r in results:
        http, proc = r["http"], r["processing"]
        checks = [
            ("HTTP >= 1,500 events/s (saturation)", http["events_per_s"] >= 1500),
            ("no non-2xx", http["non_2xx"] == 0 and not any(http["socket_errors"].values())),
            (
                "all processed",
                proc["processed"] == r["events"] and proc["failed_or_skipped"] == 0,
            ),
        ]
        if "paced" in r:
            paced, paced_proc = r["paced"], r["paced"]["processing"]
            checks += [
                (
                    f"rate held at {paced['rate_target']:,.0f}/s",
                    paced["events_per_s"] >= 0.98 * paced["rate_target"],
                ),
                (
                    f"p99 < 50 ms at {paced['rate_target']:,.0f}/s",
                    paced["latency_ms"]["p99"] < 50,
                ),
                (
                    "processing keeps up at that rate (backlog at end of load < 1 s of intake)",
                    paced_proc["pending_at_load_end"] < paced["rate_target"],
                ),
                (
                    "paced: no non-2xx, all processed",
                    paced["non_2xx"] == 0
                    and not any(paced["socket_errors"].values())
                    and paced_proc["processed"] == paced["events"],
                ),
            ]
        lines.append(
            f"{r['target']}: "
            + "; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks)
        )
    return lines


# --- main ----------------------------------------------------------------------------------


def wrk_figures(wrk: dict[str, Any]) -> dict[str, Any]:
    """What wrk saw of a load: answers, rate, latencies, errors, pacing."""
    seconds = wrk["duration_us"] / 1e6
    return {
        "requests": wrk["answered"],
        "seconds": round(seconds, 3),
        "events_per_s": wrk["answered"] / seconds,
        "latency_ms": {k: v / 1000 for k, v in wrk["latency_us"].items()},
        "non_2xx": wrk["non_2xx"],
        "first_non_2xx": wrk["first_non_2xx"],
        "socket_errors": {k: wrk[f"{k}_errors"] for k in ("connect", "read", "write", "status")}
        | {"timeout": wrk["timeouts"]},
        "late_over_10ms": wrk["late_over_10ms"],
        "max_lag_ms": wrk["max_lag_ms"],
    }


def add_load_options(
    parser: argparse.ArgumentParser, events: int, contacts: int, json_path: Path, server_url: str
) -> None:
    """The options of a load benchmark (this one and bench/webhooks.py)."""
    parser.add_argument("--events", type=int, default=events, help="per run and phase")
    parser.add_argument("--targets", default="embedded,server", help="embedded, server or both")
    parser.add_argument("--server-url", default=server_url, help="an admin URL")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--http-workers", type=int, default=1, help="ALLO_HTTP_WORKERS")
    parser.add_argument("--contacts", type=int, default=contacts, help="distinct senders")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--max-load-seconds", type=int, default=1800, help="wrk -d")
    parser.add_argument("--drain-timeout", type=float, default=1800.0)
    parser.add_argument(
        "--serve-env",
        action="append",
        default=[],
        metavar="ALLO_X=VALUE",
        help="an extra variable for allo serve (repeatable)",
    )
    parser.add_argument(
        "--rate", type=float, default=1500.0, help="events/s of the paced run (0: skip it)"
    )
    parser.add_argument("--paced-events", type=int, default=None, help="default: --events")
    parser.add_argument("--paced-connections", type=int, default=64)
    parser.add_argument("--json", type=Path, default=json_path)


def check_load_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets or set(targets) - {"embedded", "server"}:
        parser.error("--targets: embedded, server or embedded,server")
    if args.events < args.wrk_threads or args.connections < args.wrk_threads:
        parser.error("--events and --connections must be at least --wrk-threads")
    if any("=" not in item for item in args.serve_env):
        parser.error("--serve-env takes NAME=VALUE")
    if args.paced_events is None:
        args.paced_events = args.events
    args.target_list = targets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_options(parser, 100_000, 1000, BENCH / "results" / "intake.json", DEFAULT_SERVER_URL)
    args = parser.parse_args(argv)
    check_load_options(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed; on Debian or Ubuntu: apt-get install -y wrk",
            file=sys.stderr,
        )
        return 2

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    # Also when started in the background by a shell, which would have it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = datetime.now(UTC)
    machine_info = machine()  # before the run: the code it measures
    results = []
    for name in args.target_list:
        databases = embedded_database() if name == "embedded" else server_database(args.server_url)
        with databases as target:
            results.append(bench_target(target, args))
    report = table(results)
    verdicts = goals(results)
    print(report)
    print()
    print("\n".join(verdicts))
    document = {
        "date": started.isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "cwd": os.getcwd(),
        "machine": machine_info,
        "settings": {
            "events": args.events,
            "connections": args.connections,
            "wrk_threads": args.wrk_threads,
            "http_workers": args.http_workers,
            "contacts": args.contacts,
            "serve_env": args.serve_env,
            "body_example": body(0, args.contacts).decode(),
        },
        "results": results,
        "table": report,
        "goals": verdicts,
    }
    print()
    figures.write(args.json, document, report + "\n\n" + "\n".join(verdicts))
    complete = all(
        r["http"]["non_2xx"] == 0 and r["processing"]["processed"] == r["events"] for r in results
    )
    return 0 if complete else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything was stopped and removed", file=sys.stderr)
        sys.exit(130)
