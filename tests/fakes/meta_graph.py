"""A fake of Meta's Graph API for a Page, its Messenger and its Instagram account (Facebook Login).

It answers as graph.facebook.com does and refuses what Meta documents refusing:

- the Page access token, as `Authorization: Bearer` or the `access_token` parameter (a wrong
  one: 190), and `appsecret_proof` = HMAC-SHA256(app secret, token) when the app requires it;
- Send API, `POST /{page-id | me}/messages` with a JSON body: `recipient` is `{id}` or
  `{comment_id}`, never both; `message.text` up to 2,000 characters (Instagram: 1,000 UTF-8
  bytes); `messaging_type` RESPONSE or UPDATE, or MESSAGE_TAG with a `tag` (HUMAN_AGENT only
  here); RESPONSE within 24 hours of the customer's last message and HUMAN_AGENT within 7 days,
  else (#10) subcode 2018278; a customer never seen: (#100) subcode 2018001; one who blocked
  the Page: (#551);
- Private Replies (`recipient.comment_id`): one per comment or visitor post, else (#10900)
  "Activity already replied to"; within 7 days of it, else (#10) subcode 2018278 (Meta
  documents the limit, not its error: this code is the fake's assumption);
- comments: `POST /{post | comment}/comments` on Facebook, `POST /{ig-media}/comments` and
  `POST /{ig-comment}/replies` on Instagram, with the form field `message` (up to 8,000
  characters); an object that does not exist or takes no such edge: (#100) subcode 33;
- reads: `/me`, `/{page}/subscribed_apps`, `/{page}/conversations?user_id=` (`platform=
  instagram` for Instagram customers), `/{object}/comments`, `/{ig-comment}/replies`,
  `/{page}/feed` and `/{ig-user}/media` with `since`, `limit` and `after`.

Every request is recorded (`requests`); `fail_next` answers the next calls with a given status,
body and headers instead.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

VERSION = "v21.0"
TOKEN = "page-access-token"
APP_SECRET = "app-secret"
PAGE_ID = "1142469655832956"
PAGE_NAME = "Allo Demo"
IG_ID = "17841400000000000"
IG_USERNAME = "allo_demo"
APP_ID = "555000111222333"

RESPONSE_WINDOW = timedelta(hours=24)
HUMAN_AGENT_WINDOW = timedelta(days=7)
PRIVATE_REPLY_WINDOW = timedelta(days=7)
MESSENGER_TEXT_LIMIT = 2000
INSTAGRAM_TEXT_BYTES = 1000
COMMENT_LIMIT = 8000
METADATA_LIMIT = 1000
MESSAGE_KEYS = frozenset({"text", "metadata", "quick_replies", "attachment"})
MESSAGES_LIMIT = re.compile(r"messages\.limit\((\d+)\)")


def graph_error(
    code: int, message: str, subcode: int | None = None, kind: str = "OAuthException"
) -> dict[str, Any]:
    """Meta's error body."""
    error: dict[str, Any] = {"message": message, "type": kind, "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = "AbCdEfGhIjK"
    return {"error": error}


def graph_time(at: datetime) -> str:
    """Graph's time format: 2023-11-14T22:13:20+0000."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


class Refused(Exception):
    """An answer other than success: Meta's error body with its HTTP status."""

    def __init__(self, body: dict[str, Any], status: int = 400) -> None:
        super().__init__(body["error"]["message"])
        self.body = body
        self.status = status


def refuse(code: int, message: str, subcode: int | None = None, status: int = 400) -> Refused:
    return Refused(graph_error(code, message, subcode), status)


def missing(node: str, method: str = "get") -> Refused:
    return refuse(
        100,
        f"Unsupported {method} request. Object with ID '{node}' does not exist, cannot be loaded "
        "due to missing permissions, or does not support this operation.",
        33,
    )


@dataclass
class Recorded:
    method: str
    path: str
    """Without the version: "1142469655832956/messages"."""
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)


@dataclass
class Post:
    id: str
    platform: str
    author_id: str | None
    author_name: str | None
    text: str
    created: datetime
    private_replied: bool = False
    psid: str | None = None


@dataclass
class Comment:
    id: str
    platform: str
    post_id: str
    parent_id: str | None
    author_id: str
    author_name: str
    text: str
    created: datetime
    private_replied: bool = False
    psid: str | None = None
    """The commenter's page-scoped id, which a private reply reveals (Instagram: the same id)."""


@dataclass
class Customer:
    id: str
    platform: str
    name: str
    last_wrote: datetime | None = None
    blocked: bool = False


@dataclass
class Message:
    id: str
    customer_id: str
    from_id: str
    from_name: str
    text: str
    created: datetime


class MetaGraph:
    """The Graph API's state for one Page and its Instagram account, and its ASGI app."""

    def __init__(self, require_proof: bool = True) -> None:
        self.require_proof = require_proof
        self.app = FastAPI()
        self.app.add_api_route(
            "/{version}/{path:path}", self._handle, methods=["GET", "POST", "DELETE"]
        )
        self.reset()

    def reset(self) -> None:
        self.posts: dict[str, Post] = {}
        self.comments: dict[str, Comment] = {}
        self.customers: dict[str, Customer] = {}
        self.messages: list[Message] = []
        self.requests: list[Recorded] = []
        self.failures: deque[tuple[int, dict[str, Any], dict[str, str]]] = deque()
        self.subscribed_apps: list[dict[str, Any]] = [
            {"id": APP_ID, "name": "Allo", "subscribed_fields": ["feed", "messages"]}
        ]
        self.me: dict[str, Any] = {
            "id": PAGE_ID,
            "name": PAGE_NAME,
            "instagram_business_account": {"id": IG_ID},
        }
        self._ids = itertools.count(1)

    # --- what a test sets up --------------------------------------------------------------

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)

    def add_post(
        self,
        post_id: str,
        platform: str = "facebook",
        author_id: str | None = PAGE_ID,
        author_name: str | None = PAGE_NAME,
        text: str = "",
        created: datetime | None = None,
        psid: str | None = None,
    ) -> Post:
        post = Post(post_id, platform, author_id, author_name, text, created or self.now())
        post.psid = psid
        self.posts[post_id] = post
        return post

    def add_comment(
        self,
        comment_id: str,
        post_id: str,
        author_id: str,
        author_name: str = "Jane Customer",
        text: str = "Where is my refund?",
        created: datetime | None = None,
        parent_id: str | None = None,
        psid: str | None = None,
    ) -> Comment:
        platform = self.posts[post_id].platform
        comment = Comment(
            comment_id,
            platform,
            post_id,
            parent_id,
            author_id,
            author_name,
            text,
            created or self.now(),
            psid=psid,
        )
        self.comments[comment_id] = comment
        return comment

    def customer_wrote(
        self,
        customer_id: str,
        at: datetime | None = None,
        text: str = "Hello?",
        platform: str = "facebook",
        name: str = "Jane Customer",
    ) -> Customer:
        """The customer's last message to the Page: it opens the messaging window."""
        at = at or self.now()
        customer = self.customers.setdefault(customer_id, Customer(customer_id, platform, name))
        customer.last_wrote = at
        self.messages.append(Message(self._mid(), customer_id, customer_id, name, text, at))
        return customer

    def block(self, customer_id: str) -> None:
        self.customers[customer_id].blocked = True

    def fail_next(
        self,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        for _ in range(times):
            self.failures.append((status, body, headers or {}))

    def requests_to(self, suffix: str, method: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.path.endswith(suffix) and (method is None or r.method == method)
        ]

    # --- the API --------------------------------------------------------------------------

    async def _handle(self, request: Request, version: str, path: str) -> Response:
        recorded = await self._record(request, path)
        if self.failures:
            status, body, headers = self.failures.popleft()
            return JSONResponse(body, status, headers)
        try:
            if version != VERSION:
                raise refuse(2500, f"Unknown path components: /{version}/{path}", status=404)
            self._authorise(recorded)
            return JSONResponse(self._route(recorded, request.url))
        except Refused as refused:
            return JSONResponse(refused.body, refused.status)

    async def _record(self, request: Request, path: str) -> Recorded:
        recorded = Recorded(
            method=request.method,
            path=path.strip("/"),
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            recorded.json = await request.json()
        elif content_type.startswith("application/x-www-form-urlencoded"):
            form = await request.form()
            recorded.form = {k: str(v) for k, v in form.items()}
        self.requests.append(recorded)
        return recorded

    def _authorise(self, recorded: Recorded) -> None:
        authorization = recorded.headers.get("authorization", "")
        token = (
            authorization.removeprefix("Bearer ").strip()
            if authorization.startswith("Bearer ")
            else recorded.query.get("access_token") or recorded.form.get("access_token")
        )
        if not token:
            raise refuse(
                2500,
                "An active access token must be used to query information about the current user.",
            )
        if token != TOKEN:
            raise refuse(190, "Invalid OAuth access token - Cannot parse access token", 463)
        proof = recorded.query.get("appsecret_proof")
        expected = hmac.new(APP_SECRET.encode(), token.encode(), hashlib.sha256).hexdigest()
        if proof is None and self.require_proof:
            raise refuse(100, "API calls from the server require an appsecret_proof argument")
        if proof is not None and not hmac.compare_digest(proof, expected):
            raise refuse(100, "Invalid appsecret_proof provided in the API argument")

    def _route(self, recorded: Recorded, url: Any) -> dict[str, Any]:
        segments = recorded.path.split("/")
        if segments == ["me"] and recorded.method == "GET":
            return self._me(recorded)
        if len(segments) != 2:
            raise missing(recorded.path, recorded.method.lower())
        node, edge = segments
        routes = {
            ("POST", "messages"): self._send,
            ("POST", "comments"): self._comment,
            ("POST", "replies"): self._comment,
            ("GET", "comments"): self._comments,
            ("GET", "replies"): self._comments,
            ("GET", "conversations"): self._conversations,
            ("GET", "feed"): self._feed,
            ("GET", "media"): self._feed,
            ("GET", "subscribed_apps"): self._subscribed_apps,
        }
        route = routes.get((recorded.method, edge))
        if route is None:
            raise missing(node, recorded.method.lower())
        return route(node, edge, recorded)

    def _me(self, recorded: Recorded) -> dict[str, Any]:
        fields = recorded.query.get("fields", "id,name").split(",")
        return {k: v for k, v in self.me.items() if k in fields}

    def _subscribed_apps(self, node: str, edge: str, recorded: Recorded) -> dict[str, Any]:
        if node != PAGE_ID:
            raise missing(node)
        return {"data": self.subscribed_apps}

    # Send API

    def _send(self, node: str, edge: str, recorded: Recorded) -> dict[str, Any]:
        if node not in (PAGE_ID, "me"):
            raise missing(node, "post")
        body = recorded.json
        if not isinstance(body, dict):
            raise refuse(100, "(#100) param recipient must be non-empty.")
        recipient = body.get("recipient")
        if not isinstance(recipient, dict) or len(recipient.keys() & {"id", "comment_id"}) != 1:
            raise refuse(100, "(#100) param recipient must name exactly one of id, comment_id")
        text = self._message_text(body.get("message"))
        if "comment_id" in recipient:
            return self._private_reply(str(recipient["comment_id"]), body, text)
        return self._direct(str(recipient["id"]), body, text)

    @staticmethod
    def _message_text(message: Any) -> str:
        if not isinstance(message, dict) or not isinstance(message.get("text"), str):
            raise refuse(
                100, "(#100) Message cannot be empty, must provide valid attachment or text"
            )
        if set(message) - MESSAGE_KEYS:
            raise refuse(
                100, f"(#100) Unexpected message fields: {sorted(set(message) - MESSAGE_KEYS)}"
            )
        metadata = message.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, str) or len(metadata) > METADATA_LIMIT
        ):
            raise refuse(100, "(#100) Param message[metadata] must be a string of at most 1000")
        text: str = message["text"]
        if not text.strip():
            raise refuse(
                100, "(#100) Message cannot be empty, must provide valid attachment or text"
            )
        return text

    def _direct(self, customer_id: str, body: dict[str, Any], text: str) -> dict[str, Any]:
        messaging_type, tag = body.get("messaging_type"), body.get("tag")
        if messaging_type not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
            raise refuse(100, "(#100) Param messaging_type must be RESPONSE, UPDATE or MESSAGE_TAG")
        if messaging_type == "MESSAGE_TAG" and tag is None:
            raise refuse(100, "(#100) Param tag is required for messaging_type MESSAGE_TAG")
        if tag is not None and messaging_type != "MESSAGE_TAG":
            raise refuse(100, "(#100) Param tag can only be used with messaging_type MESSAGE_TAG")
        if tag is not None and tag != "HUMAN_AGENT":
            raise refuse(100, f"(#100) Param tag must be one of {{HUMAN_AGENT}}, got {tag}")
        customer = self.customers.get(customer_id)
        if customer is None:
            raise refuse(100, "(#100) No matching user found", 2018001)
        if customer.blocked:
            raise refuse(551, "This person isn't available right now.", 1545041)
        self._check_length(customer.platform, text)
        window = HUMAN_AGENT_WINDOW if tag else RESPONSE_WINDOW
        if customer.last_wrote is None or self.now() - customer.last_wrote > window:
            raise refuse(10, "(#10) This message is sent outside of allowed window.", 2018278)
        return self._deliver(customer, text)

    def _private_reply(self, object_id: str, body: dict[str, Any], text: str) -> dict[str, Any]:
        if body.get("messaging_type", "RESPONSE") != "RESPONSE" or "tag" in body:
            raise refuse(100, "(#100) A private reply is a RESPONSE without tag")
        replied: Comment | Post | None = self.comments.get(object_id) or self.posts.get(object_id)
        if replied is None:
            raise missing(object_id, "post")
        if replied.private_replied:
            raise refuse(10900, "Activity already replied to")
        if self.now() - replied.created > PRIVATE_REPLY_WINDOW:
            raise refuse(10, "(#10) This message is sent outside of allowed window.", 2018278)
        self._check_length(replied.platform, text)
        replied.private_replied = True
        author_id = replied.psid or replied.author_id or object_id
        name = replied.author_name or ""
        # Only the customer's answer opens the messaging window: no last_wrote here.
        customer = self.customers.setdefault(author_id, Customer(author_id, replied.platform, name))
        return self._deliver(customer, text)

    @staticmethod
    def _check_length(platform: str, text: str) -> None:
        if platform == "instagram" and len(text.encode()) > INSTAGRAM_TEXT_BYTES:
            raise refuse(100, "(#100) Length of param message[text] must be less than 1000 bytes")
        if platform != "instagram" and len(text) > MESSENGER_TEXT_LIMIT:
            raise refuse(
                100, "(#100) Length of param message[text] must be less than or equal to 2000"
            )

    def _deliver(self, customer: Customer, text: str) -> dict[str, Any]:
        own_id, own_name = (
            (IG_ID, IG_USERNAME)
            if customer.platform == "instagram"
            else (
                PAGE_ID,
                PAGE_NAME,
            )
        )
        message = Message(self._mid(), customer.id, own_id, own_name, text, self.now())
        self.messages.append(message)
        return {"recipient_id": customer.id, "message_id": message.id}

    def _mid(self) -> str:
        return f"m_{next(self._ids):06d}"

    # Comments

    def _comment(self, node: str, edge: str, recorded: Recorded) -> dict[str, Any]:
        comment, post = self.comments.get(node), self.posts.get(node)
        platform = comment.platform if comment else post.platform if post else None
        takes_edge = (
            (platform == "facebook" and edge == "comments")
            or (platform == "instagram" and edge == "comments" and post is not None)
            or (platform == "instagram" and edge == "replies" and comment is not None)
        )
        if platform is None or not takes_edge:
            raise missing(node, "post")
        text = recorded.form.get("message") or recorded.query.get("message")
        if not text or not text.strip():
            raise refuse(100, "(#100) Missing message or attachment")
        if len(text) > COMMENT_LIMIT:
            raise refuse(100, f"(#100) A comment may have at most {COMMENT_LIMIT} characters")
        post_id = comment.post_id if comment else node
        number = next(self._ids)
        new_id = f"{post_id.split('_')[-1]}_{number}" if platform == "facebook" else f"1790{number}"
        own_id, own_name = (IG_ID, IG_USERNAME) if platform == "instagram" else (PAGE_ID, PAGE_NAME)
        self.comments[new_id] = Comment(
            new_id,
            platform,
            post_id,
            node if comment else None,
            own_id,
            own_name,
            text,
            self.now(),
        )
        return {"id": new_id}

    def _comments(self, node: str, edge: str, recorded: Recorded) -> dict[str, Any]:
        comment, post = self.comments.get(node), self.posts.get(node)
        if comment is None and post is None:
            raise missing(node)
        if edge == "replies" and (comment is None or comment.platform != "instagram"):
            raise missing(node)
        found = self._children(node, stream=False)
        if recorded.query.get("order") == "reverse_chronological":
            found.reverse()
        return {"data": [self._render_comment(c, recorded.query.get("fields", "")) for c in found]}

    def _children(self, node: str, stream: bool) -> list[Comment]:
        """The comments on a post (top level; all with filter(stream)) or on a comment."""
        if node in self.posts:
            found = [
                c
                for c in self.comments.values()
                if c.post_id == node and (stream or c.parent_id is None)
            ]
        else:
            found = [c for c in self.comments.values() if c.parent_id == node]
        return sorted(found, key=lambda c: c.created)

    def _render_comment(self, comment: Comment, fields: str) -> dict[str, Any]:
        if comment.platform == "instagram":
            rendered: dict[str, Any] = {
                "id": comment.id,
                "text": comment.text,
                "timestamp": graph_time(comment.created),
                "username": comment.author_name,
                "from": {"id": comment.author_id, "username": comment.author_name},
            }
            if comment.parent_id and "parent_id" in fields:
                rendered["parent_id"] = comment.parent_id
            if "replies" in fields:
                replies = self._children(comment.id, stream=False)
                rendered["replies"] = {"data": [self._render_comment(r, "") for r in replies]}
            return rendered
        rendered = {
            "id": comment.id,
            "message": comment.text,
            "created_time": graph_time(comment.created),
            "from": {"id": comment.author_id, "name": comment.author_name},
        }
        if comment.parent_id and "parent" in fields:
            rendered["parent"] = {"id": comment.parent_id}
        return rendered

    # Conversations

    def _conversations(self, node: str, edge: str, recorded: Recorded) -> dict[str, Any]:
        if node not in (PAGE_ID, "me"):
            raise missing(node)
        user_id = recorded.query.get("user_id")
        if not user_id:
            raise refuse(100, "(#100) Param user_id is required to find one conversation")
        customer = self.customers.get(user_id)
        platform = recorded.query.get("platform", "messenger")
        wanted = "instagram" if customer and customer.platform == "instagram" else "messenger"
        if customer is None or platform != wanted:
            return {"data": []}
        fields = recorded.query.get("fields", "")
        conversation: dict[str, Any] = {"id": f"t_{user_id}"}
        if "messages" in fields:
            limit = MESSAGES_LIMIT.search(fields)
            newest = sorted(
                (m for m in self.messages if m.customer_id == user_id),
                key=lambda m: m.created,
                reverse=True,
            )[: int(limit.group(1)) if limit else 25]
            name_key = "username" if platform == "instagram" else "name"
            conversation["messages"] = {
                "data": [
                    {
                        "id": m.id,
                        "message": m.text,
                        "created_time": graph_time(m.created),
                        "from": {"id": m.from_id, name_key: m.from_name},
                    }
                    for m in newest
                ]
            }
        return {"data": [conversation]}

    # Feed and media

    def _feed(self, node: str, edge: str, recorded: Recorded) -> dict[str, Any]:
        platform = "facebook" if edge == "feed" else "instagram"
        if node != (PAGE_ID if platform == "facebook" else IG_ID):
            raise missing(node)
        query = recorded.query
        since = datetime.fromtimestamp(int(query.get("since", "0")), UTC)
        limit = int(query.get("limit", "25"))
        start = int(query.get("after", "0"))
        posts = sorted(
            (p for p in self.posts.values() if p.platform == platform and p.created >= since),
            key=lambda p: p.created,
            reverse=True,
        )
        page = posts[start : start + limit]
        fields = query.get("fields", "")
        body: dict[str, Any] = {"data": [self._render_post(p, fields) for p in page]}
        end = start + len(page)
        if page:
            body["paging"] = {"cursors": {"before": str(start), "after": str(end)}}
            if end < len(posts):
                # Meta's own address: a client that follows it leaves the fake (and fails).
                body["paging"]["next"] = (
                    f"https://graph.facebook.com/{VERSION}/{node}/{edge}?after={end}"
                )
        return body

    def _render_post(self, post: Post, fields: str) -> dict[str, Any]:
        stream = "filter(stream)" in fields
        if post.platform == "instagram":
            rendered: dict[str, Any] = {
                "id": post.id,
                "caption": post.text,
                "timestamp": graph_time(post.created),
            }
        else:
            rendered = {
                "id": post.id,
                "message": post.text,
                "created_time": graph_time(post.created),
            }
            if post.author_id:
                rendered["from"] = {"id": post.author_id, "name": post.author_name}
        if "comments" in fields:
            comments = self._children(post.id, stream=stream and post.platform == "facebook")
            rendered["comments"] = {"data": [self._render_comment(c, fields) for c in comments]}
        return rendered
