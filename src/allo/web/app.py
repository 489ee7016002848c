"""The FastAPI application: API, webhooks and pages, with the background worker if asked."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import swagger_ui
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from allo import __version__, jobs
from allo.accounts.routes import pages as account_pages
from allo.accounts.routes import router as account_routes
from allo.channels.api import ApiInboundMessage
from allo.channels.credentials import CredentialsCipher, load_key
from allo.channels.routes import pages as channel_pages
from allo.channels.routes import router as inbox_routes
from allo.contacts.routes import pages as contact_pages
from allo.contacts.routes import router as contact_routes
from allo.conversations.routes import pages as conversation_pages
from allo.conversations.routes import router as conversation_routes
from allo.db.engine import connect, libpq_url
from allo.intake.routes import router as intake_routes
from allo.intake.routes import webhooks as webhook_routes
from allo.intake.service import Recorder
from allo.replies.routes import pages as reply_pages
from allo.replies.routes import router as reply_routes
from allo.routing.routes import pages as routing_pages
from allo.routing.routes import router as routing_routes
from allo.settings import Settings
from allo.triage.routes import pages as triage_pages
from allo.triage.routes import router as triage_routes
from allo.web import errors
from allo.web.auth import SignInThrottle, TtlCache
from allo.web.realtime import Realtime
from allo.web.routes import router as page_routes
from allo.web.state import AppState

SWAGGER_ASSETS = Path(swagger_ui.__file__).parent / "static"
STATIC = Path(__file__).parent / "static"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if not settings.database_url:
        raise RuntimeError(
            "ALLO_DATABASE_URL is unset: start Allo with `allo serve`, which runs the embedded "
            "PostgreSQL when no server is configured"
        )
    db = connect(settings.database_url, settings.db_pool_size)
    state = AppState(
        settings=settings,
        db=db,
        kicker=jobs.IntakeKicker(),
        recorder=Recorder(libpq_url(settings.database_url)),
        tokens=TtlCache(settings.auth_cache_seconds),
        inboxes=TtlCache(settings.auth_cache_seconds),
        webhooks=TtlCache(settings.auth_cache_seconds),
        cipher=CredentialsCipher(load_key(settings)),
        realtime=Realtime(libpq_url(settings.database_url)),
        sign_ins=SignInThrottle(),
    )
    app.state.allo = state
    await state.recorder.open()
    # What start-up built (the app, its routes and schemas, the ORM mappers) lives as long as
    # the process: frozen, it is no longer walked by every full collection, which were the
    # 50-100 ms pauses at the p99 of webhook answers.
    gc.collect()
    gc.freeze()
    async with jobs.opened(settings.database_url):
        # Jobs run in `allo worker` (a child of `allo serve`): here, only the kicker that
        # defers intake processing when events come in.
        background = [
            asyncio.create_task(state.kicker.run()),
            asyncio.create_task(state.realtime.run()),
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
    await state.recorder.close()
    await db.dispose()


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    pushed = ApiInboundMessage.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(pushed.pop("$defs", {}))
    components["ApiInboundMessage"] = pushed
    app.openapi_schema = schema
    return schema


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="Allo",
        version=__version__,
        description="Social customer care: one inbox for every channel.",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    # Read afresh: HTTP workers are forked after the command set ALLO_DATABASE_URL.
    app.state.settings = settings or Settings()
    errors.install(app)
    for router in (
        page_routes,
        intake_routes,
        webhook_routes,
        inbox_routes,
        conversation_routes,
        contact_routes,
        triage_routes,
        routing_routes,
        reply_routes,
        conversation_pages,
        reply_pages,
        routing_pages,
        triage_pages,
        contact_pages,
        account_routes,
        account_pages,
        channel_pages,
    ):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/api/docs/assets", StaticFiles(directory=SWAGGER_ASSETS), name="swagger-assets")
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
