"""A fake of the X API v2 endpoints Allo calls, checking each request as X documents it.

Served over real HTTP by `tests.fakes.server.serving(fake.app)`. It keeps what X would keep
(users, posts, direct messages, webhook subscriptions), records every request, and answers with
X's documented shapes:

- POST /2/tweets {"text", "reply": {"in_reply_to_tweet_id"}} -> 201
  {"data": {"id", "text", "edit_history_tweet_ids"}}
- POST /2/dm_conversations/with/:participant_id/messages {"text"} -> 201
  {"data": {"dm_conversation_id", "dm_event_id"}}
- GET /2/users/:id/mentions, GET /2/tweets/search/recent, GET /2/users/:id/tweets -> 200
  {"data": [posts, newest first], "includes": {"users": [...]}, "meta": {"result_count",
  "newest_id", "oldest_id", "next_token"}}; only the fields asked for (tweet.fields,
  user.fields, expansions=author_id), `since_id`, `start_time` and pagination honoured.
- GET /2/dm_conversations/with/:participant_id/dm_events -> 200 {"data": [MessageCreate
  events, newest first], "meta": {"result_count", "next_token"}}
- GET /2/users/me -> 200 {"data": {"id", "name", "username"}}
- GET /2/account_activity/webhooks/:webhook_id/subscriptions/all -> 200
  {"data": {"subscribed"}}; an unknown webhook -> 400 WebhookIdInvalid

Refusals are X's problem JSON (RFC 7807 `title`, `detail`, `type`, `status`, with `errors`
for invalid requests): no or another bearer token -> 401; malformed JSON, unknown body keys or
query parameters, a post over 280 weighted characters, a bad `max_results` -> 400; a reply to a
post that does not exist or was deleted, a duplicate post -> 403; a direct message to a user
who does not take them -> 403, to one who does not exist -> 404. Every answer carries
`x-rate-limit-limit/-remaining/-reset` (set `rate_limit` to change them), and `fail_next` makes
the next calls fail as told.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from twitter_text import parse_tweet

MAX_POST_WEIGHT = 280
MAX_DM_LENGTH = 10_000
INVALID_REQUEST = "https://api.twitter.com/2/problems/invalid-request"
TWEET_FIELDS = {
    "attachments", "author_id", "card_uri", "context_annotations", "conversation_id",
    "created_at", "display_text_range", "edit_controls", "edit_history_tweet_ids", "entities",
    "geo", "id", "in_reply_to_user_id", "lang", "note_tweet", "possibly_sensitive",
    "public_metrics", "referenced_tweets", "reply_settings", "source", "text", "withheld",
}  # fmt: skip
USER_FIELDS = {
    "created_at", "description", "entities", "id", "location", "most_recent_tweet_id", "name",
    "pinned_tweet_id", "profile_image_url", "protected", "public_metrics", "url", "username",
    "verified", "verified_type", "withheld",
}  # fmt: skip
MEDIA_FIELDS = {
    "alt_text", "duration_ms", "height", "media_key", "preview_image_url", "public_metrics",
    "type", "url", "variants", "width",
}  # fmt: skip
DM_EVENT_FIELDS = {
    "attachments", "created_at", "dm_conversation_id", "event_type", "id", "participant_ids",
    "referenced_tweets", "sender_id", "text",
}  # fmt: skip
TWEET_EXPANSIONS = {
    "attachments.media_keys", "attachments.poll_ids", "author_id", "edit_history_tweet_ids",
    "entities.mentions.username", "geo.place_id", "in_reply_to_user_id", "referenced_tweets.id",
    "referenced_tweets.id.author_id",
}  # fmt: skip
TIMELINE_PARAMS = {
    "since_id", "until_id", "max_results", "pagination_token", "start_time", "end_time",
    "expansions", "tweet.fields", "user.fields", "media.fields", "place.fields", "poll.fields",
}  # fmt: skip
POST_KEYS = {
    "text", "reply", "quote_tweet_id", "media", "poll", "reply_settings", "geo", "nullcast",
    "card_uri", "community_id", "for_super_followers_only", "direct_message_deep_link",
    "made_with_ai", "paid_partnership", "share_with_followers",
}  # fmt: skip
MENTION = re.compile(r"@(\w{1,15})")


class Refusal(Exception):
    """An answer other than success, in X's problem JSON."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def problem(status: int, title: str, detail: str, kind: str = "about:blank") -> Refusal:
    return Refusal(status, {"title": title, "detail": detail, "type": kind, "status": status})


def invalid(message: str, parameter: str | None = None, value: Any = None) -> Refusal:
    error: dict[str, Any] = {"message": message}
    if parameter is not None:
        error["parameters"] = {parameter: [value]}
    return Refusal(
        400,
        {
            "errors": [error],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": INVALID_REQUEST,
        },
    )


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None


@dataclass
class Failure:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RateLimit:
    limit: int = 300
    remaining: int = 299
    reset: int = field(default_factory=lambda: int(time.time()) + 900)

    def headers(self) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(self.limit),
            "x-rate-limit-remaining": str(self.remaining),
            "x-rate-limit-reset": str(self.reset),
        }


def x_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class FakeX:
    """The X API as one brand's user token sees it."""

    def __init__(
        self,
        own_id: str = "1400000000000000001",
        own_username: str = "AlloCare",
        token: str = "user-token",
    ) -> None:
        self.own_id = own_id
        self.token = token
        self.users: dict[str, dict[str, Any]] = {}
        self.tweets: dict[str, dict[str, Any]] = {}
        self.deleted: set[str] = set()
        self.dm_events: list[dict[str, Any]] = []
        self.closed_to_dms: set[str] = set()
        self.webhooks: dict[str, set[str]] = {}
        self.requests: list[Recorded] = []
        self.failures: list[Failure] = []
        self.rate_limit = RateLimit()
        self._ids = itertools.count(1925000000000001000)
        self.add_user(own_id, own_username, "Allo Care", followers=98000, verified=True)
        self.app = self._build()

    # What X holds, as tests set it up.

    def add_user(
        self,
        user_id: str,
        username: str,
        name: str = "",
        followers: int = 0,
        verified: bool = False,
    ) -> dict[str, Any]:
        user = {
            "id": user_id,
            "username": username,
            "name": name or username,
            "verified": verified,
            "public_metrics": {"followers_count": followers, "following_count": 0},
        }
        self.users[user_id] = user
        return user

    def add_tweet(
        self,
        author_id: str,
        text: str,
        reply_to: str | None = None,
        created_at: datetime | None = None,
    ) -> dict[str, Any]:
        tweet_id = str(next(self._ids))
        tweet: dict[str, Any] = {
            "id": tweet_id,
            "text": text,
            "author_id": author_id,
            "conversation_id": tweet_id,
            "created_at": x_time(created_at or datetime.now(UTC)),
            "edit_history_tweet_ids": [tweet_id],
        }
        if reply_to is not None:
            parent = self.tweets[reply_to]
            tweet["conversation_id"] = parent["conversation_id"]
            tweet["in_reply_to_user_id"] = parent["author_id"]
            tweet["referenced_tweets"] = [{"type": "replied_to", "id": reply_to}]
        self.tweets[tweet_id] = tweet
        return tweet

    def add_dm(
        self, sender_id: str, recipient_id: str, text: str, created_at: datetime | None = None
    ) -> dict[str, Any]:
        event = {
            "id": str(next(self._ids)),
            "event_type": "MessageCreate",
            "text": text,
            "sender_id": sender_id,
            "dm_conversation_id": "-".join(sorted((sender_id, recipient_id), key=int)),
            "created_at": x_time(created_at or datetime.now(UTC)),
        }
        self.dm_events.append(event)
        return event

    def fail_next(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        self.failures.extend(Failure(status, body, headers or {}) for _ in range(times))

    def requests_to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    # The API.

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.exception_handler(Refusal)
        async def refused(request: Request, refusal: Exception) -> Response:
            assert isinstance(refusal, Refusal)
            if isinstance(refusal, _Failed):
                return self._failed(refusal.failure)
            return self._answer(refusal.body, refusal.status)

        @app.post("/2/tweets")
        async def create_post(request: Request) -> JSONResponse:
            body = await self._admit(request, set())
            return self._answer({"data": self._post(body)}, 201)

        @app.post("/2/dm_conversations/with/{participant_id}/messages")
        async def create_message(participant_id: str, request: Request) -> JSONResponse:
            body = await self._admit(request, set())
            return self._answer({"data": self._message(participant_id, body)}, 201)

        @app.get("/2/users/me")
        async def me(request: Request) -> JSONResponse:
            await self._admit(request, {"expansions", "tweet.fields", "user.fields"})
            user = self.users[self.own_id]
            return self._answer({"data": {k: user[k] for k in ("id", "name", "username")}})

        @app.get("/2/users/{user_id}/mentions")
        async def mentions(user_id: str, request: Request) -> JSONResponse:
            await self._admit(request, TIMELINE_PARAMS)
            found = [t for t in self._visible() if self._mentions(t, user_id)]
            return self._answer(self._timeline(found, request, 5, "pagination_token"))

        @app.get("/2/tweets/search/recent")
        async def search(request: Request) -> JSONResponse:
            await self._admit(request, TIMELINE_PARAMS | {"query", "next_token", "sort_order"})
            terms = self._query(request)
            found = [t for t in self._visible() if all(w in t["text"].lower() for w in terms)]
            token = "next_token" if "next_token" in request.query_params else "pagination_token"
            return self._answer(self._timeline(found, request, 10, token))

        @app.get("/2/users/{user_id}/tweets")
        async def posts(user_id: str, request: Request) -> JSONResponse:
            await self._admit(request, TIMELINE_PARAMS | {"exclude"})
            found = [t for t in self._visible() if t["author_id"] == user_id]
            return self._answer(self._timeline(found, request, 5, "pagination_token"))

        @app.get("/2/dm_conversations/with/{participant_id}/dm_events")
        async def conversation(participant_id: str, request: Request) -> JSONResponse:
            allowed = {"max_results", "pagination_token", "event_types", "dm_event.fields"}
            await self._admit(request, allowed | {"expansions", "user.fields", "media.fields"})
            return self._answer(self._conversation(participant_id, request))

        @app.get("/2/account_activity/webhooks/{webhook_id}/subscriptions/all")
        async def subscription(webhook_id: str, request: Request) -> JSONResponse:
            await self._admit(request, set())
            if webhook_id not in self.webhooks:
                raise invalid("WebhookIdInvalid", "webhook_id", webhook_id)
            subscribed = self.own_id in self.webhooks[webhook_id]
            return self._answer({"data": {"subscribed": subscribed}})

        return app

    async def _admit(self, request: Request, allowed_params: set[str]) -> Any:
        """Records the request, then refuses it as X would: queued failure, token, shape."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
            parsed = True
        except (UnicodeDecodeError, json.JSONDecodeError):
            body, parsed = raw.decode("utf-8", "replace"), False
        self.requests.append(
            Recorded(
                request.method,
                request.url.path,
                dict(request.query_params),
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )
        if self.failures:
            failure = self.failures.pop(0)
            raise _Failed(failure)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            raise problem(401, "Unauthorized", "Unauthorized")
        for name in request.query_params:
            if name not in allowed_params:
                raise invalid(f"The query parameter [{name}] is not one of the allowed ones")
        if request.method == "POST":
            if not parsed or not isinstance(body, dict):
                raise invalid("Request body must be a JSON object")
            return body
        return None

    def _answer(self, body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers=self.rate_limit.headers())

    def _failed(self, failure: Failure) -> Response:
        headers = self.rate_limit.headers() | failure.headers
        if failure.body is None or isinstance(failure.body, str):
            content = failure.body or ""
            return Response(content, status_code=failure.status, headers=headers)
        return JSONResponse(failure.body, status_code=failure.status, headers=headers)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        for key in body:
            if key not in POST_KEYS:
                raise invalid(f"$.{key}: is not defined in the schema", key, body[key])
        text = body.get("text")
        if not isinstance(text, str) or not text:
            raise invalid("$.text: a post needs text", "text", text)
        if parse_tweet(text).weightedLength > MAX_POST_WEIGHT:
            raise invalid("Your Tweet text is too long.", "text", text)
        reply_to = self._reply_target(body.get("reply"))
        if any(t["text"] == text and t["author_id"] == self.own_id for t in self._visible()):
            raise problem(
                403, "Forbidden", "You are not allowed to create a Tweet with duplicate content."
            )
        tweet = self.add_tweet(self.own_id, text, reply_to)
        return {k: tweet[k] for k in ("id", "text", "edit_history_tweet_ids")}

    def _reply_target(self, reply: Any) -> str | None:
        if reply is None:
            return None
        if not isinstance(reply, dict) or set(reply) - {
            "in_reply_to_tweet_id",
            "exclude_reply_user_ids",
        }:
            raise invalid("$.reply: expected {in_reply_to_tweet_id}", "reply", reply)
        target = reply.get("in_reply_to_tweet_id")
        if not isinstance(target, str) or not target.isdigit():
            raise invalid("$.reply.in_reply_to_tweet_id: expected a post id", "reply", target)
        if target not in self.tweets or target in self.deleted:
            raise problem(
                403,
                "Forbidden",
                "You attempted to reply to a Tweet that is deleted or not visible to you.",
            )
        return target

    def _message(self, participant_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if set(body) - {"text", "attachments"}:
            raise invalid("$: only text and attachments are allowed", "body", sorted(body))
        text = body.get("text")
        if not isinstance(text, str) or not text or len(text) > MAX_DM_LENGTH:
            raise invalid("$.text: 1 to 10000 characters", "text", text)
        if participant_id not in self.users:
            raise Refusal(
                404,
                {
                    "title": "Not Found Error",
                    "detail": f"Could not find user with id: [{participant_id}].",
                    "type": "https://api.twitter.com/2/problems/resource-not-found",
                    "resource_type": "user",
                    "resource_id": participant_id,
                },
            )
        if participant_id in self.closed_to_dms:
            raise problem(403, "Forbidden", "You cannot send messages to this user.")
        event = self.add_dm(self.own_id, participant_id, text)
        return {"dm_conversation_id": event["dm_conversation_id"], "dm_event_id": event["id"]}

    def _visible(self) -> list[dict[str, Any]]:
        alive = [t for t in self.tweets.values() if t["id"] not in self.deleted]
        return sorted(alive, key=lambda t: int(t["id"]), reverse=True)

    def _mentions(self, tweet: dict[str, Any], user_id: str) -> bool:
        if tweet["author_id"] == user_id:
            return False
        username = self.users[user_id]["username"].lower()
        named = {m.lower() for m in MENTION.findall(tweet["text"])}
        return username in named or tweet.get("in_reply_to_user_id") == user_id

    def _query(self, request: Request) -> list[str]:
        query = request.query_params.get("query", "")
        if not query or len(query) > 512:
            raise invalid("The `query` parameter needs 1 to 512 characters", "query", query)
        return query.lower().split()

    def _timeline(
        self, found: list[dict[str, Any]], request: Request, least: int, token_param: str
    ) -> dict[str, Any]:
        params = request.query_params
        since = params.get("since_id")
        if since is not None:
            if not since.isdigit():
                raise invalid(
                    "The `since_id` query parameter value is not valid", "since_id", since
                )
            found = [t for t in found if int(t["id"]) > int(since)]
        start = params.get("start_time")
        if start is not None:
            found = [t for t in found if t["created_at"] >= _start_time(start)]
        page, meta = self._page(found, params.get("max_results"), params.get(token_param), least)
        fields = _fields(params.get("tweet.fields"), TWEET_FIELDS, "tweet.fields")
        expansions = _fields(params.get("expansions"), TWEET_EXPANSIONS, "expansions")
        _fields(params.get("media.fields"), MEDIA_FIELDS, "media.fields")
        answer: dict[str, Any] = {"meta": meta}
        if page:
            meta["newest_id"], meta["oldest_id"] = page[0]["id"], page[-1]["id"]
            keep = fields | {"id", "text", "edit_history_tweet_ids"}
            answer["data"] = [{k: v for k, v in t.items() if k in keep} for t in page]
        if page and "author_id" in expansions:
            user_fields = _fields(params.get("user.fields"), USER_FIELDS, "user.fields")
            keep = user_fields | {"id", "name", "username"}
            authors = dict.fromkeys(t["author_id"] for t in page)
            answer["includes"] = {
                "users": [{k: v for k, v in self.users[a].items() if k in keep} for a in authors]
            }
        return answer

    def _conversation(self, participant_id: str, request: Request) -> dict[str, Any]:
        params = request.query_params
        pair = {self.own_id, participant_id}
        found = [
            e
            for e in reversed(self.dm_events)
            if {e["sender_id"], *e["dm_conversation_id"].split("-")} == pair
        ]
        kinds = params.get("event_types", "MessageCreate")
        if kinds not in ("MessageCreate", "ParticipantsJoin", "ParticipantsLeave"):
            raise invalid(
                "The `event_types` query parameter value is not valid", "event_types", kinds
            )
        fields = _fields(params.get("dm_event.fields"), DM_EVENT_FIELDS, "dm_event.fields")
        page, meta = self._page(found, params.get("max_results"), params.get("pagination_token"), 1)
        keep = fields | {"id", "event_type", "text"}
        answer: dict[str, Any] = {"meta": meta}
        if page:
            answer["data"] = [{k: v for k, v in e.items() if k in keep} for e in page]
        return answer

    def _page(
        self, found: list[dict[str, Any]], size: str | None, token: str | None, least: int
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        count = int(size) if size and size.isdigit() else 10
        if not least <= count <= 100:
            raise invalid(
                f"The `max_results` query parameter value [{size}] is not between {least} and 100",
                "max_results",
                size,
            )
        offset = 0
        if token is not None:
            if not token.startswith("page-") or not token[5:].isdigit():
                raise invalid("The pagination token is not valid", "pagination_token", token)
            offset = int(token[5:])
        page = found[offset : offset + count]
        meta: dict[str, Any] = {"result_count": len(page)}
        if offset + count < len(found):
            meta["next_token"] = f"page-{offset + count}"
        return page, meta


class _Failed(Refusal):
    """A failure queued by the test: its status, body and headers as given."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.status, {})
        self.failure = failure


def _fields(value: str | None, known: set[str], parameter: str) -> set[str]:
    asked = set(value.split(",")) if value else set()
    unknown = asked - known
    if unknown:
        raise invalid(
            f"The `{parameter}` query parameter value [{min(unknown)}] is not one of the known",
            parameter,
            value,
        )
    return asked


def _start_time(value: str) -> str:
    """The timeline's created_at from which posts are listed (RFC 3339, second precision)."""
    try:
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise invalid(
            "The `start_time` query parameter value is not valid", "start_time", value
        ) from None
    return x_time(moment)
