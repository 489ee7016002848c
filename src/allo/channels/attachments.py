"""Files customers send on social and messaging channels: fetched once, kept, shown to agents.

The parsers record where each attachment lives (a CDN URL, or a WhatsApp media id to trade for
one); the job here downloads it into the data folder, named by its SHA-256, and writes what
it got back into the message's attachment: `stored` (the hash), `stored_size` and
`stored_content_type`, or `download_error`.

A URL written into a message comes from outside: it may point at the brand's own network
(the cloud's metadata service, a database, the admin panel). So every host, the first and
every redirect's, is resolved here, refused if any of its addresses is not public, and the
request goes to the very address that was checked (the name only travels in the Host header
and the TLS server name): a DNS answer that changes between the check and the connection
(rebinding) cannot send Allo elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import socket
import tempfile
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote

import httpx
from sqlalchemy import Select, cast, func, select, text, update
from sqlalchemy.dialects.postgresql import JSONPATH
from sqlalchemy.ext.asyncio import AsyncSession

from allo.channels.credentials import CredentialsCipher, load_key
from allo.channels.models import ChannelAccount
from allo.channels.outbound import SendError
from allo.channels.registry import NETWORKS, network_for
from allo.channels.service import connect
from allo.conversations.models import Message
from allo.db.engine import Database
from allo.settings import Settings

logger = logging.getLogger(__name__)

DOWNLOAD_SECONDS = 60.0
MAX_REDIRECTS = 3
BATCH_SIZE = 20
# Transient failures (timeouts, network errors, 5xx): the attachment is tried again after
# these delays, then given up.
RETRY_DELAYS = (timedelta(minutes=1), timedelta(minutes=10))
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
HEAD_BYTES = 1024
FOLDER = "attachments"

# The files Allo keeps, with the file name extensions each may be saved under. Not SVG (a
# script carrier), not HTML, not archives: an agent cannot look inside a zip, and it is how
# malware travels; the customer can send its files one by one. Images are only taken when
# their first bytes say which format they are (see _sniffed_image).
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image/jpeg": (".jpg", ".jpeg"),
    "image/png": (".png",),
    "image/gif": (".gif",),
    "image/webp": (".webp",),
    "image/heic": (".heic",),
    "image/heif": (".heif",),
    "image/avif": (".avif",),
    "audio/aac": (".aac",),
    "audio/amr": (".amr",),
    "audio/mpeg": (".mp3",),
    "audio/mp4": (".m4a", ".mp4"),
    "audio/ogg": (".ogg", ".oga", ".opus"),
    "audio/opus": (".opus",),
    "audio/wav": (".wav",),
    "audio/webm": (".weba", ".webm"),
    "audio/x-m4a": (".m4a",),
    "video/mp4": (".mp4",),
    "video/3gpp": (".3gp",),
    "video/quicktime": (".mov",),
    "video/webm": (".webm",),
    "application/pdf": (".pdf",),
    "text/plain": (".txt",),
    "text/vcard": (".vcf",),
    "text/x-vcard": (".vcf",),
    "application/msword": (".doc",),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (".docx",),
    "application/vnd.ms-excel": (".xls",),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": (".xlsx",),
    "application/vnd.ms-powerpoint": (".ppt",),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": (".pptx",),
    "application/vnd.oasis.opendocument.text": (".odt",),
    "application/vnd.oasis.opendocument.spreadsheet": (".ods",),
    "application/vnd.oasis.opendocument.presentation": (".odp",),
}
ACCEPTED = frozenset(EXTENSIONS)
# What a browser shows in the page rather than saves. Not PDF: attachments are served in a
# CSP sandbox, where Chrome refuses to start its PDF viewer ("blocked by Chrome").
INLINE = frozenset(t for t in ACCEPTED if t.startswith(("image/", "audio/", "video/")))
UNLABELLED = frozenset({"", "application/octet-stream", "binary/octet-stream"})
# What a text-like file must not start with when it claims to be a document or media: served
# by a browser that ignores nosniff, it would run as a page.
MARKUP = (b"<!doctype", b"<html", b"<head", b"<body", b"<script", b"<svg", b"<?xml", b"<iframe")

# An attachment still to fetch: it says where from, and nothing was kept or refused yet. A
# constant (not a parameter) so that a partial index on it can serve the query.
PENDING = (
    "$[*] ? ((exists(@.url) || exists(@.media_id))"
    " && !(exists(@.stored)) && !(exists(@.download_error)))"
)
DUE = (
    "$[*] ? ((exists(@.url) || exists(@.media_id))"
    " && !(exists(@.stored)) && !(exists(@.download_error))"
    " && (!(exists(@.retry_at)) || @.retry_at <= $now))"
)


class AttachmentRefused(Exception):
    """Allo will not keep this file, or its server will never give it: not tried again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AttachmentUnavailable(Exception):
    """The file could not be fetched this time (timeout, network, server error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int
    content_type: str


# Download


async def download(
    http: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    settings: Settings,
    seconds: float = DOWNLOAD_SECONDS,
) -> StoredFile:
    """Fetch one file into the data folder; raises AttachmentRefused or AttachmentUnavailable.

    `seconds` bounds everything: name resolution, every redirect, the whole body.
    """
    try:
        async with asyncio.timeout(seconds):
            return await _follow(http, _parsed(url), dict(headers), settings)
    except TimeoutError:
        raise AttachmentUnavailable(f"no complete answer within {seconds:g} s") from None
    except httpx.TransportError as error:
        raise AttachmentUnavailable(f"network error: {error or type(error).__name__}") from None
    except httpx.DecodingError:
        raise AttachmentRefused("its content encoding is broken") from None


def _parsed(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise AttachmentRefused("not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise AttachmentRefused(f"only http and https URLs are fetched, not {parsed.scheme or '?'}")
    if not parsed.host:
        raise AttachmentRefused("the URL names no host")
    return parsed


def _redirected(url: httpx.URL, location: str) -> httpx.URL:
    try:
        return _parsed(str(url.join(location)))
    except httpx.InvalidURL:
        raise AttachmentRefused("redirected to an invalid URL") from None


async def _follow(
    http: httpx.AsyncClient, url: httpx.URL, headers: dict[str, str], settings: Settings
) -> StoredFile:
    for _ in range(MAX_REDIRECTS + 1):
        addresses = await _checked_addresses(url, settings)
        response = await _send(http, url, headers, addresses)
        try:
            if not response.is_redirect:
                _check_status(response)
                return await _store(response, settings)
            following = _redirected(url, response.headers["location"])
        finally:
            await response.aclose()
        if (following.scheme, following.host, following.port) != (url.scheme, url.host, url.port):
            # A token given for one host is not handed to the next.
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        url = following
    raise AttachmentRefused(f"more than {MAX_REDIRECTS} redirects")


async def _checked_addresses(url: httpx.URL, settings: Settings) -> list[str]:
    """Every address of the URL's host, refused if any is not public (unless allowed)."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise AttachmentRefused(f"the host {host} does not resolve") from None
    addresses = list(dict.fromkeys(str(entry[4][0]) for entry in found))
    if not _allowed_host(host, settings.attachment_hosts_allowed):
        for address in addresses:
            if not _public(ipaddress.ip_address(address)):
                raise AttachmentRefused(f"the host {host} is on a private network ({address})")
    return addresses


def _allowed_host(host: str, allowed: list[str]) -> bool:
    names = {entry.strip().strip("[]").lower() for entry in allowed}
    address = _address_or_none(host)
    return host.lower() in names or (
        address is not None and address in {_address_or_none(name) for name in names}
    )


def _address_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one reaches the IPv4 host.
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None and not _public(embedded):
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


async def _send(
    http: httpx.AsyncClient, url: httpx.URL, headers: dict[str, str], addresses: list[str]
) -> httpx.Response:
    """GET the URL from one of the checked addresses, in the resolver's order (a host with
    an IPv6 address Allo cannot route to is reached over IPv4).

    The URL names the address itself, so nothing resolves the name again; the Host header
    and the TLS server name (which the certificate is checked against) keep the real name.
    `Connection: close`: a connection to that address made under one name is never reused
    for a request under another, whose certificate it was not checked against."""
    name = url.raw_host.decode("ascii")
    sent = {**headers, "Host": url.netloc.decode("ascii"), "Connection": "close"}

    async def get_from(address: str) -> httpx.Response:
        pinned = url.copy_with(host=address)
        request = http.build_request("GET", pinned, headers=sent, extensions={"sni_hostname": name})
        return await http.send(request, stream=True, follow_redirects=False)

    *others, last = addresses  # a name that resolves has at least one address
    for address in others:
        with contextlib.suppress(httpx.ConnectError):
            return await get_from(address)
    return await get_from(last)


def _check_status(response: httpx.Response) -> None:
    status = response.status_code
    if response.is_success:
        return
    if status in (408, 429) or status >= 500:
        raise AttachmentUnavailable(f"the server answered {status}")
    raise AttachmentRefused(f"the server answered {status}")


async def _store(response: httpx.Response, settings: Settings) -> StoredFile:
    declared = _media_type(response.headers.get("content-type", ""))
    if not (declared in ACCEPTED or declared in UNLABELLED or declared.startswith("image/")):
        raise AttachmentRefused(f"{declared} files are not accepted")
    limit = settings.attachment_max_bytes
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise AttachmentRefused(f"larger than {limit} bytes ({length})")
    folder = Path(settings.data_dir) / FOLDER
    incoming = await asyncio.to_thread(_incoming_file, folder)
    try:
        digest, size, head = hashlib.sha256(), 0, b""
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise AttachmentRefused(f"larger than {limit} bytes")
            head += chunk[: HEAD_BYTES - len(head)]
            digest.update(chunk)
            await asyncio.to_thread(incoming.write, chunk)
        content_type = _verified_type(declared, head)
        stored = StoredFile(digest.hexdigest(), size, content_type)
        await asyncio.to_thread(_settle, incoming, stored_path(settings, stored.sha256))
    except BaseException:
        # Nothing partial is kept, whatever stopped the download (the timeout included).
        _discard(incoming)
        raise
    return stored


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def _verified_type(declared: str, head: bytes) -> str:
    """The type the file is kept with, once its first bytes agree with it."""
    image = _sniffed_image(head)
    if declared.startswith("image/"):
        if image is None:
            raise AttachmentRefused(f"declared {declared}, but its bytes are not an image")
        return image
    if declared in UNLABELLED:
        if image is not None:
            return image
        if _is_pdf(head):
            return "application/pdf"
        raise AttachmentRefused("no content type, and its bytes are not an image or a PDF")
    if declared == "application/pdf" and not _is_pdf(head):
        raise AttachmentRefused("declared application/pdf, but its bytes are not a PDF")
    if declared != "text/plain" and head.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith(MARKUP):
        raise AttachmentRefused(f"declared {declared}, but it is a web page")
    return declared


def _sniffed_image(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"heim", b"heis"):
            return "image/heic"
        if brand in (b"mif1", b"msf1"):
            return "image/heif"
    return None


def _is_pdf(head: bytes) -> bool:
    return b"%PDF-" in head


def stored_path(settings: Settings, sha256: str) -> Path:
    """Where the file with this hash is kept (the hash is checked: it comes from the database)."""
    if not _is_sha256(sha256):
        raise ValueError("not a SHA-256 in hexadecimal")
    return Path(settings.data_dir) / FOLDER / sha256[:2] / sha256


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _incoming_file(folder: Path) -> IO[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    # In the same folder tree as the final name: the rename that publishes it is atomic.
    return tempfile.NamedTemporaryFile(dir=folder, prefix=".incoming-", delete=False)


def _settle(incoming: IO[bytes], final: Path) -> None:
    """Publish the complete file under its hash; the same content kept once."""
    incoming.flush()
    os.fsync(incoming.fileno())
    incoming.close()
    if final.exists():
        os.unlink(incoming.name)
        return
    final.parent.mkdir(exist_ok=True)
    os.replace(incoming.name, final)


def _discard(incoming: IO[bytes]) -> None:
    incoming.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(incoming.name)


# Showing them to agents

MAX_FILENAME = 150


async def stored_attachment(
    session: AsyncSession, account_id: int, message_id: int, index: int
) -> tuple[int, dict[str, Any]] | None:
    """A message's downloaded attachment and the message's conversation; None when the
    message is not this account's, or that attachment was not kept."""
    row = (
        await session.execute(
            select(Message.conversation_id, Message.attachments).where(
                Message.id == message_id, Message.account_id == account_id
            )
        )
    ).first()
    if row is None or not 0 <= index < len(row.attachments):
        return None
    attachment = row.attachments[index]
    if not isinstance(attachment, dict) or not _is_sha256(attachment.get("stored")):
        return None
    return row.conversation_id, attachment


def serving_headers(attachment: Mapping[str, Any]) -> dict[str, str]:
    """How a kept file is served: never run as a page (nosniff, sandbox), shown in the page
    only when it is media, saved under a harmless name otherwise."""
    content_type = str(attachment.get("stored_content_type"))
    name = quote(safe_filename(attachment.get("filename"), content_type), safe="")
    shown = "inline" if content_type in INLINE else "attachment"
    return {
        "Content-Type": content_type if content_type in ACCEPTED else "application/octet-stream",
        "Content-Disposition": f"{shown}; filename*=UTF-8''{name}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
        "Cache-Control": "private",
    }


def safe_filename(name: Any, content_type: str) -> str:
    """The customer's file name without folders, control or direction characters, ending in
    an extension of its type: "invoice.pdf.exe" sent as text is saved as "….exe.txt"."""
    text = name if isinstance(name, str) else ""
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    # Category C: controls, and formats such as the right-to-left override that shows
    # "invoice\u202efdp.exe" as "invoiceexe.pdf".
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = text.strip(" .")[:MAX_FILENAME].rstrip(" .") or "attachment"
    extensions = EXTENSIONS.get(content_type, ())
    if extensions and not text.lower().endswith(extensions):
        text += extensions[0]
    return text


# The download job

Resolver = Callable[
    [ChannelAccount, Mapping[str, Any]], Awaitable[tuple[str, dict[str, str]] | None]
]
"""Where a channel account's attachment is downloaded from, and with which headers."""


Outcome = Literal["stored", "refused", "retrying", "given_up"]


@dataclass
class DownloadReport:
    messages: int = 0
    stored: int = 0
    refused: int = 0
    retrying: int = 0
    given_up: int = 0

    def add(self, outcome: Outcome) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


def network_resolver(settings: Settings, http: httpx.AsyncClient) -> Resolver:
    """Asks the channel's network (`media_request`): a WhatsApp media id becomes a URL and
    its token; a CDN URL may be given as it is."""
    cipher = CredentialsCipher(load_key(settings))

    async def resolve(
        channel_account: ChannelAccount, attachment: Mapping[str, Any]
    ) -> tuple[str, dict[str, str]] | None:
        network = network_for(channel_account.kind)
        if network is None:
            return None
        return await network.media_request(connect(channel_account, cipher, http), attachment)

    return resolve


async def download_pending(
    db: Database,
    settings: Settings,
    http: httpx.AsyncClient,
    limit: int = BATCH_SIZE,
    resolve: Resolver | None = None,
    now: datetime | None = None,
    seconds_each: float = DOWNLOAD_SECONDS,
) -> DownloadReport:
    """Download the attachments of up to `limit` customer messages, newest first.

    One message at a time, each in its own transaction with its row locked (skipped by
    other workers): its attachments are downloaded by one worker, once, and the message is
    kept locked no longer than its own downloads take.
    """
    resolve = resolve or network_resolver(settings, http)
    now = now or datetime.now(UTC)
    report = DownloadReport()
    for _ in range(limit):
        async with db.transaction() as session:
            found = await _next_pending(session, now)
            if found is None:
                break
            message_id, attachments, channel_account = found
            fetched = []
            for attachment in attachments:
                if not _due(attachment, now):
                    fetched.append(attachment)
                    continue
                outcome, changed = await _fetch_one(
                    attachment, channel_account, resolve, http, settings, now, seconds_each
                )
                fetched.append(changed)
                report.add(outcome)
            await session.execute(
                update(Message).where(Message.id == message_id).values(attachments=fetched)
            )
        report.messages += 1
    return report


async def pending_exists(session: AsyncSession, now: datetime) -> bool:
    """Whether some customer message has an attachment to download now (for the sweep)."""
    found = await session.scalar(_pending_messages(now).with_only_columns(Message.id).limit(1))
    return found is not None


def _pending_messages(now: datetime) -> Select[tuple[int, list[dict[str, Any]], ChannelAccount]]:
    due = func.jsonb_path_exists(
        Message.attachments, cast(DUE, JSONPATH), func.jsonb_build_object("now", _stamp(now))
    )
    return (
        select(Message.id, Message.attachments, ChannelAccount)
        .join(ChannelAccount, ChannelAccount.id == Message.channel_account_id)
        .where(
            Message.direction == "in",
            ChannelAccount.kind.in_(NETWORKS),
            text(f"messages.attachments @? '{PENDING}'"),
            due,
        )
    )


async def _next_pending(
    session: AsyncSession, now: datetime
) -> tuple[int, list[dict[str, Any]], ChannelAccount] | None:
    row = (
        await session.execute(
            _pending_messages(now)
            .order_by(Message.id.desc())
            .limit(1)
            .with_for_update(of=Message, skip_locked=True)
        )
    ).first()
    if row is None:
        return None
    message_id, attachments, channel_account = row
    return message_id, list(attachments), channel_account


def _stamp(moment: datetime) -> str:
    """A time as stored in an attachment: fixed format, in UTC, so strings order as times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _due(attachment: Any, now: datetime) -> bool:
    if not isinstance(attachment, dict) or not ("url" in attachment or "media_id" in attachment):
        return False
    if "stored" in attachment or "download_error" in attachment:
        return False
    retry_at = attachment.get("retry_at")
    return not isinstance(retry_at, str) or retry_at <= _stamp(now)


async def _fetch_one(
    attachment: dict[str, Any],
    channel_account: ChannelAccount,
    resolve: Resolver,
    http: httpx.AsyncClient,
    settings: Settings,
    now: datetime,
    seconds: float,
) -> tuple[Outcome, dict[str, Any]]:
    """The attachment with what its download gave: the stored file, a refusal, or a retry."""
    try:
        url, headers = await _source(attachment, channel_account, resolve, seconds)
        stored = await download(http, url, headers, settings, seconds)
    except AttachmentRefused as refused:
        return "refused", _settled(attachment, download_error=refused.reason)
    except AttachmentUnavailable as unavailable:
        return _retried(attachment, unavailable.reason, now)
    except Exception as error:
        # One broken attachment (a network module's bug) must not hold up the others; it is
        # retried like a transient failure, so it is given up in the end.
        logger.warning("attachment of channel %s failed", channel_account.id, exc_info=True)
        return _retried(attachment, f"failed: {type(error).__name__}", now)
    return "stored", _settled(
        attachment,
        stored=stored.sha256,
        stored_size=stored.size,
        stored_content_type=stored.content_type,
    )


async def _source(
    attachment: dict[str, Any],
    channel_account: ChannelAccount,
    resolve: Resolver,
    seconds: float,
) -> tuple[str, dict[str, str]]:
    try:
        async with asyncio.timeout(seconds):
            source = await resolve(channel_account, attachment)
    except TimeoutError:
        raise AttachmentUnavailable("the network did not say where the file is") from None
    except httpx.TransportError as error:
        raise AttachmentUnavailable(f"network error: {error or type(error).__name__}") from None
    except SendError as error:
        if error.retryable:
            raise AttachmentUnavailable(f"{error.reason}: {error.detail}") from None
        raise AttachmentRefused(f"{error.reason}: {error.detail}") from None
    if source is not None:
        return source
    url = attachment.get("url")
    if not isinstance(url, str):
        raise AttachmentRefused("the network gives no way to download it")
    return url, {}


def _settled(attachment: dict[str, Any], **outcome: Any) -> dict[str, Any]:
    kept = {key: value for key, value in attachment.items() if key != "retry_at"}
    return {**kept, **outcome}


def _retried(
    attachment: dict[str, Any], reason: str, now: datetime
) -> tuple[Outcome, dict[str, Any]]:
    attempts = int(attachment.get("attempts") or 0) + 1
    if attempts >= MAX_ATTEMPTS:
        given_up = f"gave up after {attempts} attempts: {reason}"
        return "given_up", _settled(attachment, attempts=attempts, download_error=given_up)
    retry_at = _stamp(now + RETRY_DELAYS[attempts - 1])
    return "retrying", {
        **attachment,
        "attempts": attempts,
        "retry_at": retry_at,
        "last_error": reason,
    }
