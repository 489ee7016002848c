"""The home page, health check and API documentation."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select, text

from allo import __version__
from allo.conversations.models import Conversation, Message
from allo.intake import service as intake
from allo.web.state import State

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, state: State) -> HTMLResponse:
    """Counts only: customer content is shown to signed-in agents, never on a public page."""
    async with state.db.sessions() as session:
        events = await intake.count_by_status(session)
        conversations = await session.scalar(select(func.count()).select_from(Conversation))
        messages = await session.scalar(select(func.count()).select_from(Message))
    return templates.TemplateResponse(
        request,
        "home.html",
        {
            "version": __version__,
            "events": events,
            "conversations": conversations or 0,
            "messages": messages or 0,
        },
    )


@router.get("/healthz")
async def health(state: State) -> dict[str, str]:
    async with state.db.sessions() as session:
        await session.execute(text("SELECT 1"))
    return {"status": "ok"}


@router.get("/api/docs", response_class=HTMLResponse)
async def api_docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/api/openapi.json",
        title="Allo API",
        swagger_js_url="/api/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/api/docs/assets/swagger-ui.css",
        swagger_favicon_url="/api/docs/assets/favicon-32x32.png",
    )
