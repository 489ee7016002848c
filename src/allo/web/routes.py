"""The home page, signing in and out, live updates, health check and API documentation."""

from __future__ import annotations

import logging
import smtplib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import func, select, text

from allo import __version__
from allo.accounts import service as accounts
from allo.accounts.mail import MailError, send_mail
from allo.conversations.models import Conversation, Message
from allo.intake import service as intake
from allo.web.auth import SESSION_COOKIE, Agent
from allo.web.i18n import LANGUAGES, accepted_language, gettext_in, render
from allo.web.realtime import event_stream
from allo.web.state import AppState, State

logger = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
KEEPALIVE_SECONDS = 15.0


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, state: State) -> HTMLResponse:
    """Counts only: customer content is shown to signed-in agents, never on a public page."""
    async with state.db.sessions() as session:
        events = await intake.count_by_status(session)
        conversations = await session.scalar(select(func.count()).select_from(Conversation))
        messages = await session.scalar(select(func.count()).select_from(Message))
    return render(
        request,
        "home.html",
        accepted_language(request),
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


def _safe_next(target: str | None) -> str:
    """Only a path of this site: never an open redirect to another one."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/inbox"
    return target


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    context = {
        "next": _safe_next(next),
        "error": None,
        "reset_done": request.query_params.get("reset") == "done",
    }
    return render(request, "login.html", accepted_language(request), context)


@router.post("/login", response_model=None)
async def login(
    request: Request,
    state: State,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/inbox",
) -> Response:
    address = request.client.host if request.client else "unknown"
    if state.sign_ins.blocked(email, address):
        language = accepted_language(request)
        context = {
            "next": _safe_next(next),
            "email": email,
            "error": gettext_in(language, "Too many failed attempts: wait a quarter of an hour."),
        }
        return render(request, "login.html", language, context, status_code=429)
    async with state.db.transaction() as session:
        user = await accounts.sign_in(session, email, password) if email and password else None
        token = (
            await accounts.open_web_session(
                session, user, datetime.now(UTC), state.settings.session_lifetime
            )
            if user is not None
            else None
        )
    if user is None or token is None:
        state.sign_ins.failed(email, address)
        language = accepted_language(request)
        return render(
            request,
            "login.html",
            language,
            {
                "next": _safe_next(next),
                "email": email,
                "error": gettext_in(language, "Wrong email or password."),
            },
            status_code=401,
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    # A browser-session cookie: the server ends a session left unused for
    # ALLO_SESSION_HOURS, so a fixed lifetime here would only sign an agent out mid-shift.
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=state.settings.secure_cookies,
    )
    return response


@router.post("/logout")
async def logout(agent: Agent, state: State) -> RedirectResponse:
    async with state.db.transaction() as session:
        await accounts.end_web_session(session, agent.session_id, datetime.now(UTC))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/events")
async def live_updates(agent: Agent, state: State) -> StreamingResponse:
    """Server-sent events: which conversations of the account changed, as they change."""

    async def still_signed_in() -> bool:
        async with state.db.sessions() as session:
            return await accounts.session_is_live(session, agent.session_id, datetime.now(UTC))

    async def stream() -> AsyncIterator[str]:
        with state.realtime.listening(agent.account_id) as queue:
            async for chunk in event_stream(queue, KEEPALIVE_SECONDS, still_signed_in):
                yield chunk

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/password/forgot", response_class=HTMLResponse)
async def forgot_page(request: Request) -> HTMLResponse:
    return render(request, "forgot.html", accepted_language(request), {"sent": False})


@router.post("/password/forgot", response_class=HTMLResponse)
async def forgot(
    request: Request,
    state: State,
    mailing: BackgroundTasks,
    email: Annotated[str, Form(max_length=320)] = "",
) -> HTMLResponse:
    """Mail a reset link to whoever has this address. The answer is the same either way, and
    as fast: the mail leaves after it. The link's address is Allo's configured one, never the
    request's Host (which a stranger chooses)."""
    async with state.db.transaction() as session:
        links = await accounts.request_password_reset(session, email, datetime.now(UTC))
    settings = state.settings
    base = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    for link in links:
        mailing.add_task(_mail_reset_link, state, base, link)
    return render(request, "forgot.html", accepted_language(request), {"sent": True})


async def _mail_reset_link(state: AppState, base: str, link: accounts.ResetLink) -> None:
    if not state.settings.smtp_url:
        logger.warning("no ALLO_SMTP_URL: the password reset link for a user was not sent")
        return
    url = f"{base}/password/reset?token={link.token}"
    body = gettext_in(
        link.language,
        "Hello %(name)s,\n\nTo choose a new password for Allo, open this link within the "
        "hour:\n\n%(url)s\n\nIf you did not ask for it, ignore this message: your "
        "password stays as it is.",
    ) % {"name": link.name, "url": url}
    try:
        await send_mail(
            state.settings.smtp_url,
            state.settings.mail_from,
            link.email,
            gettext_in(link.language, "Your Allo password"),
            body,
        )
    except (OSError, smtplib.SMTPException, MailError):
        logger.warning("the password reset link could not be mailed", exc_info=True)


@router.get("/password/reset", response_class=HTMLResponse)
async def reset_page(request: Request, state: State, token: str = "") -> HTMLResponse:
    async with state.db.sessions() as session:
        works = bool(token) and await accounts.reset_link_works(session, token, datetime.now(UTC))
    context = {"token": token, "works": works, "error": None}
    return render(request, "reset.html", accepted_language(request), context)


@router.post("/password/reset", response_model=None)
async def reset(
    request: Request,
    state: State,
    token: Annotated[str, Form(max_length=100)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    again: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    language = accepted_language(request)
    error = None
    if password != again:
        error = gettext_in(language, "The two passwords differ.")
    elif len(password) < 8:
        error = gettext_in(language, "At least 8 characters.")
    else:
        async with state.db.transaction() as session:
            user = await accounts.reset_password(session, token, password, datetime.now(UTC))
        if user is not None:
            return RedirectResponse("/login?reset=done", status_code=303)
    context = {"token": token, "works": error is not None, "error": error}
    return render(request, "reset.html", language, context, status_code=422)


@router.get("/settings/profile", response_class=HTMLResponse)
async def profile_page(request: Request, agent: Agent) -> HTMLResponse:
    context = {"agent": agent, "section": "profile", "languages": LANGUAGES, "saved": False}
    return render(request, "profile.html", agent.language, context)


@router.post("/settings/profile", response_class=HTMLResponse)
async def save_profile(
    request: Request,
    agent: Agent,
    state: State,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    language: Annotated[str, Form()],
) -> HTMLResponse:
    """The signed-in user's name and the language of their workspace."""
    chosen = language if language in LANGUAGES else agent.language
    async with state.db.transaction() as session:
        await accounts.set_profile(session, agent.user_id, name.strip() or agent.name, chosen)
    changed = replace(agent, name=name.strip() or agent.name, language=chosen)
    context = {"agent": changed, "section": "profile", "languages": LANGUAGES, "saved": True}
    return render(request, "profile.html", chosen, context)
