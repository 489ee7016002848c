"""Webhook benchmark (issue 6): each network's signed webhooks through the intake path, against
the core intake (the API channel) in the same run.

For each target (the embedded PostgreSQL, the machine's PostgreSQL server) and each network
(WhatsApp, Messenger, Facebook feed comments, Instagram DMs, X mentions, X DMs) and the API
channel as the reference, on a fresh database with its own `allo serve`, wrk sends:

- saturation: N distinct signed webhooks (one customer message each) as fast as it gets answers
  on 32 connections;
- paced: N more at 1,500 events/s on 64 connections (each request waits for its time slot),

exactly as bench/intake.py does for the API channel (its wrk script, sampler and CPU meters are
reused). The bodies have each network's shape and size, a unique message id and one of 10,000
customers; their signatures (Meta: hex HMAC-SHA256 of the app secret; X: base64 HMAC-SHA256 of
the consumer secret) are computed here and read by wrk from a file, a line per request.

Measured per network and phase: the HTTP accept rate and wrk's latency percentiles, the
end-to-end rate (N / time from the load's start to the last event processed into a message),
the time from webhook to message in the inbox of every event (inbound_events.processed_at -
received_at), that N messages were stored and no event failed, CPU by process group; and the
ratio of each network's rates to the API channel's.

    .venv/bin/python bench/webhooks.py --events 50000 --targets embedded,server

Needs `wrk` (Debian: apt-get install -y wrk). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
from cryptography.fernet import Fernet

import figures
import intake
from allo.channels import service as channels
from allo.channels.credentials import CredentialsCipher, load_key
from allo.channels.outbound import Health
from allo.db import migrate
from allo.db.engine import connect, libpq_url
from allo.settings import Settings
from databases import Target, embedded_database, server_database
from figures import percentiles

BENCH = Path(__file__).resolve().parent
GOAL_RATIO = 0.90
# Channels never reach a network here: their API address is a closed local port, and their
# health is marked checked so the worker does not check them during the run.
NO_API = "http://127.0.0.1:9"
APP_SECRET = "bench-app-secret-0b6f1c2d9e"
CONSUMER_SECRET = "bench-consumer-secret-5a7e3c81f4d2b9"
# The brand's X account of each phase (one account cannot connect the same one twice).
X_BRAND_IDS = ("1400000000000000001", "1400000000000000002")
FIRST_NAMES = ("Jordan", "Sheena", "Amina", "Lucas", "Mei", "Carlos", "Chloé", "Noah", "Priya")
LAST_NAMES = ("Nelson", "Brinks", "Diallo", "Martin", "Chen", "Garcia", "Dubois", "Kowalski")

# Appended to bench/intake.py's script: Lua keeps the last definition of a global, so these
# replace its init (which still runs first) and request; delay, response and done are its own.
LUA_WEBHOOKS = r"""
-- Written by bench/webhooks.py: each thread reads its requests, a line each (signature, tab,
-- body), from its own file; the bodies and signatures were computed in Python.
local webhook_path = "__WEBHOOK_PATH__"
local webhook_headers = {
  ["Content-Type"] = "application/json",
  ["User-Agent"] = "__USER_AGENT__",
}
local signature_header = "__SIGNATURE_HEADER__"
local api_init = init

function init(args)
  api_init(args)
  data = assert(io.open("__DATA__-" .. id .. ".txt", "rb"))
end

function request()
  if sent >= reserved then
    -- wrk calls this once on its own before the load, to check the request: never sent.
    return wrk.format("POST", webhook_path, webhook_headers, "{}")
  end
  sent = sent + 1
  local line = data:read("*l")
  local tab = string.find(line, "\t", 1, true)
  webhook_headers[signature_header] = string.sub(line, 1, tab - 1)
  return wrk.format("POST", webhook_path, webhook_headers, string.sub(line, tab + 1))
end
"""


# --- the networks' webhooks ------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """What one webhook says: the event number, the phase's tag, the channel's own id on the
    network, the customer, the post (public comments) and when it was sent (ms)."""

    n: int
    tag: str
    own: str
    customer: int
    post: int
    at_ms: int

    @property
    def text(self) -> str:
        return f"{intake.TEXT} #{self.n}"

    @property
    def name(self) -> str:
        first = FIRST_NAMES[self.customer % len(FIRST_NAMES)]
        last = LAST_NAMES[self.customer // len(FIRST_NAMES) % len(LAST_NAMES)]
        return f"{first} {last}"

    @property
    def serial(self) -> int:
        """Unique across the phases of a run."""
        return (1 if self.tag == "p" else 0) * 10**9 + self.n


def meta_sign(body: bytes) -> str:
    return "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()


def x_sign(body: bytes) -> str:
    digest = hmac.new(CONSUMER_SECRET.encode(), body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


def whatsapp(m: Message) -> dict[str, Any]:
    """Cloud API `messages` change: a customer's text to the business number."""
    wa_id = str(33_612_000_000 + m.customer)
    wamid = base64.b64encode(f"\x15\x18\x0b{wa_id}\x15\x02\x00\x12\x18\x14{m.serial:020d}".encode())
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": m.own,
                            },
                            "contacts": [{"profile": {"name": m.name}, "wa_id": wa_id}],
                            "messages": [
                                {
                                    "from": wa_id,
                                    "id": "wamid." + wamid.decode(),
                                    "timestamp": str(m.at_ms // 1000),
                                    "type": "text",
                                    "text": {"body": m.text},
                                }
                            ],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }


def _mid(m: Message, length: int) -> str:
    """A message id of a Meta network's length, unique by its serial."""
    head = f"{m.serial:012d}".encode()
    tail = hashlib.sha512(head).digest()
    return base64.urlsafe_b64encode(head + tail).decode()[:length]


def messenger(m: Message) -> dict[str, Any]:
    """A Page's `messages` webhook: a customer's text in Messenger."""
    return {
        "object": "page",
        "entry": [
            {
                "id": m.own,
                "time": m.at_ms + 150,
                "messaging": [
                    {
                        "sender": {"id": str(7_001_000_000_000_000 + m.customer * 7919)},
                        "recipient": {"id": m.own},
                        "timestamp": m.at_ms,
                        "message": {"mid": "m_" + _mid(m, 86), "text": m.text},
                    }
                ],
            }
        ],
    }


def facebook(m: Message) -> dict[str, Any]:
    """A Page's `feed` change: a customer's comment under one of the Page's posts."""
    post_id = f"{m.own}_{1_164_870_100_259_578 + m.post}"
    return {
        "object": "page",
        "entry": [
            {
                "id": m.own,
                "time": m.at_ms // 1000,
                "changes": [
                    {
                        "field": "feed",
                        "value": {
                            "from": {"id": str(6_543_210_000_000_000 + m.customer), "name": m.name},
                            "post": {
                                "status_type": "added_photos",
                                "is_published": True,
                                "updated_time": "2026-11-30T08:13:20+0000",
                                "permalink_url": f"https://www.facebook.com/{post_id}",
                                "promotion_status": "inactive",
                                "id": post_id,
                            },
                            "message": m.text,
                            "post_id": post_id,
                            "comment_id": f"{1_164_870_100_259_578 + m.post}_{m.serial}",
                            "created_time": m.at_ms // 1000,
                            "item": "comment",
                            "parent_id": post_id,
                            "verb": "add",
                        },
                    }
                ],
            }
        ],
    }


def instagram(m: Message) -> dict[str, Any]:
    """An Instagram account's `messages` webhook: a customer's direct message."""
    item = f"ig_message_item:1:IGMessageID:{m.own}:{340_282_366_841_710_300_949_128 + m.serial}"
    return {
        "object": "instagram",
        "entry": [
            {
                "id": m.own,
                "time": m.at_ms + 150,
                "messaging": [
                    {
                        "sender": {"id": str(1_784_100_000_000_000 + m.customer * 7919)},
                        "recipient": {"id": m.own},
                        "timestamp": m.at_ms,
                        "message": {
                            "mid": base64.b64encode(item.encode()).decode().rstrip("="),
                            "text": m.text,
                        },
                    }
                ],
            }
        ],
    }


def _x_time(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%a %b %d %H:%M:%S +0000 %Y")


def _x_user(m: Message) -> dict[str, Any]:
    """A customer as X's v1.1 user object (Account Activity API)."""
    user_id = 3_001_969_357 + m.customer
    handle = m.name.lower().replace(" ", "_").replace("é", "e") + str(m.customer)
    image_id = 851_526_626_785_480_705 + m.customer
    image = f"https://pbs.twimg.com/profile_images/{image_id}/cW4WTi7C_normal.jpg"
    return {
        "id": user_id,
        "id_str": str(user_id),
        "name": m.name,
        "screen_name": handle,
        "location": "Boulder, CO",
        "url": None,
        "description": "Coffee, bikes and the occasional rant. Opinions my own.",
        "translator_type": "none",
        "protected": False,
        "verified": False,
        "followers_count": 22 + m.customer % 500,
        "friends_count": 45,
        "listed_count": 0,
        "favourites_count": 1204,
        "statuses_count": 494,
        "created_at": "Thu Jan 29 18:14:29 +0000 2015",
        "utc_offset": None,
        "time_zone": None,
        "geo_enabled": False,
        "lang": None,
        "contributors_enabled": False,
        "is_translator": False,
        "profile_background_color": "F5F8FA",
        "profile_background_image_url": "",
        "profile_background_image_url_https": "",
        "profile_background_tile": False,
        "profile_link_color": "1DA1F2",
        "profile_sidebar_border_color": "C0DEED",
        "profile_sidebar_fill_color": "DDEEF6",
        "profile_text_color": "333333",
        "profile_use_background_image": True,
        "profile_image_url": image.replace("https://", "http://"),
        "profile_image_url_https": image,
        "profile_banner_url": f"https://pbs.twimg.com/profile_banners/{user_id}/1422556069",
        "default_profile": True,
        "default_profile_image": False,
        "following": None,
        "follow_request_sent": None,
        "notifications": None,
    }


def _mention_text(m: Message) -> str:
    return f"@AlloCare {m.text}"


def x_mention(m: Message) -> dict[str, Any]:
    """Account Activity API `tweet_create_events`: a customer's post mentioning the brand."""
    tweet_id = 1_850_118_621_198_921_728 + m.serial * 4096
    text = _mention_text(m)
    return {
        "for_user_id": m.own,
        "user_has_blocked": "false",
        "tweet_create_events": [
            {
                "created_at": _x_time(m.at_ms),
                "id": tweet_id,
                "id_str": str(tweet_id),
                "text": text,
                "display_text_range": [10, len(text)],
                "source": '<a href="https://mobile.twitter.com" rel="nofollow">Twitter Web App</a>',
                "truncated": False,
                "in_reply_to_status_id": None,
                "in_reply_to_status_id_str": None,
                "in_reply_to_user_id": None,
                "in_reply_to_user_id_str": None,
                "in_reply_to_screen_name": None,
                "user": _x_user(m),
                "geo": None,
                "coordinates": None,
                "place": None,
                "contributors": None,
                "is_quote_status": False,
                "quote_count": 0,
                "reply_count": 0,
                "retweet_count": 0,
                "favorite_count": 0,
                "entities": {
                    "hashtags": [],
                    "urls": [],
                    "user_mentions": [
                        {
                            "screen_name": "AlloCare",
                            "name": "Allo Care",
                            "id": int(m.own),
                            "id_str": m.own,
                            "indices": [0, 9],
                        }
                    ],
                    "symbols": [],
                },
                "favorited": False,
                "retweeted": False,
                "filter_level": "low",
                "lang": "en",
                "timestamp_ms": str(m.at_ms),
            }
        ],
    }


def api_named(m: Message) -> dict[str, Any]:
    """An API channel push that names its customer as X's author does (name, handle,
    followers) and says what the mention says: the reference for X mentions, with the same
    contact details and the same text to store."""
    user = _x_user(m)
    return {
        "external_id": f"{m.tag}{m.n}",
        "contact": {
            "id": user["id_str"],
            "name": user["name"],
            "handle": user["screen_name"],
            "followers": user["followers_count"],
        },
        "text": _mention_text(m),
    }


def x_dm(m: Message) -> dict[str, Any]:
    """Account Activity API `direct_message_events`: a customer's direct message."""
    user = _x_user(m)
    return {
        "for_user_id": m.own,
        "direct_message_events": [
            {
                "type": "message_create",
                "id": str(1_854_491_830_116_155_396 + m.serial * 4096),
                "created_timestamp": str(m.at_ms),
                "message_create": {
                    "target": {"recipient_id": m.own},
                    "sender_id": user["id_str"],
                    "source_app_id": "13090192",
                    "message_data": {
                        "text": m.text,
                        "entities": {
                            "hashtags": [],
                            "symbols": [],
                            "user_mentions": [],
                            "urls": [],
                        },
                    },
                },
            }
        ],
        "apps": {"13090192": {"id": "13090192", "name": "X for iPhone", "url": "https://x.com"}},
        "users": {
            user["id_str"]: {
                "id": user["id_str"],
                "created_timestamp": "1422556069340",
                "name": user["name"],
                "screen_name": user["screen_name"],
                "location": user["location"],
                "description": user["description"],
                "protected": False,
                "verified": False,
                "followers_count": user["followers_count"],
                "friends_count": 45,
                "statuses_count": 494,
                "profile_image_url": user["profile_image_url"],
                "profile_image_url_https": user["profile_image_url_https"],
            },
            m.own: {
                "id": m.own,
                "created_timestamp": "1448312972328",
                "name": "Allo Care",
                "screen_name": "AlloCare",
                "location": "Paris, France",
                "description": "Customer care. We answer every day, 8am-8pm.",
                "protected": False,
                "verified": True,
                "followers_count": 98000,
                "friends_count": 8,
                "statuses_count": 24000,
                "profile_image_url": "http://pbs.twimg.com/profile_images/1/allo_normal.jpg",
                "profile_image_url_https": "https://pbs.twimg.com/profile_images/1/allo_normal.jpg",
            },
        },
    }


@dataclass(frozen=True)
class Network:
    name: str
    kind: str
    what: str
    own_ids: tuple[str, str]  # the channel's id on the network: saturation, paced
    credentials: dict[str, str]
    header: str
    user_agent: str
    sign: Callable[[bytes], str]
    make: Callable[[Message], dict[str, Any]]


META_CREDENTIALS = {"access_token": "EAAbench", "app_secret": APP_SECRET}
X_CREDENTIALS = {"access_token": "bench-x-token", "consumer_secret": CONSUMER_SECRET}
META_HEADER, X_HEADER = "X-Hub-Signature-256", "X-Twitter-Webhooks-Signature"
META_AGENT, X_AGENT = "facebookexternalua", "Twitter-Webhooks/1.0"
NETWORKS = {
    n.name: n
    for n in (
        Network(
            "whatsapp",
            "whatsapp",
            "WhatsApp text message",
            ("106540352242922", "106540352242923"),
            META_CREDENTIALS,
            META_HEADER,
            META_AGENT,
            meta_sign,
            whatsapp,
        ),
        Network(
            "messenger",
            "messenger",
            "Messenger text message",
            ("117172741761305", "117172741761306"),
            META_CREDENTIALS,
            META_HEADER,
            META_AGENT,
            meta_sign,
            messenger,
        ),
        Network(
            "facebook",
            "facebook",
            "comment on a Page's post (feed)",
            ("1142469655832956", "1142469655832957"),
            META_CREDENTIALS,
            META_HEADER,
            META_AGENT,
            meta_sign,
            facebook,
        ),
        Network(
            "instagram",
            "instagram",
            "Instagram direct message",
            ("17841400000000000", "17841400000000001"),
            META_CREDENTIALS,
            META_HEADER,
            META_AGENT,
            meta_sign,
            instagram,
        ),
        Network(
            "x-mention",
            "x",
            "X post mentioning the brand (Account Activity API)",
            X_BRAND_IDS,
            X_CREDENTIALS,
            X_HEADER,
            X_AGENT,
            x_sign,
            x_mention,
        ),
        Network(
            "x-dm",
            "x",
            "X direct message (Account Activity API)",
            X_BRAND_IDS,
            X_CREDENTIALS,
            X_HEADER,
            X_AGENT,
            x_sign,
            x_dm,
        ),
    )
}
API = "api"  # the reference: bench/intake.py's own requests to the API channel
# The API channel with named customers: bodies precomputed like the networks', sent with the
# tenant's token instead of a signature.
API_NAMED = Network(
    "api-named",
    "api",
    "API channel push naming its customer (name, handle, followers)",
    ("", ""),
    {},
    "Authorization",
    "bench",
    lambda body: "",
    api_named,
)
NETWORKS[API_NAMED.name] = API_NAMED


def write_requests(
    network: Network,
    load: intake.Load,
    own: str,
    args: argparse.Namespace,
    data: Path,
    sign: Callable[[bytes], str],
) -> dict[str, Any]:
    """The load's webhooks, signed, in one file per wrk thread (thread t sends events t-1,
    t-1+threads …, as bench/intake.py numbers them). Returns the bodies' sizes."""
    threads = args.wrk_threads
    sizes = []
    start_ms = int(time.time() * 1000)
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(f"{data}-{t}.txt", "wb")) for t in range(1, threads + 1)]
        for n in range(load.events):
            message = Message(
                n, load.prefix, own, n % args.contacts, n % args.posts, start_ms + n % 60_000
            )
            body = json.dumps(network.make(message), separators=(",", ":")).encode()
            assert b"\n" not in body and b"\t" not in body
            sizes.append(len(body))
            files[n % threads].write(sign(body).encode() + b"\t" + body + b"\n")
    return {
        "mean": round(statistics.fmean(sizes)),
        "min": min(sizes),
        "max": max(sizes),
    }


def webhook_script(
    load: intake.Load, network: Network, path: str, data: Path, args: argparse.Namespace
) -> Callable[[Path], str]:
    def make(markers: Path) -> str:
        base = intake.lua_script(load, args.wrk_threads, args.contacts, "unused", markers)
        assert "function request()" in base and "function init(args)" in base
        replacements = {
            "__WEBHOOK_PATH__": path,
            "__USER_AGENT__": network.user_agent,
            "__SIGNATURE_HEADER__": network.header,
            "__DATA__": str(data),
        }
        extra = LUA_WEBHOOKS
        for placeholder, value in replacements.items():
            extra = extra.replace(placeholder, value)
        return base + extra

    return make


# --- a database, its channels and allo serve -----------------------------------------------


async def connect_channels(
    url: str, account_id: int, network: Network, cipher: CredentialsCipher
) -> tuple[int, int]:
    """Two channel accounts of the network (saturation, paced), as an admin connects them."""
    db = connect(url, pool_size=2)
    try:
        async with db.transaction() as session:
            ids = []
            for phase, own in zip(("saturation", "paced"), network.own_ids, strict=True):
                channel = await channels.connect_channel(
                    session,
                    account_id,
                    network.kind,
                    f"bench-{network.name}-{phase}",
                    own,
                    network.credentials,
                    cipher,
                    {"api_url": NO_API},
                )
                channel.health = channels.health_of(
                    Health(ok=True, subscribed=True, checked_at=datetime.now(UTC))
                )
                ids.append(channel.id)
        return ids[0], ids[1]
    finally:
        await db.dispose()


def phase(
    args: argparse.Namespace,
    url: str,
    load: intake.Load,
    port: int,
    serve_pid: int,
    postmaster: int,
    workdir: Path,
    token: str,
    make_script: Callable[[Path], str] | None,
    path: str | None,
) -> dict[str, Any]:
    """One wrk load into one channel, then until it is processed: what bench/intake.py measures
    of its loads, and each event's time from webhook to message."""
    serve_cpu, postgres_cpu = intake.CpuMeter(serve_pid), intake.CpuMeter(postmaster)
    serve_cpu.start()
    postgres_cpu.start()
    own_before = intake.own_cpu()
    machine_before = psutil.cpu_times()
    processes_before = intake.cpu_snapshot()
    sampler = intake.Sampler(url, load.inbox_id, serve_cpu, postgres_cpu)
    sampler.start()
    load_start = sampler.t0
    wrk, output, wrk_cpu = intake.run_wrk(args, port, load, token, workdir, make_script, path)
    load_end = time.time()
    seconds = load_end - load_start
    cpu = {
        "seconds": round(seconds, 3),
        "allo_serve": round(serve_cpu.used(), 2),
        "postgres": round(postgres_cpu.used(), 2),
        "wrk": round(wrk_cpu, 2),
        "bench": round(intake.own_cpu() - own_before, 2),
        "machine": intake.machine_cpu(machine_before, psutil.cpu_times()),
        "other_processes": intake.other_processes(
            processes_before,
            intake.cpu_snapshot(),
            {
                os.getpid(),
                *(p.pid for p in intake.tree(serve_pid)),
                *(p.pid for p in intake.tree(postmaster)),
            },
        ),
    }
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        at_end = intake.event_counts(connection, load.inbox_id)
        deadline = time.monotonic() + args.drain_timeout
        while intake.pending_count(connection, load.inbox_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        drained = time.time()
        counts = intake.event_counts(connection, load.inbox_id)
        rows = connection.execute(
            "SELECT extract(epoch FROM processed_at - received_at) * 1000,"
            " extract(epoch FROM processed_at) FROM inbound_events"
            " WHERE channel_account_id = %s AND processed_at IS NOT NULL",
            (load.inbox_id,),
        ).fetchall()
        messages, inbound = connection.execute(
            "SELECT count(*), count(*) FILTER (WHERE direction = 'in') FROM messages"
            " WHERE channel_account_id = %s",
            (load.inbox_id,),
        ).fetchone()
        conversations = connection.execute(
            "SELECT count(*) FROM conversations WHERE channel_account_id = %s", (load.inbox_id,)
        ).fetchone()[0]
    sampler.stop()
    if sampler.error is not None:
        raise RuntimeError(f"sampling failed: {sampler.error!r}")
    processed = counts.get("processed", 0)
    last_processed = max((float(r[1]) for r in rows), default=float("nan"))
    end_to_end = last_processed - load_start
    samples = sampler.samples
    return {
        "events": load.events,
        "connections": load.connections,
        "rate_target": load.rate,
        "http": {"sent": wrk["sent"], **intake.wrk_figures(wrk)},
        "processing": {
            "stored": sum(counts.values()),
            "processed": processed,
            "failed_or_skipped": counts.get("failed", 0) + counts.get("skipped", 0),
            "pending_left": counts.get("pending", 0),
            "messages": messages,
            "messages_inbound": inbound,
            "conversations": conversations,
            "seconds_from_load_start": round(end_to_end, 3),
            "events_per_s": processed / end_to_end if end_to_end > 0 else 0.0,
            "pending_at_load_end": at_end.get("pending", 0),
            "max_pending": max(s["pending"] for s in samples),
            "backlog_growth_per_s": round(intake.backlog_growth(samples, seconds), 1),
            "drained_after_s": round(drained - load_start, 3),
        },
        "webhook_to_inbox_ms": percentiles([float(r[0]) for r in rows]) if rows else {},
        "cpu_seconds_during_load": cpu,
        "rss_mb_peak": max(s["rss_mb"] for s in samples),
        "wrk_output": output,
        "samples": samples,
    }


def bench_network(target: Target, name: str, args: argparse.Namespace, key: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="allo-bwh-", dir="/tmp"))
    try:
        return _bench_network(target, name, args, key, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _bench_network(
    target: Target, name: str, args: argparse.Namespace, key: str, workdir: Path
) -> dict[str, Any]:
    intake.log(f"{target.name} / {name}: migrating")
    migrate.upgrade(target.url)
    target.postgres, postmaster = intake.postgres_facts(target.url)
    tenant = asyncio.run(intake.make_tenant(target.url))
    loads = [intake.Load("saturation", args.events, tenant.inbox_id, args.connections)]
    if args.rate > 0:
        loads.append(
            intake.Load(
                "paced",
                args.paced_events,
                tenant.paced_inbox_id,
                args.paced_connections,
                args.rate,
                "p",
            )
        )
    result: dict[str, Any] = {
        "target": target.name,
        "network": name,
        "events": args.events,
        "postgres": target.postgres,
    }
    scripts: list[tuple[Callable[[Path], str] | None, str | None]] = [(None, None)] * len(loads)
    if name == API:
        body = intake.body(0, args.contacts)
        result |= {"what": "API channel (bench/intake.py's requests)", "body_bytes": len(body)}
    else:
        network = NETWORKS[name]
        sign = network.sign
        if network.kind == "api":
            ids = (tenant.inbox_id, tenant.paced_inbox_id)
            paths = [f"/api/v1/inboxes/{i}/messages" for i in ids]
            bearer = f"Bearer {tenant.token}"
            sign = lambda _body: bearer  # noqa: E731
        else:
            cipher = CredentialsCipher(load_key(Settings(secret_key=key)))
            ids = asyncio.run(connect_channels(target.url, tenant.account_id, network, cipher))
            paths = [f"/webhooks/{i}" for i in ids]
        sizes = []
        scripts = []
        for index, load in enumerate(loads):
            load.inbox_id = ids[index]
            data = workdir / f"requests-{load.name}"
            sizes.append(write_requests(network, load, network.own_ids[index], args, data, sign))
            scripts.append((webhook_script(load, network, paths[index], data, args), paths[index]))
        example = network.make(Message(0, "b", network.own_ids[0], 0, 0, int(time.time() * 1000)))
        result |= {
            "what": network.what,
            "kind": network.kind,
            "body_bytes": sizes[0]["mean"],
            "body_sizes": sizes,
            "body_example": example,
        }

    port = intake.free_port()
    serve_log = workdir / "serve.log"
    serve_args = argparse.Namespace(**vars(args))
    serve_args.serve_env = [*args.serve_env, f"ALLO_SECRET_KEY={key}"]
    intake.log(f"{target.name} / {name}: starting allo serve on port {port}")
    with intake.allo_serve(target.url, port, serve_args, serve_log) as serve_pid:
        time.sleep(args.idle_seconds)
        result["memory_idle"] = intake.tree_memory(serve_pid)
        for load, (make_script, path) in zip(loads, scripts, strict=True):
            intake.log(
                f"{target.name} / {name}: {load.name}, {load.events} events"
                + (f" at {load.rate:,.0f}/s" if load.rate else "")
                + f" ({load.connections} connections)"
            )
            result[load.name] = phase(
                args,
                target.url,
                load,
                port,
                serve_pid,
                postmaster,
                workdir,
                tenant.token,
                make_script,
                path,
            )
            done = result[load.name]
            intake.log(
                f"{target.name} / {name}: {load.name}: "
                f"{done['http']['events_per_s']:,.0f} events/s HTTP, "
                f"{done['processing']['events_per_s']:,.0f}/s processed, "
                f"{done['processing']['messages']} messages, "
                f"{done['processing']['failed_or_skipped']} failed"
            )
        log_text = intake.tail(serve_log, 10**9)
    result["serve_log_warnings"] = sum(" WARNING " in line for line in log_text.splitlines())
    if result["serve_log_warnings"]:
        result["serve_log_tail"] = intake.tail(serve_log)
    return result


# --- report --------------------------------------------------------------------------------


def complete(r: dict[str, Any], phase_name: str) -> bool:
    """Every request answered 2xx, N events stored and processed into N inbound messages."""
    p = r[phase_name]
    http, proc = p["http"], p["processing"]
    return (
        http["non_2xx"] == 0
        and not any(http["socket_errors"].values())
        and proc["stored"] == p["events"]
        and proc["processed"] == p["events"]
        and proc["failed_or_skipped"] == 0
        and proc["messages"] == p["events"]
        and proc["messages_inbound"] == p["events"]
    )


def add_ratios(results: list[dict[str, Any]], reference: str = API) -> None:
    """Each network's rates over the reference's on the same target (the mean of its runs)."""
    for target in {r["target"] for r in results}:
        api = [r for r in results if r["target"] == target and r["network"] == reference]
        if not api:
            continue
        http = statistics.fmean(r["saturation"]["http"]["events_per_s"] for r in api)
        processed = statistics.fmean(r["saturation"]["processing"]["events_per_s"] for r in api)
        for r in results:
            if r["target"] == target:
                sat = r["saturation"]
                r["ratios"] = {
                    "http_over_api": sat["http"]["events_per_s"] / http,
                    # Nothing processed with ALLO_SERVE_RUNS_WORKER=false (HTTP alone).
                    "processing_over_api": (
                        sat["processing"]["events_per_s"] / processed if processed else math.nan
                    ),
                }


def cores(p: dict[str, Any], key: str) -> float:
    cpu = p["cpu_seconds_during_load"]
    if key == "other":
        return float(cpu["other_processes"]["total"]) / cpu["seconds"]
    return float(cpu[key]) / cpu["seconds"]


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "Saturation (wrk on 32 connections, as fast as answers come):",
        "",
        "| target | network | body bytes | HTTP events/s | / API | p50 ms | p90 ms | p99 ms "
        "| processed events/s | / API | messages | failed | non-2xx | conversations "
        "| allo serve cores | PostgreSQL cores | wrk cores | other cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r["saturation"]
        http, proc, lat = s["http"], s["processing"], s["http"]["latency_ms"]
        ratios = r.get("ratios", {})
        lines.append(
            f"| {r['target']} | {r['network']} | {r['body_bytes']:,} "
            f"| {http['events_per_s']:,.0f} | {ratios.get('http_over_api', float('nan')):.2f} "
            f"| {lat['p50']:.1f} | {lat['p90']:.1f} | {lat['p99']:.1f} "
            f"| {proc['events_per_s']:,.0f} "
            f"| {ratios.get('processing_over_api', float('nan')):.2f} "
            f"| {proc['messages']:,} | {proc['failed_or_skipped']} | {http['non_2xx']} "
            f"| {proc['conversations']:,} | {cores(s, 'allo_serve'):.2f} "
            f"| {cores(s, 'postgres'):.2f} | {cores(s, 'wrk'):.2f} | {cores(s, 'other'):.2f} |"
        )
    paced = [r for r in results if "paced" in r]
    if paced:
        rate = paced[0]["paced"]["rate_target"]
        lines += [
            "",
            f"At {rate:,.0f} events/s (wrk paced on 64 connections; late = sent over 10 ms after "
            "its slot), and from webhook to message in the inbox (processed_at - received_at "
            "of each event):",
            "",
            "| target | network | achieved /s | p50 ms | p90 ms | p99 ms | late "
            "| pending at end of load | backlog growth /s | to inbox p50 ms | p95 ms | p99 ms "
            "| max ms | messages | failed | non-2xx | allo serve cores | PostgreSQL cores |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in paced:
        p = r["paced"]
        http, proc, lat = p["http"], p["processing"], p["http"]["latency_ms"]
        inbox = p["webhook_to_inbox_ms"]
        lines.append(
            f"| {r['target']} | {r['network']} | {http['events_per_s']:,.0f} "
            f"| {lat['p50']:.1f} | {lat['p90']:.1f} | {lat['p99']:.1f} "
            f"| {http['late_over_10ms']} | {proc['pending_at_load_end']:,} "
            f"| {proc['backlog_growth_per_s']} | {inbox.get('p50_ms', float('nan')):.0f} "
            f"| {inbox.get('p95_ms', float('nan')):.0f} | {inbox.get('p99_ms', float('nan')):.0f} "
            f"| {inbox.get('max_ms', float('nan')):.0f} | {proc['messages']:,} "
            f"| {proc['failed_or_skipped']} | {http['non_2xx']} "
            f"| {cores(p, 'allo_serve'):.2f} | {cores(p, 'postgres'):.2f} |"
        )
    return "\n".join(lines)


def goals(results: list[dict[str, Any]], reference: str = API) -> list[str]:
    """Issue 6: each network's throughput within 10% of the core intake's (>= 0.90 of it); and
    every webhook stored as a message."""
    lines = []
    for r in results:
        checks = [
            (
                "all 2xx, N messages, none failed",
                all(complete(r, p) for p in ("saturation", "paced") if p in r),
            ),
        ]
        if r["network"] != reference and "ratios" in r:
            ratio = r["ratios"]
            checks += [
                (
                    f"HTTP >= {GOAL_RATIO:.2f} x {reference} ({ratio['http_over_api']:.2f})",
                    ratio["http_over_api"] >= GOAL_RATIO,
                ),
                (
                    f"processed >= {GOAL_RATIO:.2f} x {reference} "
                    f"({ratio['processing_over_api']:.2f})",
                    ratio["processing_over_api"] >= GOAL_RATIO,
                ),
            ]
        lines.append(
            f"{r['target']} / {r['network']}: "
            + "; ".join(f"{label}: {'yes' if ok else 'NO'}" for label, ok in checks)
        )
    return lines


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    intake.add_load_options(
        parser, 50_000, 10_000, BENCH / "results" / "webhooks.json", intake.DEFAULT_SERVER_URL
    )
    parser.add_argument(
        "--networks",
        default=",".join([API, *(name for name in NETWORKS if name != API_NAMED.name)]),
        help=f"comma-separated, in order: {API} (the reference), {', '.join(NETWORKS)}",
    )
    parser.add_argument("--posts", type=int, default=100, help="Page posts commented (facebook)")
    parser.add_argument(
        "--reference",
        default=API,
        choices=(API, API_NAMED.name),
        help="what the ratios are to: the API channel as bench/intake.py loads it, or its "
        "pushes naming their customers as X does",
    )
    args = parser.parse_args(argv)
    intake.check_load_options(parser, args)
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    if not networks or set(networks) - {API, *NETWORKS}:
        parser.error(f"--networks: among {API}, {', '.join(NETWORKS)}")
    if args.reference not in networks:
        parser.error(f"--networks must include the reference, {args.reference}")
    args.network_list = networks
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed; on Debian or Ubuntu: apt-get install -y wrk", file=sys.stderr)
        return 2

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = datetime.now(UTC)
    machine_info = intake.machine()
    # One key for the run: the credentials encrypted here are decrypted by allo serve.
    key = Fernet.generate_key().decode()
    results = []
    for target_name in args.target_list:
        for name in args.network_list:
            opened = (
                embedded_database()
                if target_name == "embedded"
                else server_database(args.server_url)
            )
            with opened as target:
                results.append(bench_network(target, name, args, key))
    add_ratios(results, args.reference)
    report = table(results)
    verdicts = goals(results, args.reference)
    print(report)
    print()
    print("\n".join(verdicts))
    document = {
        "date": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "command": shlex.join([sys.executable, *sys.argv]),
        "cwd": os.getcwd(),
        "machine": machine_info,
        "settings": {
            "events": args.events,
            "paced_events": args.paced_events,
            "rate": args.rate,
            "connections": args.connections,
            "paced_connections": args.paced_connections,
            "wrk_threads": args.wrk_threads,
            "http_workers": args.http_workers,
            "contacts": args.contacts,
            "posts": args.posts,
            "networks": args.network_list,
            "reference": args.reference,
            "serve_env": args.serve_env,
        },
        "results": results,
        "table": report,
        "goals": verdicts,
    }
    print()
    figures.write(args.json, document, report + "\n\n" + "\n".join(verdicts))
    ok = all(complete(r, p) for r in results for p in ("saturation", "paced") if p in r)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything was stopped and removed", file=sys.stderr)
        sys.exit(130)
