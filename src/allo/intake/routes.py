"""Where events come in: the generic API channel, and the list of failed events."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError

from allo.channels import api as api_channel
from allo.channels import registry
from allo.channels import service as channels
from allo.channels.registry import network_for
from allo.channels.signatures import SignatureInvalid, SignatureMissing
from allo.intake import service as intake
from allo.intake.models import EVENT_STATUSES
from allo.intake.schemas import Accepted, InboundEventOut, RetryRequest, RetryResult
from allo.web.auth import Owner, request_owner
from allo.web.errors import ApiError
from allo.web.state import AppState, State

router = APIRouter(prefix="/api/v1", tags=["intake"])

KEPT_HEADERS = ("content-type", "user-agent", "idempotency-key", "x-request-id")
# What a network's webhook keeps besides the body: its signature proves the bytes later.
WEBHOOK_HEADERS = (
    "content-type",
    "user-agent",
    "x-hub-signature-256",
    "x-twitter-webhooks-signature",
)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the body is over the {limit}-byte limit")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(413, "too_large", f"the body is over the {limit}-byte limit")
    return bytes(body)


def require_json(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the message as application/json")


async def inbox_kind(state: AppState, account_id: int, inbox_id: int) -> str:
    kind = state.inboxes.get((account_id, inbox_id))
    if kind is None:
        async with state.db.sessions() as session:
            inbox = await channels.get_channel_account(session, account_id, inbox_id)
        if inbox is None:
            raise ApiError(404, "not_found", f"no inbox {inbox_id} in this account")
        kind = inbox.kind
        state.inboxes.put((account_id, inbox_id), kind)
    return kind


def validation_error(error: ValidationError | ValueError) -> ApiError:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            return ApiError(400, "malformed_json", f"the body is not valid JSON: {first['msg']}")
        field = ".".join(str(p) for p in first["loc"]) or "body"
        return ApiError(422, "invalid", str(first["msg"]), field)
    return ApiError(422, "invalid", str(error))


@router.post(
    "/inboxes/{inbox_id}/messages",
    status_code=202,
    response_model=Accepted,
    summary="Push a customer message into an inbox",
    responses={
        400: {"description": "Malformed JSON"},
        401: {"description": "Missing or invalid token"},
        404: {"description": "No such inbox in this account"},
        413: {"description": "Body over the size limit"},
        415: {"description": "Not application/json"},
        422: {"description": "A field is invalid"},
        503: {"description": "Database unavailable: retry (the same external_id is safe)"},
    },
    openapi_extra={
        "security": [{"HTTPBearer": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ApiInboundMessage"}}
            },
        },
    },
)
async def push_message(inbox_id: int, request: Request) -> Response:
    """The message is stored raw and committed before this answers; it is processed right after.

    Sending the same `external_id` (or `Idempotency-Key` header) again stores nothing new and
    answers with `duplicate: true`.
    """
    # The webhook hot path resolves its token and state by hand and answers pre-serialised
    # JSON: FastAPI's dependency solving and response validation were a fifth of its CPU.
    state: AppState = request.app.state.allo
    owner = await request_owner(request)
    require_json(request)
    raw = await read_body(request, state.settings.max_body_bytes)
    await inbox_kind(state, owner.account_id, inbox_id)
    try:
        pushed = api_channel.validate(raw)
    except (ValidationError, ValueError) as error:
        raise validation_error(error) from None
    external_id = (
        pushed.external_id or request.headers.get("idempotency-key") or f"allo:{uuid.uuid4()}"
    )
    headers = {name: request.headers[name] for name in KEPT_HEADERS if name in request.headers}
    # Committed (grouped with concurrent requests' events) before the 202 below.
    recorded = await state.recorder.record(
        intake.NewEvent(
            account_id=owner.account_id,
            channel_account_id=inbox_id,
            parser=api_channel.PARSER,
            external_id=external_id,
            raw=raw,
            content_type=request.headers.get("content-type"),
            headers=headers,
        )
    )
    if not recorded.duplicate:
        state.kicker.poke()
    return Response(
        json.dumps(Accepted(event_id=recorded.event_id, duplicate=recorded.duplicate).model_dump()),
        status_code=202,
        media_type="application/json",
    )


@router.get("/intake/events", response_model=list[InboundEventOut], summary="Inbound events")
async def list_events(
    owner: Owner,
    state: State,
    status: Annotated[str | None, Query(description=f"One of {', '.join(EVENT_STATUSES)}")] = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[InboundEventOut]:
    """Newest first; `status=failed` lists what could not be processed, with the error."""
    if status is not None and status not in EVENT_STATUSES:
        raise ApiError(422, "invalid", f"one of {', '.join(EVENT_STATUSES)}", "status")
    async with state.db.sessions() as session:
        rows = await intake.list_events(session, owner.account_id, status, limit, before_id)
    return [InboundEventOut.model_validate(r) for r in rows]


@router.post("/intake/events/retry", response_model=RetryResult, summary="Retry failed events")
async def retry_events(owner: Owner, state: State, body: RetryRequest) -> RetryResult:
    async with state.db.transaction() as session:
        requeued = await intake.retry(session, owner.account_id, body.event_ids)
    if requeued:
        state.kicker.poke()
    return RetryResult(requeued=requeued)


webhooks = APIRouter(prefix="/webhooks", tags=["webhooks"])


async def _listening(state: AppState, channel_account_id: int) -> channels.Listening:
    found = state.webhooks.get(channel_account_id)
    if found is None:
        async with state.db.sessions() as session:
            found = await channels.listening(session, channel_account_id, state.cipher)
        if found is None:
            raise ApiError(404, "not_found", f"no social channel {channel_account_id}")
        state.webhooks.put(channel_account_id, found)
    return found


def _network(listening: channels.Listening) -> registry.Network:
    network = network_for(listening.kind)
    assert network is not None  # `channels.listening` returns only kinds with a network
    return network


@webhooks.get(
    "/{channel_account_id}",
    summary="The network's subscription check (Meta's hub.challenge, X's CRC)",
    responses={403: {"description": "Wrong verify token or challenge"}},
)
async def webhook_handshake(channel_account_id: int, request: Request) -> Response:
    state: AppState = request.app.state.allo
    listening = await _listening(state, channel_account_id)
    try:
        body, media_type = _network(listening).handshake(
            request.query_params, listening.credentials
        )
    except (SignatureMissing, SignatureInvalid) as refused:
        raise ApiError(403, "forbidden", str(refused)) from None
    return Response(body, media_type=media_type)


@webhooks.post(
    "/{channel_account_id}",
    summary="Events from a social or messaging network (signed)",
    responses={
        401: {"description": "No signature"},
        403: {"description": "A signature that does not match the body"},
        404: {"description": "No such channel"},
        413: {"description": "Body over the size limit"},
        503: {"description": "Database unavailable: the network delivers again"},
    },
)
async def receive_webhook(channel_account_id: int, request: Request) -> Response:
    """The signature is checked on the exact bytes; the event is then stored raw and committed
    before the 200. The same bytes delivered again store nothing new."""
    state: AppState = request.app.state.allo
    listening = await _listening(state, channel_account_id)
    raw = await read_body(request, state.settings.max_body_bytes)
    network = _network(listening)
    try:
        network.verify(request.headers, raw, listening.credentials)
    except SignatureMissing as missing:
        raise ApiError(401, "unauthorized", str(missing)) from None
    except SignatureInvalid as invalid:
        raise ApiError(403, "forbidden", str(invalid)) from None
    headers = {name: request.headers[name] for name in WEBHOOK_HEADERS if name in request.headers}
    recorded = await state.recorder.record(
        intake.NewEvent(
            account_id=listening.account_id,
            channel_account_id=listening.channel_account_id,
            parser=network.PARSER,
            external_id="sha256:" + hashlib.sha256(raw).hexdigest(),
            raw=raw,
            content_type=request.headers.get("content-type"),
            headers=headers,
        )
    )
    if not recorded.duplicate:
        state.kicker.poke()
    return Response(
        json.dumps({"event_id": recorded.event_id, "duplicate": recorded.duplicate}),
        media_type="application/json",
    )
