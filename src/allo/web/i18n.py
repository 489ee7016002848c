"""French and English for every page: gettext catalogues (`locale/`, kept with Babel), the
language of each request, and the one Jinja2 environment that renders in it."""

from __future__ import annotations

import gettext
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from allo.channels.text import split_quote

LOCALES = Path(__file__).parent / "locale"
LANGUAGES = ("en", "fr")
DEFAULT_LANGUAGE = "en"

_language: ContextVar[str] = ContextVar("language", default=DEFAULT_LANGUAGE)


@lru_cache(maxsize=len(LANGUAGES))
def translations(language: str) -> gettext.NullTranslations:
    """The compiled catalogue; English is the source language and needs none."""
    return gettext.translation("messages", LOCALES, [language], fallback=True)


def gettext_in(language: str, message: str) -> str:
    return translations(language).gettext(message)


def _gettext(message: str, **variables: Any) -> str:
    translated = translations(_language.get()).gettext(message)
    return translated % variables if variables else translated


def _ngettext(singular: str, plural: str, count: int, **variables: Any) -> str:
    translated = translations(_language.get()).ngettext(singular, plural, count)
    return translated % {"num": count, **variables}


def accepted_language(request: Request) -> str:
    """The first of our languages in the browser's Accept-Language, else English."""
    header = request.headers.get("accept-language", "")
    for part in header.split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGUAGES:
            return tag
    return DEFAULT_LANGUAGE


_environment = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,  # everything a customer wrote is escaped, in every template
    extensions=["jinja2.ext.i18n"],
)
_environment.install_gettext_callables(  # type: ignore[attr-defined]
    _gettext, _ngettext, newstyle=True
)
_environment.globals["split_quote"] = split_quote
templates = Jinja2Templates(env=_environment)


def render(
    request: Request,
    template: str,
    language: str,
    context: dict[str, Any],
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render a page in this language (the template is rendered before this returns)."""
    token = _language.set(language if language in LANGUAGES else DEFAULT_LANGUAGE)
    try:
        return templates.TemplateResponse(
            request,
            template,
            {"language": _language.get(), **context},
            status_code=status_code,
            headers=headers,
        )
    finally:
        _language.reset(token)
