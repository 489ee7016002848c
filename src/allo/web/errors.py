"""Every error the API gives has one shape: {"error": {"code", "message", "field"?}}."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from psycopg_pool import PoolTimeout
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolExhausted
from starlette.exceptions import HTTPException as StarletteHTTPException

RETRY_AFTER_SECONDS = "1"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class SignInRequired(Exception):
    """No live session: a page sends the browser to the sign-in page, then back."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class CsrfRejected(Exception):
    """A changing page request without its session's CSRF token."""


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return {"error": error}


def _field(location: Sequence[Any]) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, error: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(
            error_body(error.code, error.message, error.field), error.status, headers=headers
        )

    @app.exception_handler(SignInRequired)
    async def sign_in_first(request: Request, error: SignInRequired) -> Response:
        target = f"/login?next={quote(error.next_path, safe='/')}"
        if request.headers.get("hx-request"):
            # htmx follows this header with a full page load, not a swap of the sign-in page.
            return Response(status_code=401, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    @app.exception_handler(CsrfRejected)
    async def forged(_request: Request, _error: CsrfRejected) -> JSONResponse:
        return JSONResponse(
            error_body("csrf", "this form is out of date or came from another site: reload"),
            403,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        return JSONResponse(error_body("invalid", str(first["msg"]), _field(first["loc"])), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return JSONResponse(error_body(code, str(error.detail)), error.status_code)

    async def unavailable(_request: Request, _error: Exception) -> JSONResponse:
        return JSONResponse(
            error_body("unavailable", "the database is unavailable; retry shortly"),
            503,
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )

    for error_type in (
        OperationalError,
        InterfaceError,
        PoolTimeout,
        PoolExhausted,
        OSError,
        # The webhook path talks to psycopg directly (its pool's timeout is one of these).
        psycopg.OperationalError,
        psycopg.InterfaceError,
    ):
        app.add_exception_handler(error_type, unavailable)

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, error: DBAPIError) -> JSONResponse:
        if error.connection_invalidated:
            return await unavailable(request, error)
        raise error
