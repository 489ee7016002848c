"""Attachments customers send: downloaded once, safely, kept under their hash, and shown only
to the agents who may open their conversation.

Files are served over real HTTP on loopback by a fake CDN that records every request; the
tests that need it allow 127.0.0.1 through `attachment_hosts_allowed`, as an operator would
allow a host of their own network.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select, update

from allo.accounts import service as accounts
from allo.channels import attachments
from allo.channels import service as channels
from allo.channels.attachments import AttachmentRefused, AttachmentUnavailable, download
from allo.channels.credentials import CredentialsCipher, load_key
from allo.channels.models import ChannelAccount
from allo.contacts.models import Contact
from allo.conversations.models import Conversation, Message
from allo.db.engine import Database
from allo.routing import service as routing
from allo.routing.schemas import TeamIn
from allo.settings import Settings
from tests.conftest import Tenant
from tests.fakes.server import free_port, serving
from tests.fakes.whatsapp_cloud import ACCESS_TOKEN, APP_SECRET, PHONE_NUMBER_ID, FakeWhatsAppCloud
from tests.web.test_sessions import PASSWORD, make_agent, sign_in

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def tiny_png() -> bytes:
    """A real PNG of one pixel."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG = tiny_png()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64
PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
HTML = b"<!DOCTYPE html><html><script>fetch('/api/v1/conversations')</script></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><circle r="4"/></svg>'


# A fake CDN


@dataclass
class Served:
    body: bytes = b""
    content_type: str | None = "image/png"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    """Streamed without a Content-Length."""
    stall: float = 0.0
    """Seconds to wait after the first bytes (a server that hangs mid-file)."""
    delay: float = 0.0


class Cdn:
    """Files by path, as a network's CDN serves them; every request is recorded."""

    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.hits: list[str] = []
        self.seen: list[dict[str, str]] = []
        self.app = FastAPI()
        self.app.add_api_route("/{path:path}", self.serve, methods=["GET"])

    async def serve(self, path: str, request: Request) -> Response:
        self.hits.append(f"/{path}")
        self.seen.append(dict(request.headers))
        served = self.files.get(f"/{path}")
        if served is None:
            return Response(status_code=404)
        await asyncio.sleep(served.delay)
        headers = dict(served.headers)
        if served.content_type is not None:
            headers["content-type"] = served.content_type
        if served.chunked or served.stall:
            return StreamingResponse(
                self._pieces(served), status_code=served.status, headers=headers
            )
        return Response(served.body, status_code=served.status, headers=headers)

    async def _pieces(self, served: Served) -> AsyncIterator[bytes]:
        for start in range(0, len(served.body), 512):
            yield served.body[start : start + 512]
            if served.stall:
                await asyncio.sleep(served.stall)


@pytest.fixture
def cdn() -> Iterator[tuple[Cdn, str]]:
    fake = Cdn()
    with serving(fake.app) as base_url:
        yield fake, base_url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def allowing(settings: Settings, tmp_path: Path | None = None, **changes: Any) -> Settings:
    """The test settings with loopback allowed (and a data folder of the test's own)."""
    update = {"attachment_hosts_allowed": ["127.0.0.1"], **changes}
    if tmp_path is not None:
        update["data_dir"] = tmp_path
    return settings.model_copy(update=update)


def kept_files(settings: Settings) -> list[Path]:
    """Every file under the attachments folder, temporary ones included."""
    folder = Path(settings.data_dir) / "attachments"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@dataclass
class Fetching:
    """The fake CDN at `base`, a client, and the test's settings that allow the loopback."""

    cdn: Cdn
    base: str
    http: httpx.AsyncClient
    settings: Settings

    @property
    def port(self) -> int | None:
        return httpx.URL(self.base).port

    def serve(self, path: str, served: Served) -> str:
        """Put a file on the CDN; returns its URL."""
        self.cdn.files[path] = served
        return f"{self.base}{path}"

    async def download(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        seconds: float = attachments.DOWNLOAD_SECONDS,
        **changes: Any,
    ) -> attachments.StoredFile:
        """`download` under these settings, with `changes` to them."""
        local = allowing(self.settings, **changes)
        return await download(self.http, url, headers or {}, local, seconds)


@pytest.fixture
def fetching(
    cdn: tuple[Cdn, str], http: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> Fetching:
    fake, base = cdn
    return Fetching(fake, base, http, allowing(settings, tmp_path))


# Downloading one file


async def test_a_photo_is_kept_under_its_hash_with_its_type_and_size(
    fetching: Fetching, tmp_path: Path
) -> None:
    stored = await fetching.download(fetching.serve("/p/photo.png", Served(PNG, "image/png")))
    digest = hashlib.sha256(PNG).hexdigest()
    assert stored == attachments.StoredFile(digest, len(PNG), "image/png")
    assert kept_files(fetching.settings) == [tmp_path / "attachments" / digest[:2] / digest]
    assert (tmp_path / "attachments" / digest[:2] / digest).read_bytes() == PNG


async def test_the_same_file_sent_twice_is_kept_once(fetching: Fetching) -> None:
    first = await fetching.download(fetching.serve("/a.jpg", Served(JPEG, "image/jpeg")))
    second = await fetching.download(fetching.serve("/again/b.jpg", Served(JPEG, "image/jpeg")))
    assert first == second
    assert len(kept_files(fetching.settings)) == 1


async def test_an_image_under_the_wrong_image_type_is_kept_as_what_its_bytes_are(
    fetching: Fetching,
) -> None:
    mislabelled = fetching.serve("/mislabelled", Served(PNG, "image/jpeg; charset=binary"))
    unlabelled = fetching.serve("/unlabelled", Served(PDF, None))
    assert (await fetching.download(mislabelled)).content_type == "image/png"
    assert (await fetching.download(unlabelled)).content_type == "application/pdf"


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "undeclared"])
async def test_a_file_over_the_size_limit_is_refused_and_nothing_is_kept(
    chunked: bool, fetching: Fetching
) -> None:
    url = fetching.serve("/big.png", Served(PNG + b"\x00" * 4096, "image/png", chunked=chunked))
    with pytest.raises(AttachmentRefused, match="larger than 2048 bytes"):
        await fetching.download(url, attachment_max_bytes=2048)
    assert kept_files(fetching.settings) == []


async def test_a_file_exactly_at_the_size_limit_is_kept(fetching: Fetching) -> None:
    body = PNG + b"\x00" * (2048 - len(PNG))
    url = fetching.serve("/edge.png", Served(body, "image/png", chunked=True))
    assert (await fetching.download(url, attachment_max_bytes=2048)).size == 2048


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (HTML, "text/html", "text/html files are not accepted"),
        (b"PK\x03\x04" + b"\x00" * 40, "application/zip", "application/zip files are not"),
        (b"MZ\x90\x00", "application/x-msdownload", "application/x-msdownload files are not"),
        (SVG, "image/svg+xml", "declared image/svg+xml, but its bytes are not an image"),
        (SVG, "image/png", "declared image/png, but its bytes are not an image"),
        (HTML, "image/png", "declared image/png, but its bytes are not an image"),
        (b"\n  " + HTML, "video/mp4", "declared video/mp4, but it is a web page"),
        (HTML, "application/pdf", "declared application/pdf, but its bytes are not a PDF"),
        (HTML, None, "no content type, and its bytes are not an image or a PDF"),
    ],
    ids=[
        "html",
        "zip",
        "exe",
        "svg",
        "svg-as-png",
        "html-as-png",
        "html-as-mp4",
        "html-as-pdf",
        "unlabelled-html",
    ],
)
async def test_files_that_are_not_accepted_or_not_what_they_claim_are_refused(
    body: bytes, content_type: str | None, reason: str, fetching: Fetching
) -> None:
    url = fetching.serve("/file", Served(body, content_type))
    with pytest.raises(AttachmentRefused) as refused:
        await fetching.download(url)
    assert refused.value.reason.startswith(reason)
    assert kept_files(fetching.settings) == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://cdn.example/photo.png",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "http:///photo.png",
        "not a URL at all",
    ],
)
async def test_only_http_and_https_urls_are_fetched(
    url: str, http: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(AttachmentRefused):
        await download(http, url, {}, allowing(settings, tmp_path))


@pytest.mark.parametrize(
    "host",
    [
        "10.0.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "0.0.0.0",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:10.0.0.1]",
        "[2002:7f00:1::]",
        "[fe80::1]",
        "localhost",
        "127.1",
        "2130706433",
    ],
)
async def test_private_addresses_are_refused_before_any_connection(
    host: str, fetching: Fetching
) -> None:
    fetching.serve("/latest/meta-data/", Served(b"secret", "text/plain"))
    url = f"http://{host}:{fetching.port}/latest/meta-data/"
    started = time.monotonic()
    with pytest.raises(AttachmentRefused, match="on a private network"):
        await fetching.download(url, attachment_hosts_allowed=[])
    # Refused at once: no connection was tried (one to 10.0.0.1 would hang, one to the
    # loopback would reach the fake).
    assert time.monotonic() - started < 1
    assert fetching.cdn.hits == []


async def test_a_redirect_to_a_private_address_is_refused(fetching: Fetching) -> None:
    port = fetching.port
    fetching.serve("/hop", Served(status=302, headers={"location": f"http://127.0.0.1:{port}/s"}))
    fetching.serve("/s", Served(PNG))
    # The first host is allowed by name; the address it redirects to is not.
    with pytest.raises(AttachmentRefused, match=r"127\.0\.0\.1 is on a private network"):
        await fetching.download(
            f"http://localhost:{port}/hop", attachment_hosts_allowed=["localhost"]
        )
    assert fetching.cdn.hits == ["/hop"]


async def test_three_redirects_are_followed_and_a_fourth_is_refused(fetching: Fetching) -> None:
    for number in range(1, 5):
        fetching.serve(f"/r{number}", Served(status=301, headers={"location": f"/r{number + 1}"}))
    fetching.serve("/r5", Served(PNG))
    assert (await fetching.download(f"{fetching.base}/r2")).size == len(PNG)
    with pytest.raises(AttachmentRefused, match="more than 3 redirects"):
        await fetching.download(f"{fetching.base}/r1")


async def test_a_token_goes_to_the_host_it_was_given_for_and_not_where_it_redirects(
    fetching: Fetching,
) -> None:
    port = fetching.port
    url = fetching.serve(
        "/media", Served(status=302, headers={"location": f"http://localhost:{port}/f"})
    )
    fetching.serve("/f", Served(PNG))
    await fetching.download(
        url,
        {"Authorization": "Bearer wa-token"},
        attachment_hosts_allowed=["127.0.0.1", "localhost"],
    )
    seen = fetching.cdn.seen
    assert seen[0]["authorization"] == "Bearer wa-token"
    assert seen[0]["host"] == f"127.0.0.1:{port}"
    assert "authorization" not in seen[1]
    assert seen[1]["host"] == f"localhost:{port}"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, AttachmentRefused),
        (403, AttachmentRefused),
        (429, AttachmentUnavailable),
        (503, AttachmentUnavailable),
    ],
)
async def test_a_server_error_is_tried_again_and_a_missing_file_is_not(
    status: int, error: type[Exception], fetching: Fetching
) -> None:
    url = fetching.serve("/x.png", Served(b"nope", "text/plain", status=status))
    with pytest.raises(error, match=f"the server answered {status}"):
        await fetching.download(url)


async def test_a_server_that_stalls_mid_file_times_out_and_nothing_is_kept(
    fetching: Fetching,
) -> None:
    url = fetching.serve("/slow.png", Served(PNG + b"\x00" * 2048, stall=3.0))
    with pytest.raises(AttachmentUnavailable, match=r"no complete answer within 0\.3 s"):
        await fetching.download(url, seconds=0.3)
    assert kept_files(fetching.settings) == []


# HTTPS: the connection goes to the checked address, the certificate is checked for the name


@contextmanager
def serving_tls(app: Any, certfile: Path, keyfile: Path) -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        ssl_certfile=str(certfile),
        ssl_keyfile=str(keyfile),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the TLS fake did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def certificate_for(name: str, folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for `name` only (no IP address in it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


async def test_over_https_the_address_checked_is_reached_under_the_name_of_the_certificate(
    settings: Settings, tmp_path: Path
) -> None:
    fake = Cdn()
    fake.files["/photo.png"] = Served(PNG)
    certfile, keyfile = certificate_for("localhost", tmp_path)
    local = allowing(settings, tmp_path, attachment_hosts_allowed=["localhost"])
    trusting = ssl.create_default_context(cafile=str(certfile))
    with serving_tls(fake.app, certfile, keyfile) as port:
        async with httpx.AsyncClient(verify=trusting) as client:
            stored = await download(client, f"https://localhost:{port}/photo.png", {}, local)
            # The certificate names localhost only: reached by address with the address as
            # server name, it would not verify.
            with pytest.raises(AttachmentUnavailable, match="network error"):
                await download(
                    client,
                    f"https://127.0.0.1:{port}/photo.png",
                    {},
                    allowing(settings, tmp_path),
                )
    assert stored.content_type == "image/png"
    assert fake.seen[0]["host"] == f"localhost:{port}"


# The download job


@dataclass
class Thread:
    tenant: Tenant
    channel_account_id: int
    conversation_id: int


async def open_thread(
    db: Database, tenant: Tenant, kind: str = "whatsapp", **channel: Any
) -> Thread:
    """A conversation with a customer on a channel account of this kind."""
    async with db.transaction() as session:
        account = await channels.create_channel_account(
            session,
            tenant.account_id,
            kind,
            kind.title(),
            channel.pop("external_id", f"{kind}-brand"),
            **channel,
        )
        contact = Contact(account_id=tenant.account_id, name="Camille")
        session.add(contact)
        await session.flush()
        conversation = Conversation(
            account_id=tenant.account_id,
            channel_account_id=account.id,
            channel=kind,
            visibility="private",
            contact_id=contact.id,
            last_message_at=NOW,
        )
        session.add(conversation)
        await session.flush()
        return Thread(tenant, account.id, conversation.id)


async def as_given(
    channel_account: ChannelAccount, attachment: Mapping[str, Any]
) -> tuple[str, dict[str, str]] | None:
    """A network that says nothing more about its attachments: their URL is used as it is."""
    return None


@dataclass
class Downloads:
    """The download job over a conversation with a customer, fetching from the fake CDN."""

    db: Database
    fetching: Fetching
    thread: Thread

    async def open_thread(self, kind: str, **channel: Any) -> Thread:
        return await open_thread(self.db, self.thread.tenant, kind, **channel)

    async def add_message(
        self, sent: list[dict[str, Any]], thread: Thread | None = None, direction: str = "in"
    ) -> int:
        thread = thread or self.thread
        async with self.db.transaction() as session:
            message = Message(
                account_id=thread.tenant.account_id,
                conversation_id=thread.conversation_id,
                channel_account_id=thread.channel_account_id,
                direction=direction,
                visibility="private",
                text="",
                attachments=sent,
                sent_at=NOW,
                received_at=NOW,
                delivery_status="received",
            )
            session.add(message)
            await session.flush()
            return message.id

    async def run(
        self,
        resolve: attachments.Resolver | None = as_given,
        at: datetime = NOW,
        limit: int = attachments.BATCH_SIZE,
        seconds_each: float = attachments.DOWNLOAD_SECONDS,
    ) -> attachments.DownloadReport:
        """The job once, as the worker runs it at `at` (`resolve=None`: as networks say)."""
        return await attachments.download_pending(
            self.db,
            self.fetching.settings,
            self.fetching.http,
            limit=limit,
            resolve=resolve,
            now=at,
            seconds_each=seconds_each,
        )

    async def pending(self, at: datetime = NOW) -> bool:
        async with self.db.sessions() as session:
            return await attachments.pending_exists(session, at)

    async def attachments_of(self, message_id: int) -> list[dict[str, Any]]:
        async with self.db.sessions() as session:
            message = await session.get(Message, message_id)
        assert message is not None
        return message.attachments


@pytest.fixture
async def downloads(db: Database, tenant: Tenant, fetching: Fetching) -> Downloads:
    return Downloads(db, fetching, await open_thread(db, tenant))


async def test_pending_attachments_are_downloaded_and_written_into_their_message(
    downloads: Downloads, fetching: Fetching
) -> None:
    photo = fetching.serve("/photo.png", Served(PNG))
    sticker = {"type": "sticker", "url": photo, "content_type": "image/webp"}
    disguised = {"type": "image", "url": fetching.serve("/page.png", Served(HTML))}
    location = {"type": "location", "latitude": 48.85, "longitude": 2.35}
    message_id = await downloads.add_message([sticker, disguised, location])
    assert await downloads.pending()

    report = await downloads.run()

    assert (report.messages, report.stored, report.refused) == (1, 1, 1)
    kept, refused, untouched = await downloads.attachments_of(message_id)
    assert kept == sticker | {
        "stored": hashlib.sha256(PNG).hexdigest(),
        "stored_size": len(PNG),
        "stored_content_type": "image/png",
    }
    assert refused == disguised | {
        "download_error": "declared image/png, but its bytes are not an image"
    }
    assert untouched == location
    # Kept and refused files are done with: nothing is fetched again.
    assert (await downloads.run()).messages == 0
    assert not await downloads.pending()
    assert fetching.cdn.hits == ["/photo.png", "/page.png"]


async def test_a_media_id_is_fetched_where_the_network_says_with_its_token(
    downloads: Downloads, fetching: Fetching
) -> None:
    audio = fetching.serve(
        "/v19.0/media/wamid-audio", Served(b"OggS\x00\x02" + b"\x00" * 64, "audio/ogg")
    )
    voice = {"type": "audio", "media_id": "wamid-audio", "content_type": "audio/ogg; codecs=opus"}
    lost = {"type": "document", "media_id": "unknown"}
    message_id = await downloads.add_message([voice, lost])

    async def whatsapp_like(
        channel_account: ChannelAccount, attachment: Mapping[str, Any]
    ) -> tuple[str, dict[str, str]] | None:
        assert channel_account.id == downloads.thread.channel_account_id
        if attachment["media_id"] != "wamid-audio":
            return None
        return audio, {"Authorization": "Bearer wa-token"}

    await downloads.run(whatsapp_like)

    kept, not_found = await downloads.attachments_of(message_id)
    assert kept["stored_content_type"] == "audio/ogg"
    assert not_found["download_error"] == "the network gives no way to download it"
    assert fetching.cdn.seen[0]["authorization"] == "Bearer wa-token"


async def test_by_default_each_network_says_where_its_attachments_are(
    downloads: Downloads, fetching: Fetching
) -> None:
    cdn_photo = fetching.serve("/v/t1.15752-9/photo.jpg", Served(JPEG, "image/jpeg"))
    cloud = FakeWhatsAppCloud()
    cloud.add_media("65463453", PNG, "image/png")
    cipher = CredentialsCipher(load_key(fetching.settings))
    credentials = {"access_token": ACCESS_TOKEN, "app_secret": APP_SECRET, "verify_token": "v"}
    with serving(cloud.app) as graph:
        whatsapp = await downloads.open_thread(
            "whatsapp",
            external_id=PHONE_NUMBER_ID,
            credentials=credentials,
            cipher=cipher,
            settings={"api_url": graph},
        )
        photo = await downloads.add_message(
            [{"type": "image", "media_id": "65463453"}, {"type": "image", "media_id": "404404"}],
            whatsapp,
        )
        messenger = await downloads.open_thread("messenger", credentials=credentials, cipher=cipher)
        scan = await downloads.add_message([{"type": "image", "url": cdn_photo}], messenger)

        report = await downloads.run(resolve=None)

    assert (report.stored, report.refused) == (2, 1)
    kept, gone = await downloads.attachments_of(photo)
    assert kept["stored"] == hashlib.sha256(PNG).hexdigest()
    assert gone["download_error"] == "the network gives no way to download it"
    [media_file] = [r for r in cloud.requests if r.path == "/whatsapp_business/attachments/"]
    assert media_file.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    [jpeg] = await downloads.attachments_of(scan)
    assert jpeg["stored_content_type"] == "image/jpeg"
    # The page's token never goes to the CDN.
    assert "authorization" not in fetching.cdn.seen[0]


async def test_only_customer_messages_of_networks_are_downloaded(
    downloads: Downloads, fetching: Fetching
) -> None:
    sent = [{"type": "image", "url": fetching.serve("/a.png", Served(PNG))}]
    from_api = await downloads.add_message(sent, await downloads.open_thread("api"))
    messenger = await downloads.open_thread("messenger")
    ours = await downloads.add_message(sent, messenger, "out")
    assert (await downloads.run()).messages == 0
    assert not await downloads.pending()
    assert await downloads.attachments_of(from_api) == sent
    assert await downloads.attachments_of(ours) == sent
    assert fetching.cdn.hits == []


async def test_the_newest_messages_are_downloaded_first_in_bounded_batches(
    downloads: Downloads, fetching: Fetching
) -> None:
    for number in range(3):
        url = fetching.serve(f"/{number}.png", Served(PNG + bytes([number])))
        await downloads.add_message([{"type": "image", "url": url}])
    assert (await downloads.run(limit=2)).stored == 2
    assert fetching.cdn.hits == ["/2.png", "/1.png"]


async def test_a_stalled_download_is_tried_again_later_then_given_up(
    downloads: Downloads, fetching: Fetching
) -> None:
    url = fetching.serve("/stuck.png", Served(PNG + b"\x00" * 2048, stall=2.0))
    message_id = await downloads.add_message([{"type": "image", "url": url}])

    async def run(at: datetime) -> attachments.DownloadReport:
        return await downloads.run(at=at, seconds_each=0.3)

    assert (await run(NOW)).retrying == 1
    [first] = await downloads.attachments_of(message_id)
    assert first["attempts"] == 1
    assert first["last_error"] == "no complete answer within 0.3 s"
    assert "download_error" not in first
    # Not before its time.
    assert not await downloads.pending(NOW + timedelta(seconds=30))
    assert await downloads.pending(NOW + timedelta(minutes=1))
    assert (await run(NOW + timedelta(seconds=30))).messages == 0
    assert (await run(NOW + timedelta(minutes=2))).retrying == 1
    assert (await run(NOW + timedelta(minutes=5))).messages == 0
    assert (await run(NOW + timedelta(minutes=15))).given_up == 1
    [last] = await downloads.attachments_of(message_id)
    assert last["attempts"] == 3
    assert last["download_error"] == "gave up after 3 attempts: no complete answer within 0.3 s"
    assert "retry_at" not in last
    assert (await run(NOW + timedelta(days=1))).messages == 0
    assert fetching.cdn.hits == ["/stuck.png"] * 3
    assert kept_files(fetching.settings) == []


async def test_a_network_module_that_fails_does_not_hold_up_the_queue(
    downloads: Downloads,
) -> None:
    message_id = await downloads.add_message([{"type": "video", "media_id": "m-1"}])

    async def broken(
        channel_account: ChannelAccount, attachment: Mapping[str, Any]
    ) -> tuple[str, dict[str, str]] | None:
        raise KeyError("data")

    assert (await downloads.run(broken)).retrying == 1
    [attachment] = await downloads.attachments_of(message_id)
    assert attachment["last_error"] == "failed: KeyError"


async def test_two_workers_at_once_download_each_file_once(
    downloads: Downloads, fetching: Fetching
) -> None:
    paths = [f"/file-{number}.png" for number in range(8)]
    for number, path in enumerate(paths):
        url = fetching.serve(path, Served(PNG + bytes([number]), delay=0.05))
        await downloads.add_message([{"type": "image", "url": url}])
    reports = await asyncio.gather(downloads.run(), downloads.run())
    assert sorted(fetching.cdn.hits) == sorted(paths)
    assert sum(report.stored for report in reports) == len(paths)
    assert all(report.messages > 0 for report in reports)
    async with downloads.db.sessions() as session:
        rows = (await session.scalars(select(Message.attachments))).all()
    assert all("stored" in row[0] for row in rows)


# Showing them to agents


@pytest.fixture
def shown(downloads: Downloads, settings: Settings) -> Downloads:
    """Downloads into the data folder the application reads."""
    return replace(downloads, fetching=replace(downloads.fetching, settings=allowing(settings)))


async def downloaded(shown: Downloads, sent: list[dict[str, Any]]) -> int:
    """A customer message with these attachments, downloaded for agents to see."""
    message_id = await shown.add_message(sent)
    await shown.run()
    return message_id


async def test_an_agent_sees_a_photo_in_the_page_never_run_as_a_page(
    client: httpx.AsyncClient, tenant: Tenant, fetching: Fetching, shown: Downloads
) -> None:
    photo = fetching.serve("/photo.png", Served(PNG))
    message_id = await downloaded(shown, [{"type": "image", "url": photo}])
    await make_agent(shown.db, tenant)
    assert (await client.get(f"/attachments/{message_id}/0")).status_code == 303
    await sign_in(client)

    answer = await client.get(f"/attachments/{message_id}/0")

    assert answer.status_code == 200
    assert answer.content == PNG
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["content-disposition"] == "inline; filename*=UTF-8''attachment.png"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-security-policy"] == "sandbox"
    assert answer.headers["cache-control"] == "private"


async def test_a_document_is_saved_under_a_harmless_name(
    client: httpx.AsyncClient, tenant: Tenant, fetching: Fetching, shown: Downloads
) -> None:
    doc = fetching.serve("/doc", Served(b"order 1234\n", "text/plain"))
    facture = fetching.serve("/facture", Served(PDF, "application/pdf"))
    hostile = '..\\..\\évil"; filename=x.html\r\nSet-Cookie: a=b\u202efdp.exe'
    message_id = await downloaded(
        shown,
        [
            {"type": "document", "url": doc, "filename": hostile},
            {"type": "document", "url": facture, "filename": "Facture mars.pdf"},
        ],
    )
    await make_agent(shown.db, tenant)
    await sign_in(client)

    text = await client.get(f"/attachments/{message_id}/0")
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain")
    disposition = text.headers["content-disposition"]
    kind, _, encoded = disposition.partition("; filename*=UTF-8''")
    assert kind == "attachment"
    assert all(ch not in encoded for ch in ' ";\\/\r\n')
    # No folders, no line breaks, no right-to-left override; saved as the text it is.
    assert unquote(encoded) == 'évil"; filename=x.htmlSet-Cookie: a=bfdp.exe.txt'
    pdf = await client.get(f"/attachments/{message_id}/1")
    assert pdf.headers["content-disposition"] == "attachment; filename*=UTF-8''Facture%20mars.pdf"
    assert pdf.content == PDF


async def test_the_file_is_not_found_for_whoever_may_not_open_the_conversation(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, fetching: Fetching, shown: Downloads
) -> None:
    photo = fetching.serve("/photo.png", Served(PNG))
    gone = fetching.serve("/gone.png", Served(status=404))
    message_id = await downloaded(
        shown, [{"type": "image", "url": photo}, {"type": "image", "url": gone}]
    )
    await make_agent(db, tenant)
    await sign_in(client)
    assert (await client.get(f"/attachments/{message_id}/0")).status_code == 200
    for missing in (f"{message_id}/1", f"{message_id}/2", f"{message_id}/-1", "999999/0"):
        assert (await client.get(f"/attachments/{missing}")).status_code == 404

    # The conversation goes to a team Ana is not in.
    async with db.transaction() as session:
        team, _ = await routing.save_team(session, tenant.account_id, TeamIn(name="VIP"))
        await session.execute(
            update(Conversation)
            .where(Conversation.id == shown.thread.conversation_id)
            .values(team_id=team.id)
        )
    assert (await client.get(f"/attachments/{message_id}/0")).status_code == 404

    # An agent of another account.
    async with db.transaction() as session:
        other = await accounts.create_account(session, "Other brand")
        await accounts.create_user(
            session, other.id, "eve@other.test", "Eve", "supervisor", PASSWORD
        )
    client.cookies.clear()
    await sign_in(client, "eve@other.test")
    answer = await client.get(f"/attachments/{message_id}/0")
    assert answer.status_code == 404
    assert PNG not in answer.content
