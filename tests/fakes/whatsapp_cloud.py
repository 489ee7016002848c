"""A fake WhatsApp Business Cloud API (the Graph API endpoints Allo calls), served on loopback.

It checks what Allo sends against the documented shapes (path, bearer token, `messaging_product`,
`to`, the message type and its object, templates, `context`, `biz_opaque_callback_data`), holds
free-form messages to the 24-hour customer-service window, and answers the documented success
and Graph error bodies. Requests are recorded; failures can be queued.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

PHONE_NUMBER_ID = "106540352242922"
WABA_ID = "102290129340398"
ACCESS_TOKEN = "EAAG-fake-system-user-token"
APP_SECRET = "fake-app-secret"
CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)
MAX_TEXT = 4096
MAX_CALLBACK_DATA = 512
MESSAGE_TYPES = {
    "text",
    "template",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "reaction",
}
TOP_LEVEL = {
    "messaging_product",
    "recipient_type",
    "to",
    "type",
    "context",
    "biz_opaque_callback_data",
    *MESSAGE_TYPES,
}
COMPONENT_TYPES = {"header", "body", "button"}
PARAMETER_TYPES = {"text", "currency", "date_time", "image", "video", "document", "payload"}
PHONE = re.compile(r"\+?[0-9]{6,15}")


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any


@dataclass(frozen=True)
class Failure:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        if isinstance(self.body, str | bytes):
            # What a proxy in front of the Graph API answers: not JSON.
            return Response(self.body, self.status, self.headers, media_type="text/html")
        return JSONResponse(self.body, self.status, self.headers)


def graph_error(
    status: int,
    code: int,
    message: str,
    details: str | None = None,
    subcode: int | None = None,
    kind: str = "OAuthException",
) -> dict[str, Any]:
    """The Graph API error body, as the WhatsApp error codes reference shows it."""
    error: dict[str, Any] = {"message": message, "type": kind, "code": code}
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = "AbCdEfGhIjK-fake"
    return {"error": error}


def re_engagement() -> dict[str, Any]:
    return graph_error(
        400,
        131047,
        "(#131047) Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number.",
    )


def rate_limit_hit() -> dict[str, Any]:
    return graph_error(
        400,
        130429,
        "(#130429) Rate limit hit",
        "Cloud API message throughput has been reached.",
    )


class FakeWhatsAppCloud:
    """One business phone number of one WhatsApp Business Account, and its media."""

    def __init__(
        self,
        access_token: str = ACCESS_TOKEN,
        phone_number_id: str = PHONE_NUMBER_ID,
        waba_id: str = WABA_ID,
        app_secret: str = APP_SECRET,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.waba_id = waba_id
        self.app_secret = app_secret
        self.require_proof = False
        """The app's "Require App Secret" setting: every Graph call carries appsecret_proof."""
        self.clock = clock
        self.requests: list[Recorded] = []
        self.accepted: list[dict[str, Any]] = []
        self.failures: deque[Failure] = deque()
        self.last_customer_message: dict[str, datetime] = {}
        self.phone_number: dict[str, Any] = {
            "display_phone_number": "+1 555-078-3881",
            "verified_name": "Allo Care",
            "quality_rating": "GREEN",
            "name_status": "APPROVED",
            "code_verification_status": "VERIFIED",
        }
        self.subscribed_apps: list[dict[str, Any]] = [
            {
                "whatsapp_business_api_data": {
                    "id": "67084746592",
                    "link": "https://allo.example/",
                    "name": "Allo",
                }
            }
        ]
        self.media: dict[str, tuple[bytes, str]] = {}
        self._ids = itertools.count(1)
        self.app = self._build()

    # --- What a test tells the fake -------------------------------------------------------

    def customer_wrote(self, wa_id: str, at: datetime | None = None) -> None:
        """The customer's last message, which opens the 24-hour customer-service window."""
        self.last_customer_message[wa_id] = at or self.clock()

    def fail_next(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        for _ in range(times):
            self.failures.append(Failure(status, body, headers or {}))

    def add_media(self, media_id: str, content: bytes, mime_type: str) -> None:
        self.media[media_id] = (content, mime_type)

    # --- The API --------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{node}/messages")
        async def send_message(node: str, request: Request) -> Response:
            return await self._answer(request, lambda body: self._send(node, request, body))

        @app.get("/whatsapp_business/attachments/")
        async def download(request: Request) -> Response:
            return await self._answer(request, lambda _: self._download(request), graph=False)

        @app.get("/{node}/subscribed_apps")
        async def subscribed_apps(node: str, request: Request) -> Response:
            return await self._answer(request, lambda _: self._subscribed_apps(node))

        @app.get("/{node}")
        async def read_node(node: str, request: Request) -> Response:
            return await self._answer(request, lambda _: self._node(node, request))

        return app

    async def _answer(
        self, request: Request, handle: Callable[[Any], Response], graph: bool = True
    ) -> Response:
        body = await self._record(request)
        if self.failures:
            return self.failures.popleft().response()
        if request.headers.get("authorization") != f"Bearer {self.access_token}":
            return JSONResponse(
                graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token"),
                401,
            )
        proof = request.query_params.get("appsecret_proof")
        if graph and proof is not None and proof != self._proof():
            return invalid_request("Invalid appsecret_proof provided in the API argument")
        if graph and proof is None and self.require_proof:
            return invalid_request("API calls from the server require an appsecret_proof argument")
        return handle(body)

    def _proof(self) -> str:
        return hmac.new(self.app_secret.encode(), self.access_token.encode(), "sha256").hexdigest()

    async def _record(self, request: Request) -> Any:
        raw = await request.body()
        try:
            body = await request.json() if raw else None
        except ValueError:
            body = raw
        self.requests.append(
            Recorded(
                request.method,
                request.url.path,
                dict(request.headers),
                dict(request.query_params),
                body,
            )
        )
        return body

    def _send(self, node: str, request: Request, body: Any) -> Response:
        if node != self.phone_number_id:
            return self._unknown_object(node, "post")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return invalid("the body must be JSON (Content-Type: application/json)")
        problem = message_problem(body)
        if problem:
            return invalid(problem)
        to = body["to"]
        kind = body.get("type", "text")
        if kind != "template" and not self._window_open(to):
            return JSONResponse(re_engagement(), 400)
        wamid = f"wamid.FAKE{next(self._ids):012d}"
        self.accepted.append(body)
        message: dict[str, Any] = {"id": wamid}
        if kind == "template":
            message["message_status"] = "accepted"
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
                "messages": [message],
            }
        )

    def _window_open(self, to: str) -> bool:
        last = self.last_customer_message.get(to.lstrip("+"))
        return last is not None and self.clock() - last <= CUSTOMER_SERVICE_WINDOW

    def _node(self, node: str, request: Request) -> Response:
        if node == self.phone_number_id:
            asked = request.query_params.get("fields", "display_phone_number,verified_name")
            fields = {f: self.phone_number[f] for f in asked.split(",") if f in self.phone_number}
            return JSONResponse({**fields, "id": node})
        if node in self.media:
            content, mime_type = self.media[node]
            return JSONResponse(
                {
                    "messaging_product": "whatsapp",
                    "url": f"{request.base_url}whatsapp_business/attachments/?mid={node}&ext=1",
                    "mime_type": mime_type,
                    "sha256": hashlib.sha256(content).hexdigest(),
                    "file_size": len(content),
                    "id": node,
                }
            )
        return self._unknown_object(node, "get")

    def _subscribed_apps(self, node: str) -> Response:
        if node != self.waba_id:
            return self._unknown_object(node, "get")
        return JSONResponse({"data": self.subscribed_apps})

    def _download(self, request: Request) -> Response:
        media_id = request.query_params.get("mid", "")
        if media_id not in self.media:
            return Response(status_code=404)
        content, mime_type = self.media[media_id]
        return Response(content, media_type=mime_type)

    def _unknown_object(self, node: str, method: str) -> Response:
        message = (
            f"Unsupported {method} request. Object with ID '{node}' does not exist, cannot be "
            "loaded due to missing permissions, or does not support this operation."
        )
        return JSONResponse(
            graph_error(400, 100, message, subcode=33, kind="GraphMethodException"), 400
        )


def invalid_request(message: str) -> Response:
    return JSONResponse(graph_error(400, 100, message, kind="GraphMethodException"), 400)


def invalid(details: str) -> Response:
    return JSONResponse(graph_error(400, 100, "(#100) Invalid parameter", details), 400)


def message_problem(body: Any) -> str | None:
    """What is wrong with a POST /{phone_number_id}/messages body, per the Cloud API reference."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if body.get("messaging_product") != "whatsapp":
        return "messaging_product must be 'whatsapp'"
    unexpected = set(body) - TOP_LEVEL
    if unexpected:
        return f"unexpected parameters: {sorted(unexpected)}"
    if body.get("recipient_type", "individual") not in ("individual", "group"):
        return "recipient_type must be 'individual' or 'group'"
    to = body.get("to")
    if not isinstance(to, str) or not PHONE.fullmatch(to):
        return "to must be the recipient's phone number or wa_id"
    kind = body.get("type", "text")
    if kind not in MESSAGE_TYPES or not isinstance(body.get(kind), dict):
        return f"type {kind!r} needs a {kind!r} object"
    others = (set(body) & MESSAGE_TYPES) - {kind}
    if others:
        return f"a {kind} message cannot also hold {sorted(others)}"
    callback = body.get("biz_opaque_callback_data")
    if callback is not None and (
        not isinstance(callback, str) or len(callback) > MAX_CALLBACK_DATA
    ):
        return (
            f"biz_opaque_callback_data must be a string of at most {MAX_CALLBACK_DATA} characters"
        )
    return (
        context_problem(body.get("context"))
        or (text_problem(body["text"]) if kind == "text" else None)
        or (template_problem(body["template"]) if kind == "template" else None)
    )


def context_problem(context: Any) -> str | None:
    if context is None:
        return None
    if not isinstance(context, dict) or set(context) != {"message_id"}:
        return "context must be {'message_id': <wamid>}"
    if not isinstance(context["message_id"], str) or not context["message_id"]:
        return "context.message_id must be a message id"
    return None


def text_problem(text: dict[str, Any]) -> str | None:
    if set(text) - {"body", "preview_url"}:
        return f"unexpected text parameters: {sorted(set(text) - {'body', 'preview_url'})}"
    body = text.get("body")
    if not isinstance(body, str) or not body.strip():
        return "text.body is required"
    if len(body) > MAX_TEXT:
        return f"text.body holds at most {MAX_TEXT} characters"
    if "preview_url" in text and not isinstance(text["preview_url"], bool):
        return "text.preview_url must be a boolean"
    return None


def template_problem(template: dict[str, Any]) -> str | None:
    if not isinstance(template.get("name"), str) or not template["name"]:
        return "template.name is required"
    language = template.get("language")
    if not isinstance(language, dict) or not isinstance(language.get("code"), str):
        return "template.language.code is required"
    if language.get("policy", "deterministic") != "deterministic":
        return "template.language.policy must be 'deterministic'"
    components = template.get("components", [])
    if not isinstance(components, list):
        return "template.components must be a list"
    for component in components:
        if not isinstance(component, dict) or component.get("type") not in COMPONENT_TYPES:
            return f"template component type must be one of {sorted(COMPONENT_TYPES)}"
        parameters = component.get("parameters", [])
        if not isinstance(parameters, list) or not all(parameter_valid(p) for p in parameters):
            return "template parameters must be typed objects, text ones with a text"
    return None


def parameter_valid(parameter: Any) -> bool:
    if not isinstance(parameter, dict) or parameter.get("type") not in PARAMETER_TYPES:
        return False
    kind = parameter["type"]
    if kind == "text":
        return isinstance(parameter.get("text"), str) and bool(parameter["text"])
    return kind in parameter
