"""An in-process fake of Discord (REST + gateway + CDN) for end-to-end tests of the bot.

``FakeDiscord`` runs an aiohttp server on 127.0.0.1 that the *real* discord.py client logs into
and runs against:

* REST under ``/api/v10`` (a small route table, see ``FakeDiscord._build_routes``),
* a JSON websocket gateway at ``/gateway`` (HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats,
  RESUME, member chunk requests),
* ``/cdn/...`` serving the bytes of attachments behind signed URLs (``ex``/``is``/``hm``).

Tests drive it like a Discord user would (``invoke_slash``, ``invoke_message_command``,
``click_button``, ``submit_modal``, ``post_message``) and inspect what the bot did (``calls``,
``messages``, ``FakeInteraction.original`` / ``followups`` / ``ephemeral_reply`` ...).

Every REST request and response is checked against Discord's OpenAPI description
(``shared/specs/discord-openapi.json``); problems end up in ``spec_errors``, which tests assert
to be empty. Tolerance: discord.py sends some snowflakes as JSON integers in request bodies
(``message_reference``, kept ``attachments``, ``allowed_mentions.users`` ...); integer values of
keys named ``id``/``*_id`` and of snowflake lists are turned into strings before a *request* is
validated (component ``id`` fields, which are integers in the spec, are left alone). Responses
are validated as sent.

Pointing discord.py at the fake (these are internals of the pinned discord.py 2.7)::

    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(),
                       guild_ready_timeout=0.02, chunk_guilds_at_startup=False)

Close the bot before the fake: a server-side close makes discord.py try to reconnect.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http
import inspect
import json
import mimetypes
import os
import re
import secrets
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, cast
from urllib.parse import quote

from aiohttp import BodyPartReader, WSMsgType, web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "DEFAULT_UPLOAD_LIMIT",
    "FakeDiscord",
    "FakeInteraction",
    "Intents",
    "MessageFlags",
    "OpenAPISpec",
    "Permissions",
    "RecordedCall",
]

T = TypeVar("T")
Json = Any

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
NONCE_WINDOW_SECONDS = 300.0
SPEC_ENV_VAR = "DISCORD_OPENAPI_SPEC"
DEFAULT_SPEC_PATH = Path(__file__).resolve().parents[3] / "shared/specs/discord-openapi.json"


class Permissions:
    """Permission bits (https://discord.com/developers/docs/topics/permissions)."""

    CREATE_INSTANT_INVITE = 1 << 0
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CONNECT = 1 << 20
    SPEAK = 1 << 21
    CHANGE_NICKNAME = 1 << 26
    USE_APPLICATION_COMMANDS = 1 << 31
    CREATE_PUBLIC_THREADS = 1 << 35
    USE_EXTERNAL_STICKERS = 1 << 37
    SEND_MESSAGES_IN_THREADS = 1 << 38
    ALL = (1 << 51) - 1

    #: What ``@everyone`` grants in a fresh server: chat, attach, embed, app commands.
    BASIC = (
        CREATE_INSTANT_INVITE
        | ADD_REACTIONS
        | VIEW_CHANNEL
        | SEND_MESSAGES
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | USE_EXTERNAL_EMOJIS
        | CONNECT
        | SPEAK
        | CHANGE_NICKNAME
        | USE_APPLICATION_COMMANDS
        | CREATE_PUBLIC_THREADS
        | USE_EXTERNAL_STICKERS
        | SEND_MESSAGES_IN_THREADS
    )
    #: The bot's managed role.
    BOT = BASIC | MANAGE_MESSAGES
    #: Removed from the bot in channels passed to ``deny_channel``.
    DENIED = SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | SEND_MESSAGES_IN_THREADS


class Intents:
    """Gateway intent bits."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    DIRECT_MESSAGES = 1 << 12
    MESSAGE_CONTENT = 1 << 15
    PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT


class MessageFlags:
    SUPPRESS_EMBEDS = 1 << 2
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    SUPPRESS_NOTIFICATIONS = 1 << 12
    IS_COMPONENTS_V2 = 1 << 15
    #: What a bot may set when creating a message (EPHEMERAL only through interactions).
    SETTABLE = SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2
    #: What an edit may change.
    EDITABLE = SUPPRESS_EMBEDS | IS_COMPONENTS_V2


# Application flags: GATEWAY_PRESENCE_LIMITED, GATEWAY_GUILD_MEMBERS_LIMITED,
# GATEWAY_MESSAGE_CONTENT_LIMITED (granted without verification), APPLICATION_COMMAND_BADGE.
_APP_INTENT_FLAGS = {
    Intents.GUILD_PRESENCES: 1 << 13,
    Intents.GUILD_MEMBERS: 1 << 15,
    Intents.MESSAGE_CONTENT: 1 << 19,
}
_APP_COMMAND_BADGE = 1 << 23

_CONTENT_MAX = 2000
_EMBED_LIMITS = {"title": 256, "description": 4096}
_EMBED_TOTAL_MAX = 6000
_MAX_FILES = 10


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


class _SnowflakeGenerator:
    """Realistic, strictly increasing, time-based snowflakes."""

    def __init__(self) -> None:
        self._last = 0
        self._process = os.getpid() & 0x1F

    def __call__(self) -> int:
        elapsed = int(time.time() * 1000) - DISCORD_EPOCH_MS
        candidate = (elapsed << 22) | (1 << 17) | (self._process << 12)
        self._last = max(candidate, self._last + 1)
        return self._last


def _iso(epoch_ms: float) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="microseconds")


def _now_iso() -> str:
    return _iso(time.time() * 1000)


def _snowflake_iso(snowflake: int) -> str:
    return _iso((snowflake >> 22) + DISCORD_EPOCH_MS)


def _normalize_template(template: str) -> str:
    """``/channels/{channel_id}/x`` and ``/channels/{id}/x`` both become ``/channels/{}/x``."""
    return re.sub(r"\{[^}]*\}", "{}", template)


def _to_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


_SNOWFLAKE_LIST_KEYS = frozenset({"users", "roles", "sticker_ids", "applied_tags"})
_COMPONENT_KEYS = frozenset({"components", "component", "accessory"})


def _stringify_snowflakes(value: Json, key: str = "") -> Json:
    """discord.py sends some snowflakes as ints; the spec wants strings (request side only)."""
    if isinstance(value, dict):
        return {
            k: v if k in _COMPONENT_KEYS else _stringify_snowflakes(v, k) for k, v in value.items()
        }
    if isinstance(value, list):
        if key in _SNOWFLAKE_LIST_KEYS:
            return [str(v) if _to_int(v) is not None else v for v in value]
        return [_stringify_snowflakes(v) for v in value]
    if (
        (key == "id" or key.endswith("_id"))
        and isinstance(value, int)
        and not isinstance(value, bool)
    ):
        return str(value)
    return value


def _image_info(data: bytes) -> tuple[str | None, int | None, int | None]:
    """Sniff (content_type, width, height) of PNG, GIF, WebP and JPEG data."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "image/png", width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return "image/gif", width, height
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return ("image/webp", *_webp_size(data))
    if data.startswith(b"\xff\xd8"):
        return ("image/jpeg", *_jpeg_size(data))
    return None, None, None


def _webp_size(data: bytes) -> tuple[int | None, int | None]:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None, None


def _jpeg_size(data: bytes) -> tuple[int | None, int | None]:
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            return None, None
        marker = data[index + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            index += 2
            continue
        length = int.from_bytes(data[index + 2 : index + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return width, height
        index += 2 + length
    return None, None


def _walk_components(components: Iterable[Json]) -> Iterator[dict[str, Any]]:
    for component in components:
        if not isinstance(component, dict):
            continue
        yield component
        yield from _walk_components(component.get("components") or [])
        for key in ("component", "accessory"):
            if isinstance(component.get(key), dict):
                yield from _walk_components([component[key]])


def _number_components(components: list[Json]) -> list[Json]:
    """Copy request components into response form: every component gets a numeric ``id``."""
    counter = 0

    def number(component: Json) -> Json:
        nonlocal counter
        if not isinstance(component, dict):
            return component
        counter += 1
        out = dict(component)
        out.setdefault("id", counter)
        if isinstance(out.get("components"), list):
            out["components"] = [number(child) for child in out["components"]]
        for key in ("component", "accessory"):
            if isinstance(out.get(key), dict):
                out[key] = number(out[key])
        return out

    return [number(component) for component in components]


def _describe_predicate(predicate: Callable[[], object]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return getattr(predicate, "__qualname__", repr(predicate))


# --------------------------------------------------------------------------------------------
# records and errors
# --------------------------------------------------------------------------------------------


@dataclass
class RecordedCall:
    """One REST request the client made, with the fake's answer."""

    method: str
    path: str  # without /api/v10, e.g. "/channels/1/messages"
    route: str  # template, e.g. "/channels/{channel_id}/messages"
    query: dict[str, str]
    json: Json  # decoded JSON body, or payload_json of a multipart body, or None
    files: list[tuple[str, str, bytes]]  # (filename, content_type as sent, bytes)
    status: int
    response: Json
    time: float  # loop.time() when answered
    headers: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<RecordedCall {self.method} {self.path} -> {self.status}>"


class _ApiError(Exception):
    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def _form_error(path: str, code: str, message: str) -> _ApiError:
    """A 400 "Invalid Form Body" like Discord's, with the error nested along ``path``."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        errors = {part: errors}
    return _ApiError(400, 50035, "Invalid Form Body", errors)


def _unknown(kind: str) -> _ApiError:
    codes = {
        "Application": 10002,
        "Channel": 10003,
        "Guild": 10004,
        "Member": 10007,
        "Message": 10008,
        "User": 10013,
        "Webhook": 10015,
        "interaction": 10062,
        "application command": 10063,
    }
    return _ApiError(404, codes[kind], f"Unknown {kind}")


@dataclass
class _Upload:
    index: int
    filename: str
    content_type: str
    data: bytes


@dataclass
class _Request:
    method: str
    path: str
    route: str
    params: dict[str, str]
    query: Mapping[str, str]
    json: Json
    uploads: list[_Upload]

    def body(self) -> dict[str, Any]:
        return self.json if isinstance(self.json, dict) else {}

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true")


_Reply = tuple[int, Json]
_Handler = Callable[[_Request], Awaitable[_Reply]]


@dataclass(frozen=True)
class _Route:
    method: str
    template: str
    handler: _Handler
    regex: re.Pattern[str]
    literals: int
    auth: bool

    @classmethod
    def make(cls, method: str, template: str, handler: _Handler, *, auth: bool = True) -> _Route:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        literals = sum(1 for part in template.split("/") if part and not part.startswith("{"))
        return cls(method, template, handler, re.compile(pattern), literals, auth)


@dataclass
class _FaultRule:
    method: str
    route: str  # normalized template
    status: int
    code: int
    message: str
    times: int
    retry_after: float | None
    with_files: bool = False  # only requests that upload files


@dataclass
class _Blob:
    data: bytes
    content_type: str | None


# --------------------------------------------------------------------------------------------
# OpenAPI validation
# --------------------------------------------------------------------------------------------


def _pointer_escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _simplify_enums(node: Json) -> Json:
    """Rewrite ``oneOf: [{const: 0, title: ...}, ...]`` (how this spec spells enums) to ``enum``.

    Equivalent for validation, a third cheaper, and the error messages list the allowed values.
    """
    if isinstance(node, list):
        return [_simplify_enums(item) for item in node]
    if not isinstance(node, dict):
        return node
    branches = node.get("oneOf")
    if (
        isinstance(branches, list)
        and branches
        and all(isinstance(b, dict) and "const" in b and set(b) <= _ENUM_KEYS for b in branches)
        and len({json.dumps(b["const"]) for b in branches}) == len(branches)
    ):
        node = {k: v for k, v in node.items() if k != "oneOf"}
        node["enum"] = [b["const"] for b in branches]
    return {key: _simplify_enums(value) for key, value in node.items()}


_ENUM_KEYS = frozenset({"const", "title", "description"})


def _deepest(error: ValidationError) -> ValidationError:
    """Within anyOf/oneOf failures, the deepest sub-error is usually the informative one."""
    while error.context:
        error = max(
            error.context,
            key=lambda e: (len(e.absolute_path), e.validator not in ("type", "const", "enum")),
        )
    return error


class OpenAPISpec:
    """Discord's OpenAPI document with cached per-operation JSON-schema validators."""

    ROOT = "urn:discord-openapi"

    def __init__(self, document: dict[str, Any]) -> None:
        self.document: dict[str, Any] = _simplify_enums(document)
        resource = Resource.from_contents(self.document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(self.ROOT, resource)
        self._paths = {_normalize_template(path): path for path in self.document["paths"]}
        self._validators: dict[str, Draft202012Validator] = {}

    @classmethod
    def load(cls, path: Path | str) -> OpenAPISpec:
        return _load_spec(str(Path(path).resolve()))

    def operation(self, method: str, template: str) -> tuple[str, dict[str, Any]] | None:
        spec_path = self._paths.get(_normalize_template(template))
        if spec_path is None:
            return None
        operation = self.document["paths"][spec_path].get(method.lower())
        return (spec_path, operation) if operation is not None else None

    def problems(
        self,
        method: str,
        template: str,
        *,
        request_body: Json,
        content_type: str,
        status: int | None,
        response_body: Json,
    ) -> list[str]:
        """Problems with a request body, and with the response unless `status` is None."""
        found = self.operation(method, template)
        if found is None:
            return ["is not an operation of the OpenAPI spec"]
        spec_path, operation = found
        base = f"/paths/{_pointer_escape(spec_path)}/{method.lower()}"
        problems: list[str] = []
        if request_body is not None:
            content = operation.get("requestBody", {}).get("content", {})
            if content_type not in content:
                content_type = "application/json"
            if content_type not in content:
                problems.append("request: the operation takes no body")
            else:
                pointer = f"{base}/requestBody/content/{_pointer_escape(content_type)}/schema"
                message = self._check(pointer, _stringify_snowflakes(request_body))
                if message:
                    problems.append(f"request body {message}")
        if status is None:
            return problems
        responses = operation.get("responses", {})
        candidates = (str(status), f"{status // 100}XX", "default")
        key = next((k for k in candidates if k in responses), None)
        if key is None:
            problems.append(f"response status {status} is not documented")
            return problems
        response = responses[key]
        pointer = f"{base}/responses/{_pointer_escape(key)}"
        if "$ref" in response:
            pointer = response["$ref"].removeprefix("#")
            response = self._lookup(pointer)
        has_json = "application/json" in response.get("content", {})
        if response_body is None:
            if has_json:
                problems.append(f"response {status}: JSON body missing")
        elif not has_json:
            problems.append(f"response {status}: documented without a body")
        else:
            message = self._check(f"{pointer}/content/application~1json/schema", response_body)
            if message:
                problems.append(f"response {status} {message}")
        return problems

    def _lookup(self, pointer: str) -> Any:
        node: Any = self.document
        for part in pointer.strip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _check(self, pointer: str, instance: Json) -> str | None:
        validator = self._validators.get(pointer)
        if validator is None:
            schema = {"$ref": f"{self.ROOT}#{pointer}"}
            validator = Draft202012Validator(schema, registry=self._registry)
            self._validators[pointer] = validator
        error = best_match(validator.iter_errors(instance))
        if error is None:
            return None
        error = _deepest(error)
        where = "/".join(str(part) for part in error.absolute_path) or "(root)"
        message = error.message if len(error.message) <= 240 else error.message[:240] + "..."
        return f"at {where}: {message}"


@cache
def _load_spec(path: str) -> OpenAPISpec:
    with Path(path).open(encoding="utf-8") as handle:
        return OpenAPISpec(json.load(handle))


def _default_spec_path() -> Path:
    if DEFAULT_SPEC_PATH.is_file():
        return DEFAULT_SPEC_PATH
    env = os.environ.get(SPEC_ENV_VAR)
    if env:
        return Path(env)
    raise FileNotFoundError(
        f"Discord OpenAPI spec not found at {DEFAULT_SPEC_PATH}; set {SPEC_ENV_VAR} "
        "or pass FakeDiscord(validate=False)"
    )


# --------------------------------------------------------------------------------------------
# world model
# --------------------------------------------------------------------------------------------


@dataclass
class _User:
    id: int
    username: str
    bot: bool = False
    global_name: str | None = None


@dataclass
class _Role:
    id: int
    name: str
    permissions: int
    position: int
    managed: bool = False
    bot_id: int | None = None


@dataclass
class _Channel:
    id: int
    name: str
    guild_id: int | None
    type: int = 0  # 0 guild text, 1 DM
    position: int = 0
    recipient_id: int | None = None


@dataclass
class _Member:
    user_id: int
    roles: list[int]
    permissions: int
    joined_at: str
    nick: str | None = None


@dataclass
class _Guild:
    id: int
    name: str
    owner_id: int
    joined_at: str
    channels: list[int] = field(default_factory=list)
    roles: dict[int, _Role] = field(default_factory=dict)
    members: dict[int, _Member] = field(default_factory=dict)
    bot_role_id: int = 0


# --------------------------------------------------------------------------------------------
# gateway plumbing
# --------------------------------------------------------------------------------------------


class _Connection:
    """One websocket; frames go through a queue so their order is the order of dispatch."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.session: _Session | None = None
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_frames())

    def send(self, payload: dict[str, Any]) -> None:
        self.queue.put_nowait(json.dumps(payload))

    async def _write_frames(self) -> None:
        while True:
            frame = await self.queue.get()
            try:
                if not self.ws.closed:
                    await self.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                pass  # the peer went away; the reader loop notices and cleans up
            finally:
                self.queue.task_done()

    async def flush(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout)

    async def stop(self) -> None:
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        while not self.queue.empty():
            self.queue.get_nowait()
            self.queue.task_done()


class _Session:
    """A gateway session: survives a dropped connection so that RESUME can replay events."""

    def __init__(self, session_id: str, intents: int) -> None:
        self.id = session_id
        self.intents = intents
        self.seq = 0
        self.buffer: deque[tuple[int, str]] = deque(maxlen=2000)
        self.conn: _Connection | None = None

    def dispatch(self, event: str, data: Json) -> None:
        self.seq += 1
        frame = json.dumps({"op": 0, "t": event, "s": self.seq, "d": data})
        self.buffer.append((self.seq, frame))
        if self.conn is not None:
            self.conn.queue.put_nowait(frame)


# --------------------------------------------------------------------------------------------
# interactions
# --------------------------------------------------------------------------------------------


class FakeInteraction:
    """Handle on one dispatched interaction and everything the bot answered to it."""

    def __init__(
        self,
        fake: FakeDiscord,
        payload: dict[str, Any],
        *,
        message_type: int,
        message_id: int | None,
        created_at: float,
        triggered_by: FakeInteraction | None = None,
    ) -> None:
        self._fake = fake
        self.payload = payload
        self.id = int(payload["id"])
        self.token: str = payload["token"]
        self.application_id = int(payload["application_id"])
        self.type: int = payload["type"]
        self.channel_id = int(payload["channel_id"])
        self.guild_id = _to_int(payload.get("guild_id"))
        user = payload["member"]["user"] if "member" in payload else payload["user"]
        self.user_id = int(user["id"])
        self.attachment_size_limit: int = payload["attachment_size_limit"]
        self.message_id = message_id  # the message a component / modal interaction came from
        self.message_type = message_type  # type of the messages the response creates
        self.created_at = created_at
        self.triggered_by = triggered_by
        self.callbacks: list[dict[str, Any]] = []
        self.modal: dict[str, Any] | None = None
        self.autocomplete_choices: list[Any] | None = None
        self.original_id: int | None = None
        self.followup_ids: list[int] = []
        self.expired = False
        self._done = asyncio.Event()

    def __repr__(self) -> str:
        return f"<FakeInteraction id={self.id} type={self.type} callbacks={len(self.callbacks)}>"

    @property
    def acknowledged(self) -> bool:
        return bool(self.callbacks)

    @property
    def deferred(self) -> bool:
        return bool(self.callbacks) and self.callbacks[0].get("type") in (5, 6)

    @property
    def original(self) -> dict[str, Any] | None:
        """The current ``@original`` message; None before a response or after its deletion."""
        if self.original_id is None:
            return None
        return self._fake.messages.get(self.original_id)

    @property
    def followups(self) -> list[dict[str, Any]]:
        return [self._fake.messages[i] for i in self.followup_ids if i in self._fake.messages]

    @property
    def ephemeral_reply(self) -> str | None:
        """Content of the latest ephemeral follow-up, else of an ephemeral original response."""
        ids = [*reversed(self.followup_ids), self.original_id]
        for message_id in ids:
            if message_id is None:
                continue
            message = self._fake.messages.get(message_id) or self._fake.deleted_messages.get(
                message_id
            )
            if message is None:
                continue
            flags = message["flags"]
            if flags & MessageFlags.EPHEMERAL and not flags & MessageFlags.LOADING:
                return str(message["content"])
        return None

    def _acknowledge(self, body: dict[str, Any]) -> None:
        self.callbacks.append(body)
        self._done.set()

    async def wait_done(self, timeout: float = 5.0) -> None:
        """Wait until the bot acknowledged the interaction (first successful callback)."""
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"interaction {self.id} (type {self.type}) got no successful callback within "
                f"{timeout}s\n{self._fake.describe_recent()}"
            ) from None


# --------------------------------------------------------------------------------------------
# the fake
# --------------------------------------------------------------------------------------------


class FakeDiscord:
    """A fake Discord (REST, gateway, CDN) on 127.0.0.1 for the real discord.py client."""

    ratelimit_limit = 50
    ratelimit_reset_after = 0.001
    heartbeat_interval_ms = 41250

    def __init__(
        self,
        *,
        application_id: int = 900000000000000001,
        bot_user_id: int | None = None,
        bot_name: str = "Imagine",
        validate: bool = True,
        spec_path: Path | str | None = None,
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        privileged_intents: int = Intents.PRIVILEGED,
        interaction_response_deadline: float = 3.0,
        interaction_token_lifetime: float = 15 * 60.0,
        echo_bot_messages: bool = True,
    ) -> None:
        self.application_id = application_id
        self.bot_user_id = bot_user_id if bot_user_id is not None else application_id
        self.bot_name = bot_name
        self.validate = validate
        self.upload_limit = upload_limit
        #: privileged intents the app is granted; IDENTIFY asking for others gets close 4014
        self.privileged_intents = privileged_intents
        self.interaction_response_deadline = interaction_response_deadline
        self.interaction_token_lifetime = interaction_token_lifetime
        #: send MESSAGE_CREATE/UPDATE/DELETE for what the bot itself does, as Discord does
        self.echo_bot_messages = echo_bot_messages
        self.spec: OpenAPISpec | None = (
            OpenAPISpec.load(spec_path or _default_spec_path()) if validate else None
        )

        # inspection
        self.calls: list[RecordedCall] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.deleted_messages: dict[int, dict[str, Any]] = {}
        self.spec_errors: list[str] = []
        self.commands_global: list[dict[str, Any]] = []
        self.commands_guild: dict[int, list[dict[str, Any]]] = {}
        self.interactions: list[FakeInteraction] = []
        self.intents: int | None = None
        self.identify_count = 0
        self.resume_count = 0
        self.cdn_requests: list[str] = []

        # internals
        self._next_id = _SnowflakeGenerator()
        self._secret = secrets.token_bytes(32)
        self._users: dict[int, _User] = {}
        self._guilds: dict[int, _Guild] = {}
        self._channels: dict[int, _Channel] = {}
        self._blobs: dict[int, _Blob] = {}
        self._interactions_by_id: dict[int, FakeInteraction] = {}
        self._interactions_by_token: dict[str, FakeInteraction] = {}
        self._faults: list[_FaultRule] = []
        self._denied_channels: set[int] = set()
        self._expired_tokens: set[str] = set()
        self._nonces: dict[tuple[int, int, str], tuple[int, float]] = {}
        self._last_message_ids: dict[int, int] = {}
        self._sessions: dict[str, _Session] = {}
        self._connections: set[_Connection] = set()
        self._routes = self._build_routes()
        self._runner: web.AppRunner | None = None
        # Bind now so that URLs (api_base, attachment URLs) are known before start().
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]

        # the world: the bot, an owner, a default guild with a text channel
        self._users[self.bot_user_id] = _User(self.bot_user_id, bot_name, bot=True)
        self.owner_id = self._next_id()
        self._users[self.owner_id] = _User(self.owner_id, "owner", global_name="Owner")
        self.guild_id = self.add_guild("Fake Guild")
        self.channel_id = self.add_channel(self.guild_id, "general")

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self) -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._handle_api)
        app.router.add_get("/gateway", self._handle_gateway)
        app.router.add_get("/cdn/{tail:.*}", self._handle_cdn)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket).start()

    async def close(self) -> None:
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001)
            await conn.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._socket.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---------------------------------------------------------------- the world

    def add_guild(self, name: str = "guild") -> int:
        guild_id = self._next_id()
        guild = _Guild(guild_id, name, owner_id=self.owner_id, joined_at=_now_iso())
        guild.roles[guild_id] = _Role(guild_id, "@everyone", Permissions.BASIC, 0)
        bot_role = _Role(
            self._next_id(),
            self.bot_name,
            Permissions.BOT,
            1,
            managed=True,
            bot_id=self.bot_user_id,
        )
        guild.roles[bot_role.id] = bot_role
        guild.bot_role_id = bot_role.id
        self._guilds[guild_id] = guild
        joined = guild.joined_at
        guild.members[self.owner_id] = _Member(self.owner_id, [], Permissions.BASIC, joined)
        bot_member = _Member(self.bot_user_id, [bot_role.id], Permissions.BASIC, joined)
        guild.members[self.bot_user_id] = bot_member
        self._emit("GUILD_CREATE", lambda _s: self._guild_create_json(guild))
        return guild_id

    def add_channel(self, guild_id: int | None = None, name: str = "general") -> int:
        guild = self._guild(guild_id)
        channel = _Channel(self._next_id(), name, guild.id, position=len(guild.channels))
        self._channels[channel.id] = channel
        guild.channels.append(channel.id)
        self._emit("CHANNEL_CREATE", lambda _s: self._channel_json(channel))
        return channel.id

    def dm_channel(self, user_id: int) -> int:
        """The DM channel between the bot and ``user_id`` (created on first use)."""
        self._user_or_fail(user_id)
        for channel in self._channels.values():
            if channel.type == 1 and channel.recipient_id == user_id:
                return channel.id
        channel = _Channel(self._next_id(), "", None, type=1, recipient_id=user_id)
        self._channels[channel.id] = channel
        return channel.id

    def add_member(
        self,
        user_id: int | None = None,
        *,
        guild_id: int | None = None,
        name: str = "member",
        bot: bool = False,
        roles: Iterable[int] = (),
        permissions: int = Permissions.BASIC,
    ) -> int:
        """Add a member; ``permissions`` is the member's base set, role permissions add to it."""
        guild = self._guild(guild_id)
        user_id = user_id if user_id is not None else self._next_id()
        if user_id not in self._users:
            self._users[user_id] = _User(user_id, name, bot=bot, global_name=name.title())
        role_ids = list(roles)
        unknown = [r for r in role_ids if r not in guild.roles]
        if unknown:
            raise ValueError(f"unknown role ids {unknown} in guild {guild.id}")
        member = _Member(user_id, role_ids, permissions, _now_iso())
        guild.members[user_id] = member
        self._emit(
            "GUILD_MEMBER_ADD",
            lambda _s: {**self._member_json(member), "guild_id": str(guild.id)},
            intent=Intents.GUILD_MEMBERS,
        )
        return user_id

    def add_role(
        self, guild_id: int | None = None, name: str = "role", permissions: int = 0
    ) -> int:
        guild = self._guild(guild_id)
        role = _Role(self._next_id(), name, permissions, len(guild.roles))
        guild.roles[role.id] = role
        self._emit(
            "GUILD_ROLE_CREATE",
            lambda _s: {"guild_id": str(guild.id), "role": self._role_json(role)},
        )
        return role.id

    def set_member_permissions(
        self, user_id: int, permissions: int, guild_id: int | None = None
    ) -> None:
        guild = self._guild(guild_id)
        if user_id not in guild.members:
            raise ValueError(f"user {user_id} is not a member of guild {guild.id}")
        guild.members[user_id].permissions = permissions

    def remove_member(self, user_id: int, guild_id: int | None = None) -> None:
        """The member left the server (the user stays known to Discord)."""
        del self._guild(guild_id).members[user_id]

    def add_member_role(self, user_id: int, role_id: int, guild_id: int | None = None) -> None:
        guild = self._guild(guild_id)
        guild.members[user_id].roles.append(role_id)

    def permissions_of(self, user_id: int, channel_id: int | None = None) -> int:
        """Effective permissions of a member in a channel (what interactions carry)."""
        channel = self._channels[channel_id or self.channel_id]
        if channel.guild_id is None:
            return Permissions.BASIC
        guild = self._guilds[channel.guild_id]
        member = guild.members[user_id]
        permissions = member.permissions
        for role_id in member.roles:
            permissions |= guild.roles[role_id].permissions
        if user_id == guild.owner_id or permissions & Permissions.ADMINISTRATOR:
            return Permissions.ALL
        if user_id == self.bot_user_id and channel.id in self._denied_channels:
            permissions &= ~Permissions.DENIED
        return permissions

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str | None = "image/png",
        *,
        size: int | None = None,
        channel_id: int | None = None,
    ) -> dict[str, Any]:
        """A user-uploaded attachment object; the CDN serves ``data`` at its (signed) url.

        ``size`` overrides the advertised size (to fake a huge file without the bytes)."""
        attachment = self._make_attachment(
            channel_id or self.channel_id, filename, data, content_type=content_type
        )
        if size is not None:
            attachment["size"] = size
        return attachment

    # ---------------------------------------------------------------- fault injection

    def fail_next(
        self,
        method: str,
        route: str,
        *,
        status: int,
        code: int = 0,
        message: str = "",
        times: int = 1,
        retry_after: float | None = None,
        with_files: bool = False,
    ) -> None:
        """Answer the next ``times`` requests matching method + route template with an error
        (with ``with_files``, only requests that upload files match)."""
        rule = _FaultRule(
            method.upper(),
            _normalize_template(route),
            status,
            code,
            message,
            times,
            retry_after,
            with_files,
        )
        self._faults.append(rule)

    def expire_interaction(self, token: str) -> None:
        """Webhook calls with this token now answer 401 / 50027 Invalid Webhook Token."""
        self._expired_tokens.add(token)
        interaction = self._interactions_by_token.get(token)
        if interaction is not None:
            interaction.expired = True

    def deny_channel(self, channel_id: int) -> None:
        """The bot loses Send Messages / Attach Files / Embed Links in this channel."""
        self._denied_channels.add(channel_id)
        self._emit_channel_update(channel_id)

    def allow_channel(self, channel_id: int) -> None:
        self._denied_channels.discard(channel_id)
        self._emit_channel_update(channel_id)

    async def request_reconnect(self, *, resume: bool = True) -> None:
        """Ask connected clients to reconnect: op 7 (then RESUME) or op 9 (then IDENTIFY)."""
        for session in list(self._sessions.values()):
            if session.conn is None:
                continue
            if resume:
                session.conn.send({"op": 7, "d": None, "s": None, "t": None})
            else:
                self._sessions.pop(session.id, None)
                session.conn.send({"op": 9, "d": False, "s": None, "t": None})
            await session.conn.flush()

    # ---------------------------------------------------------------- inspection

    def calls_to(self, method: str, route: str) -> list[RecordedCall]:
        wanted = _normalize_template(route)
        method = method.upper()
        return [
            c for c in self.calls if c.method == method and _normalize_template(c.route) == wanted
        ]

    def channel_messages(self, channel_id: int | None = None) -> list[dict[str, Any]]:
        """Non-ephemeral messages of a channel, in creation order."""
        wanted = str(channel_id or self.channel_id)
        return [
            m
            for m in self.messages.values()
            if m["channel_id"] == wanted and not m["flags"] & MessageFlags.EPHEMERAL
        ]

    def files_of(self, message_id: int) -> list[tuple[str, bytes]]:
        """(filename, bytes) of the attachments of the current version of a message."""
        message = self.messages.get(message_id) or self.deleted_messages.get(message_id)
        if message is None:
            raise KeyError(f"no message {message_id}")
        return [
            (a["filename"], self._blobs[int(a["id"])].data)
            for a in message["attachments"]
            if int(a["id"]) in self._blobs
        ]

    def interaction(self, token_or_id: str | int) -> FakeInteraction:
        if isinstance(token_or_id, int):
            return self._interactions_by_id[token_or_id]
        return self._interactions_by_token[token_or_id]

    def describe_recent(self, count: int = 12) -> str:
        lines = [f"  {c.method} {c.path} -> {c.status}" for c in self.calls[-count:]]
        text = "recent REST calls:\n" + ("\n".join(lines) if lines else "  (none)")
        if self.spec_errors:
            text += "\nspec_errors:\n" + "\n".join(f"  {e}" for e in self.spec_errors[-5:])
        return text

    async def wait_for(self, predicate: Callable[[], T | bool | None], timeout: float = 5.0) -> T:
        """Poll ``predicate`` every 10 ms until it returns something truthy; return that."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return cast(T, value)
            if loop.time() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for: {_describe_predicate(predicate)}\n"
                    f"{self.describe_recent()}"
                )
            await asyncio.sleep(0.01)

    # ---------------------------------------------------------------- driving the bot

    async def invoke_slash(
        self,
        name: str,
        options: Mapping[str, object] | None = None,
        *,
        user_id: int,
        guild_id: int | None = None,
        channel_id: int | None = None,
        attachments: Mapping[str, dict[str, Any]] | None = None,
        subcommand: str | None = None,
        attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
        locale: str = "en-US",
        created_ago: float = 0.0,
    ) -> FakeInteraction:
        """Run ``/name`` (``subcommand`` may be ``"sub"`` or ``"group sub"``).

        Option types come from the registered command when there is one (unknown or missing
        required options then raise ValueError), else from the Python values. ``created_ago``
        back-dates the interaction's snowflake by that many seconds, so the bot sees a token
        close to its 15-minute expiry."""
        channel = self._place(guild_id, channel_id)
        command = self._find_command(name, 1, channel.guild_id)
        definitions: list[dict[str, Any]] | None = command.get("options", []) if command else None
        path = subcommand.split() if subcommand else []
        for part in path:
            if definitions is None:
                break
            node = next((o for o in definitions if o.get("name") == part), None)
            if node is None or node.get("type") not in (1, 2):
                raise ValueError(f"/{name} has no subcommand {part!r}")
            definitions = node.get("options", [])
        if definitions and any(o.get("type") in (1, 2) for o in definitions):
            names = [o["name"] for o in definitions]
            raise ValueError(f"/{name} needs subcommand=... (one of {names})")
        resolved: dict[str, dict[str, Any]] = {}
        values: dict[str, object] = dict(options or {})
        values.update(attachments or {})
        built = self._build_options(definitions, values, resolved, channel)
        for depth, part in reversed(list(enumerate(path))):
            option_type = 2 if depth == 0 and len(path) == 2 else 1
            built = [{"type": option_type, "name": part, "options": built}]
        data: dict[str, Any] = {"name": name, "type": 1, "options": built}
        data["id"] = command["id"] if command else str(self._next_id())
        if command and command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        if resolved:
            data["resolved"] = resolved
        return await self._dispatch_interaction(
            2, data, user_id=user_id, channel=channel, message_type=20,
            attachment_size_limit=attachment_size_limit, locale=locale, created_ago=created_ago,
        )  # fmt: skip

    async def invoke_message_command(
        self,
        name: str,
        message: Mapping[str, Any],
        *,
        user_id: int,
        guild_id: int | None = None,
        channel_id: int | None = None,
        attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
    ) -> FakeInteraction:
        """Run a message context-menu command on ``message`` (its current version)."""
        target = self.messages.get(int(message["id"]), dict(message))
        channel = self._place(guild_id, channel_id or int(target["channel_id"]))
        command = self._find_command(name, 3, channel.guild_id)
        data: dict[str, Any] = {
            "id": command["id"] if command else str(self._next_id()),
            "name": name,
            "type": 3,
            "target_id": target["id"],
            "resolved": {"messages": {target["id"]: target}},
        }
        if command and command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self._dispatch_interaction(
            2, data, user_id=user_id, channel=channel, message_type=23,
            attachment_size_limit=attachment_size_limit,
        )  # fmt: skip

    async def invoke_user_command(
        self,
        name: str,
        target_user_id: int,
        *,
        user_id: int,
        guild_id: int | None = None,
        channel_id: int | None = None,
    ) -> FakeInteraction:
        """Run a user context-menu command on ``target_user_id``."""
        channel = self._place(guild_id, channel_id)
        command = self._find_command(name, 2, channel.guild_id)
        resolved: dict[str, dict[str, Any]] = {}
        self._resolve_user(target_user_id, resolved, channel)
        data: dict[str, Any] = {
            "id": command["id"] if command else str(self._next_id()),
            "name": name,
            "type": 2,
            "target_id": str(target_user_id),
            "resolved": resolved,
        }
        if command and command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self._dispatch_interaction(
            2, data, user_id=user_id, channel=channel, message_type=23
        )

    async def click_button(
        self, message: Mapping[str, Any], custom_id: str, *, user_id: int
    ) -> FakeInteraction:
        """Click the button ``custom_id`` on (the current version of) ``message``."""
        return await self._component_interaction(message, custom_id, user_id, (2,), None)

    async def select_menu(
        self, message: Mapping[str, Any], custom_id: str, values: list[str], *, user_id: int
    ) -> FakeInteraction:
        """Pick ``values`` in the select menu ``custom_id`` on ``message``."""
        return await self._component_interaction(
            message, custom_id, user_id, (3, 5, 6, 7, 8), values
        )

    async def submit_modal(
        self,
        custom_id: str,
        values: Mapping[str, str | list[str]],
        *,
        user_id: int,
        guild_id: int | None = None,
        channel_id: int | None = None,
        message: Mapping[str, Any] | None = None,
    ) -> FakeInteraction:
        """Submit the modal ``custom_id`` with text-input values (``custom_id -> value``).

        When the bot opened that modal, the submitted components mirror its layout and required
        inputs / length limits are checked (ValueError, like the client would refuse)."""
        source = next(
            (
                i
                for i in reversed(self.interactions)
                if i.modal is not None and i.modal.get("custom_id") == custom_id
            ),
            None,
        )
        if source is not None and source.modal is not None:
            components = self._modal_components(source.modal.get("components", []), values)
            channel_id = channel_id or source.channel_id
            if message is None and source.message_id is not None:
                message = self.messages.get(source.message_id)
        else:
            components = [
                {"type": 1, "id": index * 2 + 1, "components": [
                    {"type": 4, "id": index * 2 + 2, "custom_id": key, "value": value},
                ]}
                for index, (key, value) in enumerate(values.items())
            ]  # fmt: skip
        channel = self._place(guild_id, channel_id)
        current = self.messages.get(int(message["id"]), dict(message)) if message else None
        return await self._dispatch_interaction(
            5,
            {"custom_id": custom_id, "components": components},
            user_id=user_id,
            channel=channel,
            message=current,
            message_type=0,
            triggered_by=source,
        )

    async def post_message(
        self,
        *,
        author_id: int,
        content: str = "",
        channel_id: int | None = None,
        attachments: Iterable[dict[str, Any]] = (),
        reply_to: Mapping[str, Any] | None = None,
        mention_bot: bool = False,
        dispatch: bool = True,
        reply_ping: bool = True,
    ) -> dict[str, Any]:
        """A user posts a message (stored, then MESSAGE_CREATE unless ``dispatch=False``).

        ``reply_to`` makes it a reply (pinging the replied author unless ``reply_ping=False``,
        as the Discord client does); ``mention_bot`` prefixes ``<@bot>`` to the content."""
        channel = self._place(None, channel_id)
        author = self._ensure_member(author_id, channel)
        if mention_bot:
            content = f"<@{self.bot_user_id}> {content}".rstrip()
        extra: dict[str, Any] = {}
        message_type = 0
        replied_author: int | None = None
        if reply_to is not None:
            referenced = self._reference_object(reply_to)
            message_type = 19
            extra["message_reference"] = self._reference_json(referenced)
            extra["referenced_message"] = referenced
            if reply_ping:
                replied_author = int(referenced["author"]["id"])
        fields: dict[str, Any] = {
            "content": content,
            "attachments": [dict(a) for a in attachments],
            **self._mentions(content, None, replied_author),
        }
        message = self._store_message(
            channel, author, fields, message_type=message_type, extra=extra
        )
        if dispatch:
            await self.dispatch_message_create(message)
        return message

    async def redeliver_interaction(self, interaction: FakeInteraction) -> None:
        """Send the same INTERACTION_CREATE again (Discord delivering an event twice)."""
        payload = interaction.payload
        self._emit("INTERACTION_CREATE", lambda _s: payload)
        await self._flush()

    def delete_message_as_user(self, message_id: int) -> None:
        """Someone (a moderator, say) deletes a message: later REST calls get 10008."""
        self._delete_message(message_id)

    async def dispatch_message_create(self, message: Mapping[str, Any]) -> None:
        """(Re-)send MESSAGE_CREATE for ``message`` to connected clients."""
        await self._await_bot()
        self._emit_message("MESSAGE_CREATE", dict(message))
        await self._flush()

    # ---------------------------------------------------------------- interaction building

    async def _dispatch_interaction(
        self,
        interaction_type: int,
        data: dict[str, Any],
        *,
        user_id: int,
        channel: _Channel,
        message_type: int,
        message: dict[str, Any] | None = None,
        attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
        locale: str = "en-US",
        triggered_by: FakeInteraction | None = None,
        created_ago: float = 0.0,
    ) -> FakeInteraction:
        await self._await_bot()
        user = self._ensure_member(user_id, channel)
        interaction_id = self._next_id()
        if created_ago:
            interaction_id -= int(created_ago * 1000) << 22
        raw_token = f"interaction:{interaction_id}:{secrets.token_urlsafe(48)}"
        token = base64.urlsafe_b64encode(raw_token.encode()).decode().rstrip("=")
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": interaction_type,
            "token": token,
            "version": 1,
            "channel_id": str(channel.id),
            "channel": self._channel_json(channel, for_user=user.id),
            "app_permissions": str(self._app_permissions(channel)),
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": attachment_size_limit,
            "data": data,
        }
        if channel.guild_id is not None:
            guild = self._guilds[channel.guild_id]
            member = guild.members[user.id]
            payload.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member={
                    **self._member_json(member),
                    "permissions": str(self.permissions_of(user.id, channel.id)),
                },
                authorizing_integration_owners={"0": str(guild.id)},
                context=0,
            )
        else:
            payload.update(
                user=self._user_json(user),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        if message is not None:
            payload["message"] = message
        interaction = FakeInteraction(
            self,
            payload,
            message_type=message_type,
            message_id=int(message["id"]) if message else None,
            created_at=asyncio.get_running_loop().time(),
            triggered_by=triggered_by,
        )
        self.interactions.append(interaction)
        self._interactions_by_id[interaction.id] = interaction
        self._interactions_by_token[token] = interaction
        self._emit("INTERACTION_CREATE", lambda _s: payload)
        await self._flush()
        return interaction

    def _build_options(
        self,
        definitions: list[dict[str, Any]] | None,
        values: Mapping[str, object],
        resolved: dict[str, dict[str, Any]],
        channel: _Channel,
    ) -> list[dict[str, Any]]:
        by_name = {d["name"]: d for d in definitions or []}
        if definitions is not None:
            unknown = sorted(set(values) - set(by_name))
            if unknown:
                raise ValueError(f"options {unknown} are not defined; known: {sorted(by_name)}")
            missing = [n for n, d in by_name.items() if d.get("required") and n not in values]
            if missing:
                raise ValueError(f"required options {missing} are missing")
        options = []
        for name, value in values.items():
            definition = by_name.get(name)
            option_type = definition["type"] if definition else self._infer_option_type(value)
            option = {"name": name, "type": option_type}
            option["value"] = self._option_value(option_type, value, resolved, channel)
            choices = (definition or {}).get("choices")
            if choices and option["value"] not in [c["value"] for c in choices]:
                raise ValueError(f"{value!r} is not one of the choices of option {name!r}")
            options.append(option)
        return options

    @staticmethod
    def _infer_option_type(value: object) -> int:
        if isinstance(value, bool):
            return 5
        if isinstance(value, int):
            return 4
        if isinstance(value, float):
            return 10
        if isinstance(value, str):
            return 3
        if isinstance(value, dict) and "url" in value and "filename" in value:
            return 11
        raise TypeError(f"cannot infer an option type for {value!r}; register the command")

    def _option_value(
        self,
        option_type: int,
        value: object,
        resolved: dict[str, dict[str, Any]],
        channel: _Channel,
    ) -> Json:
        simple: dict[int, Callable[[Any], Json]] = {3: str, 4: int, 5: bool, 10: float}
        if option_type in simple:
            return simple[option_type](value)
        if option_type == 11:
            attachment = value if isinstance(value, dict) else self._attachment_by_id(value)
            resolved.setdefault("attachments", {})[attachment["id"]] = attachment
            return attachment["id"]
        target = _to_int(value)
        if target is None:
            raise ValueError(f"option of type {option_type} needs an id, got {value!r}")
        guild = self._guilds.get(channel.guild_id or 0)
        if option_type == 8 or (option_type == 9 and guild and target in guild.roles):
            if guild is None or target not in guild.roles:
                raise ValueError(f"unknown role {target}")
            resolved.setdefault("roles", {})[str(target)] = self._role_json(guild.roles[target])
        elif option_type in (6, 9):
            self._resolve_user(target, resolved, channel)
        elif option_type == 7:
            other = self._channels[target]
            resolved.setdefault("channels", {})[str(target)] = {
                "id": str(other.id), "name": other.name, "type": other.type,
                "permissions": str(Permissions.BASIC), "guild_id": str(other.guild_id), "flags": 0,
            }  # fmt: skip
        else:
            raise ValueError(f"unsupported option type {option_type}")
        return str(target)

    def _resolve_user(
        self, user_id: int, resolved: dict[str, dict[str, Any]], channel: _Channel
    ) -> None:
        user = self._user_or_fail(user_id)
        resolved.setdefault("users", {})[str(user_id)] = self._user_json(user)
        guild = self._guilds.get(channel.guild_id or 0)
        if guild is not None and user_id in guild.members:
            member = self._member_json(guild.members[user_id], with_user=False)
            member["permissions"] = str(self.permissions_of(user_id, channel.id))
            resolved.setdefault("members", {})[str(user_id)] = member

    async def _component_interaction(
        self,
        message: Mapping[str, Any],
        custom_id: str,
        user_id: int,
        component_types: tuple[int, ...],
        values: list[str] | None,
    ) -> FakeInteraction:
        current = self.messages.get(int(message["id"]))
        if current is None:
            raise ValueError(f"message {message['id']} does not exist (deleted?)")
        component = next(
            (c for c in _walk_components(current["components"]) if c.get("custom_id") == custom_id),
            None,
        )
        if component is None or component.get("type") not in component_types:
            found = [c.get("custom_id") for c in _walk_components(current["components"])]
            raise ValueError(f"no such component {custom_id!r} on the message; it has {found}")
        if component.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if "id" in component:
            data["id"] = component["id"]
        if values is not None:
            data["values"] = values
        channel = self._channels[int(current["channel_id"])]
        return await self._dispatch_interaction(
            3, data, user_id=user_id, channel=channel, message=current, message_type=0
        )

    @staticmethod
    def _modal_components(
        layout: list[dict[str, Any]], values: Mapping[str, str | list[str]]
    ) -> list[dict[str, Any]]:
        known = {c["custom_id"] for c in _walk_components(layout) if "custom_id" in c}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"the modal has no inputs {unknown}; it has {sorted(known)}")
        counter = 0

        def convert(component: dict[str, Any]) -> dict[str, Any]:
            nonlocal counter
            counter += 1
            out: dict[str, Any] = {"type": component["type"], "id": component.get("id", counter)}
            if component["type"] == 1:
                out["components"] = [convert(c) for c in component.get("components", [])]
            elif component["type"] == 18:  # label wrapping an input
                out["component"] = convert(component["component"])
            elif component["type"] == 4:  # text input
                custom_id = component["custom_id"]
                value = str(values.get(custom_id, component.get("value") or ""))
                if component.get("required", True) and not value:
                    raise ValueError(f"text input {custom_id!r} is required")
                low, high = component.get("min_length"), component.get("max_length")
                if value and ((low and len(value) < low) or (high and len(value) > high)):
                    raise ValueError(f"text input {custom_id!r} needs {low}..{high} characters")
                out.update(custom_id=custom_id, value=value)
            elif "custom_id" in component:  # selects inside modals
                picked = values.get(component["custom_id"], [])
                out.update(
                    custom_id=component["custom_id"],
                    values=[picked] if isinstance(picked, str) else list(picked),
                )
            return out

        return [convert(c) for c in layout]

    # ---------------------------------------------------------------- JSON views of the world

    def _user_json(self, user: _User) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(user.id),
            "username": user.username,
            "global_name": user.global_name,
            "avatar": None,
            "discriminator": "0",
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "collectibles": None,
            "primary_guild": None,
        }
        if user.bot:
            data["bot"] = True
        return data

    def _user_pii_json(self, user: _User) -> dict[str, Any]:
        return {
            **self._user_json(user),
            "mfa_enabled": False,
            "locale": "en-US",
            "premium_type": 0,
            "email": None,
            "verified": True,
        }

    def _member_json(self, member: _Member, *, with_user: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(r) for r in member.roles],
            "nick": member.nick,
            "avatar": None,
            "banner": None,
            "joined_at": member.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self._user_json(self._users[member.user_id])
        return data

    def _role_json(self, role: _Role) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(role.id),
            "name": role.name,
            "permissions": str(role.permissions),
            "position": role.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": role.managed,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }
        if role.bot_id is not None:
            data["tags"] = {"bot_id": str(role.bot_id)}
        return data

    def _channel_json(self, channel: _Channel, *, for_user: int | None = None) -> dict[str, Any]:
        last_id = self._last_message_ids.get(channel.id)
        last = str(last_id) if last_id is not None else None
        if channel.guild_id is None:
            recipient = self._users[channel.recipient_id or 0]
            return {
                "id": str(channel.id),
                "type": 1,
                "flags": 0,
                "last_message_id": last,
                "recipients": [self._user_json(recipient)],
            }
        guild = self._guilds[channel.guild_id]
        overwrites = []
        if channel.id in self._denied_channels:
            overwrites.append(
                {
                    "id": str(guild.bot_role_id),
                    "type": 0,
                    "allow": "0",
                    "deny": str(Permissions.DENIED),
                }
            )
        data: dict[str, Any] = {
            "id": str(channel.id),
            "type": channel.type,
            "guild_id": str(channel.guild_id),
            "name": channel.name,
            "position": channel.position,
            "flags": 0,
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "last_message_id": last,
            "rate_limit_per_user": 0,
            "permission_overwrites": overwrites,
        }
        if for_user is not None:
            data["permissions"] = str(self.permissions_of(for_user, channel.id))
        return data

    def _guild_json(self, guild: _Guild) -> dict[str, Any]:
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "description": None,
            "home_header": None,
            "splash": None,
            "discovery_splash": None,
            "features": [],
            "banner": None,
            "owner_id": str(guild.owner_id),
            "application_id": None,
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "widget_enabled": False,
            "widget_channel_id": None,
            "verification_level": 0,
            "roles": [self._role_json(r) for r in guild.roles.values()],
            "default_message_notifications": 0,
            "mfa_level": 0,
            "explicit_content_filter": 0,
            "max_presences": None,
            "max_members": 500000,
            "max_stage_video_channel_users": 50,
            "max_video_channel_users": 25,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "rules_channel_id": None,
            "safety_alerts_channel_id": None,
            "public_updates_channel_id": None,
            "premium_progress_bar_enabled": False,
            "nsfw": False,
            "nsfw_level": 0,
            "emojis": [],
            "stickers": [],
            "incidents_data": None,
        }

    def _guild_create_json(self, guild: _Guild) -> dict[str, Any]:
        return {
            **self._guild_json(guild),
            "joined_at": guild.joined_at,
            "large": False,
            "unavailable": False,
            "lazy": True,
            "member_count": len(guild.members),
            "members": [self._member_json(m) for m in guild.members.values()],
            "channels": [self._channel_json(self._channels[c]) for c in guild.channels],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def _application_json(self) -> dict[str, Any]:
        flags = _APP_COMMAND_BADGE
        for intent, flag in _APP_INTENT_FLAGS.items():
            if self.privileged_intents & intent:
                flags |= flag
        return {
            "id": str(self.application_id),
            "name": self.bot_name,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot": self._user_json(self._users[self.bot_user_id]),
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": hashlib.sha256(self._secret).hexdigest(),
            "flags": flags,
            "flags_new": str(flags),
            "redirect_uris": [],
            "rpc_origins": [],
            "tags": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "event_webhooks_url": None,
            "owner": self._user_json(self._users[self.owner_id]),
            "team": None,
            "approximate_guild_count": len(self._guilds),
            "approximate_user_install_count": 0,
            "approximate_user_authorization_count": 0,
            "explicit_content_filter": 0,
            "eligible_oauth2_scopes": [],
            "integration_types_config": {"0": {}},
        }

    # ---------------------------------------------------------------- messages

    def _store_message(
        self,
        channel: _Channel,
        author: _User,
        fields: Mapping[str, Any],
        *,
        flags: int = 0,
        message_type: int = 0,
        nonce: str | int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        message_id = self._next_id()
        message: dict[str, Any] = {
            "id": str(message_id),
            "type": message_type,
            "channel_id": str(channel.id),
            "author": self._user_json(author),
            "content": "",
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "attachments": [],
            "embeds": [],
            "components": [],
            "timestamp": _snowflake_iso(message_id),
            "edited_timestamp": None,
            "flags": flags,
            "pinned": False,
            "tts": False,
        }
        message.update(fields)
        if nonce is not None:
            message["nonce"] = nonce
        if extra:
            message.update(extra)
        self.messages[message_id] = message
        if not flags & MessageFlags.EPHEMERAL:
            self._last_message_ids[channel.id] = message_id
        return message

    def _compose(
        self,
        payload: Mapping[str, Any],
        uploads: list[_Upload],
        *,
        channel_id: int,
        existing: Mapping[str, Any] | None,
        ephemeral: bool,
        replied_author: int | None = None,
    ) -> dict[str, Any]:
        """Message fields from a create/edit body (``existing`` is the message being edited)."""
        self._check_form(payload, uploads)
        fields: dict[str, Any] = {}
        if existing is None or "content" in payload:
            fields["content"] = payload.get("content") or ""
        attachments = self._compose_attachments(payload, uploads, existing, channel_id, ephemeral)
        if attachments is not None:
            fields["attachments"] = attachments
        else:
            attachments = list((existing or {}).get("attachments", []))
        if existing is None or "embeds" in payload:
            embeds = payload.get("embeds") or []
            fields["embeds"] = [self._embed_response(e, attachments) for e in embeds]
        if existing is None or "components" in payload:
            fields["components"] = _number_components(list(payload.get("components") or []))
        if "content" in fields or replied_author is not None:
            content = fields.get("content", (existing or {}).get("content", ""))
            fields.update(self._mentions(content, payload.get("allowed_mentions"), replied_author))
        return fields

    def _compose_attachments(
        self,
        payload: Mapping[str, Any],
        uploads: list[_Upload],
        existing: Mapping[str, Any] | None,
        channel_id: int,
        ephemeral: bool,
    ) -> list[dict[str, Any]] | None:
        """Discord's rules: listed ids are kept, new files are added, unlisted ones dropped."""
        specs = payload.get("attachments")
        if specs is None and not uploads:
            return None if existing is not None else []
        current = {a["id"]: a for a in (existing or {}).get("attachments", [])}
        by_index = {u.index: u for u in uploads}
        result: list[dict[str, Any]] = []
        used: set[int] = set()

        def new(upload: _Upload, spec: Mapping[str, Any]) -> dict[str, Any]:
            used.add(upload.index)
            return self._make_attachment(
                channel_id,
                spec.get("filename") or upload.filename,
                upload.data,
                description=spec.get("description"),
                ephemeral=ephemeral,
            )

        if specs is None:
            result.extend(current.values())
        else:
            for position, spec in enumerate(specs):
                key = str(spec.get("id"))
                index = _to_int(spec.get("id"))
                if key in current:
                    result.append(current[key])
                elif index is not None and index in by_index:
                    result.append(new(by_index[index], spec))
                else:
                    raise _form_error(
                        f"attachments.{position}.id",
                        "ATTACHMENT_NOT_FOUND",
                        f"Unknown attachment or file index {key}",
                    )
        result.extend(new(u, {}) for u in uploads if u.index not in used)
        if len(result) > _MAX_FILES:
            raise _form_error(
                "attachments", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."
            )
        return result

    def _make_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        *,
        content_type: str | None = "",
        description: str | None = None,
        ephemeral: bool = False,
    ) -> dict[str, Any]:
        attachment_id = self._next_id()
        sniffed, width, height = _image_info(data)
        if content_type == "":  # not given: sniff, then guess from the name like Discord
            content_type = (
                sniffed or mimetypes.guess_type(filename)[0] or "application/octet-stream"
            )
        self._blobs[attachment_id] = _Blob(data, content_type)
        url, proxy_url = self._cdn_urls(channel_id, attachment_id, filename, ephemeral)
        attachment: dict[str, Any] = {
            "id": str(attachment_id),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": proxy_url,
            "flags": 0,
        }
        if content_type is not None:
            attachment["content_type"] = content_type
        if width is not None and height is not None:
            attachment.update(width=width, height=height, placeholder_version=1)
        if description is not None:
            attachment["description"] = description
        if ephemeral:
            attachment["ephemeral"] = True
        return attachment

    def _attachment_by_id(self, value: object) -> dict[str, Any]:
        wanted = str(value)
        for message in [*self.messages.values(), *self.deleted_messages.values()]:
            for attachment in message["attachments"]:
                if attachment["id"] == wanted:
                    return dict(attachment)
        raise ValueError(f"unknown attachment {value!r}; pass the dict from add_attachment()")

    def _cdn_urls(
        self, channel_id: int, attachment_id: int, filename: str, ephemeral: bool
    ) -> tuple[str, str]:
        issued = int(time.time())
        expires, issued_hex = f"{issued + 86400:x}", f"{issued:x}"
        digest = hmac.new(
            self._secret, f"{attachment_id}:{expires}:{issued_hex}".encode(), hashlib.sha256
        ).hexdigest()
        kind = "ephemeral-attachments" if ephemeral else "attachments"
        path = f"{kind}/{channel_id}/{attachment_id}/{quote(filename)}"
        query = f"?ex={expires}&is={issued_hex}&hm={digest}&"
        return f"{self.base_url}/cdn/{path}{query}", f"{self.base_url}/cdn/media/{path}{query}"

    def _embed_response(
        self, embed: Mapping[str, Any], attachments: list[dict[str, Any]]
    ) -> dict[str, Any]:
        by_name = {a["filename"]: a for a in attachments}

        def resolve(url: Any) -> dict[str, Any] | None:
            if isinstance(url, str) and url.startswith("attachment://"):
                return by_name.get(url.removeprefix("attachment://"))
            return None

        out = dict(embed)
        out.setdefault("type", "rich")
        for key in ("image", "thumbnail"):
            media = out.get(key)
            if isinstance(media, dict):
                media = dict(media)
                attachment = resolve(media.get("url"))
                if attachment is not None:
                    media.update(url=attachment["url"], proxy_url=attachment["proxy_url"])
                    for extra in ("width", "height", "content_type"):
                        if extra in attachment:
                            media[extra] = attachment[extra]
                out[key] = media
        for key in ("footer", "author"):
            part = out.get(key)
            if isinstance(part, dict) and (attachment := resolve(part.get("icon_url"))):
                out[key] = {
                    **part,
                    "icon_url": attachment["url"],
                    "proxy_icon_url": attachment["proxy_url"],
                }
        if isinstance(out.get("fields"), list):
            out["fields"] = [{"inline": False, **f} for f in out["fields"]]
        return out

    def _check_form(self, payload: Mapping[str, Any], uploads: list[_Upload]) -> None:
        """The subset of Discord's form validation a bot is likely to trip over."""
        content = payload.get("content")
        if isinstance(content, str) and len(content) > _CONTENT_MAX:
            raise _form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        embeds = payload.get("embeds") or []
        if len(embeds) > 10:
            raise _form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        total = 0
        for index, embed in enumerate(embeds):
            for key, limit in _EMBED_LIMITS.items():
                text = embed.get(key) or ""
                total += len(text)
                if len(text) > limit:
                    raise _form_error(
                        f"embeds.{index}.{key}",
                        "BASE_TYPE_MAX_LENGTH",
                        f"Must be {limit} or fewer in length.",
                    )
            fields = embed.get("fields") or []
            if len(fields) > 25:
                raise _form_error(
                    f"embeds.{index}.fields",
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 25 or fewer in length.",
                )
            total += sum(len(f.get("name", "")) + len(f.get("value", "")) for f in fields)
            total += len((embed.get("footer") or {}).get("text", ""))
            total += len((embed.get("author") or {}).get("name", ""))
        if total > _EMBED_TOTAL_MAX:
            raise _form_error(
                "embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"
            )
        components = payload.get("components") or []
        v2 = bool((payload.get("flags") or 0) & MessageFlags.IS_COMPONENTS_V2)
        if not v2 and len(components) > 5:
            raise _form_error("components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        for index, row in enumerate(components):
            children = row.get("components") or [] if isinstance(row, dict) else []
            if row.get("type") == 1 and len(children) > 5:
                raise _form_error(
                    f"components.{index}.components",
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 5 or fewer in length.",
                )
        for component in _walk_components(components):
            custom_id = component.get("custom_id")
            if custom_id is not None and not 1 <= len(str(custom_id)) <= 100:
                raise _form_error(
                    "components",
                    "BASE_TYPE_BAD_LENGTH",
                    "custom_id must be between 1 and 100 in length.",
                )
        if len(uploads) > _MAX_FILES:
            raise _form_error("files", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")

    @staticmethod
    def _check_not_empty(message: Mapping[str, Any]) -> None:
        if not (
            message.get("content")
            or message.get("embeds")
            or message.get("attachments")
            or message.get("components")
            or message.get("sticker_items")
            or message.get("poll")
        ):
            raise _ApiError(400, 50006, "Cannot send an empty message")

    @staticmethod
    def _check_uploads(uploads: list[_Upload], limit: int) -> None:
        if any(len(u.data) > limit for u in uploads):
            raise _ApiError(413, 40005, "Request entity too large")

    def _mentions(
        self, content: str, allowed: Mapping[str, Any] | None, replied_author: int | None
    ) -> dict[str, Any]:
        parse = set(allowed.get("parse") or []) if allowed is not None else {"users", "roles"}
        allowed_users = {str(u) for u in (allowed or {}).get("users") or []}
        allowed_roles = {str(r) for r in (allowed or {}).get("roles") or []}
        users: list[int] = []
        for match in re.finditer(r"<@!?(\d+)>", content):
            user_id = int(match.group(1))
            permitted = "users" in parse or match.group(1) in allowed_users
            if user_id in self._users and permitted and user_id not in users:
                users.append(user_id)
        replied_ok = allowed is None or allowed.get("replied_user", True)
        if replied_author is not None and replied_ok and replied_author not in users:
            users.append(replied_author)
        roles = [
            m.group(1)
            for m in re.finditer(r"<@&(\d+)>", content)
            if "roles" in parse or m.group(1) in allowed_roles
        ]
        return {
            "mentions": [self._user_json(self._users[u]) for u in users],
            "mention_roles": list(dict.fromkeys(roles)),
        }

    def _reference_object(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """The current version of a message, as nested in ``referenced_message``."""
        current = dict(self.messages.get(int(message["id"]), message))
        current.pop("referenced_message", None)
        return current

    def _reference_json(self, referenced: Mapping[str, Any]) -> dict[str, Any]:
        channel = self._channels.get(int(referenced["channel_id"]))
        reference = {
            "type": 0,
            "channel_id": referenced["channel_id"],
            "message_id": referenced["id"],
        }
        if channel is not None and channel.guild_id is not None:
            reference["guild_id"] = str(channel.guild_id)
        return reference

    def _apply_edit(
        self, message: Mapping[str, Any], payload: Mapping[str, Any], uploads: list[_Upload]
    ) -> dict[str, Any]:
        flags = int(message["flags"])
        fields = self._compose(
            payload,
            uploads,
            channel_id=int(message["channel_id"]),
            existing=message,
            ephemeral=bool(flags & MessageFlags.EPHEMERAL),
        )
        updated = {**message, **fields}
        if payload.get("flags") is not None:
            editable = MessageFlags.EDITABLE
            flags = (flags & ~editable) | (int(payload["flags"]) & editable)
        was_loading = flags & MessageFlags.LOADING
        updated["flags"] = flags & ~MessageFlags.LOADING
        updated["edited_timestamp"] = None if was_loading else _now_iso()
        self._check_not_empty(updated)
        self.messages[int(message["id"])] = updated
        self._emit_message("MESSAGE_UPDATE", updated)
        return updated

    def _delete_message(self, message_id: int) -> None:
        message = self.messages.pop(message_id)
        self.deleted_messages[message_id] = message
        if message["flags"] & MessageFlags.EPHEMERAL:
            return
        channel = self._channels[int(message["channel_id"])]
        data = {"id": message["id"], "channel_id": message["channel_id"]}
        if channel.guild_id is not None:
            data["guild_id"] = str(channel.guild_id)
        self._emit(
            "MESSAGE_DELETE", lambda _s: data, intent=self._message_intent(channel), echo=message
        )

    def _interaction_message(
        self,
        interaction: FakeInteraction,
        fields: Mapping[str, Any],
        *,
        flags: int,
        followup: bool = False,
    ) -> dict[str, Any]:
        channel = self._channels[interaction.channel_id]
        metadata: dict[str, Any] = {
            "id": str(interaction.id),
            "type": interaction.type,
            "user": self._user_json(self._users[interaction.user_id]),
            "authorizing_integration_owners": interaction.payload["authorizing_integration_owners"],
        }
        if interaction.type == 3 and interaction.message_id is not None:
            metadata["interacted_message_id"] = str(interaction.message_id)
        target = interaction.payload["data"].get("target_id")
        if interaction.type == 2 and interaction.payload["data"].get("type") == 3:
            metadata["target_message_id"] = target
        if interaction.type == 5:
            trigger = interaction.triggered_by
            metadata["triggering_interaction_metadata"] = {
                "id": str(trigger.id if trigger else interaction.id),
                "type": trigger.type if trigger else 2,
                "user": metadata["user"],
                "authorizing_integration_owners": metadata["authorizing_integration_owners"],
            }
            if trigger is not None and trigger.type == 3 and trigger.message_id is not None:
                metadata["triggering_interaction_metadata"]["interacted_message_id"] = str(
                    trigger.message_id
                )
        if followup and interaction.original_id is not None:
            metadata["original_response_message_id"] = str(interaction.original_id)
        message = self._store_message(
            channel,
            self._users[self.bot_user_id],
            fields,
            flags=flags,
            message_type=interaction.message_type,
            extra={
                "webhook_id": str(interaction.application_id),
                "application_id": str(interaction.application_id),
                "interaction_metadata": metadata,
            },
        )
        if not flags & MessageFlags.EPHEMERAL:
            self._emit_message("MESSAGE_CREATE", message)
        return message

    # ---------------------------------------------------------------- gateway events

    def _message_intent(self, channel: _Channel) -> int:
        return Intents.GUILD_MESSAGES if channel.guild_id is not None else Intents.DIRECT_MESSAGES

    def _emit(
        self,
        event: str,
        build: Callable[[_Session], Json],
        *,
        intent: int | None = None,
        echo: Mapping[str, Any] | None = None,
    ) -> None:
        """Dispatch to every session (connected, or resumable: then it is buffered)."""
        own = echo is not None and echo["author"]["id"] == str(self.bot_user_id)
        if own and not self.echo_bot_messages:
            return
        for session in list(self._sessions.values()):
            if intent is None or session.intents & intent:
                session.dispatch(event, build(session))

    def _emit_message(self, event: str, message: Mapping[str, Any]) -> None:
        channel = self._channels[int(message["channel_id"])]
        self._emit(
            event,
            lambda session: self._gateway_message(message, channel, session),
            intent=self._message_intent(channel),
            echo=message,
        )

    def _emit_channel_update(self, channel_id: int) -> None:
        channel = self._channels.get(channel_id)
        if channel is not None and channel.guild_id is not None:
            self._emit("CHANNEL_UPDATE", lambda _s: self._channel_json(channel))

    def _content_visible(self, message: Mapping[str, Any], channel: _Channel) -> bool:
        bot = str(self.bot_user_id)
        return (
            channel.guild_id is None
            or message["author"]["id"] == bot
            or any(u["id"] == bot for u in message.get("mentions", []))
        )

    def _gateway_message(
        self, message: Mapping[str, Any], channel: _Channel, session: _Session
    ) -> dict[str, Any]:
        data = dict(message)
        if channel.guild_id is not None:
            data["guild_id"] = str(channel.guild_id)
            member = self._guilds[channel.guild_id].members.get(int(message["author"]["id"]))
            if member is not None and "webhook_id" not in message:
                data["member"] = self._member_json(member, with_user=False)
        if not session.intents & Intents.MESSAGE_CONTENT:
            if not self._content_visible(message, channel):
                data.update(content="", embeds=[], attachments=[], components=[])
                data.pop("poll", None)
            referenced = data.get("referenced_message")
            if isinstance(referenced, dict) and not self._content_visible(referenced, channel):
                data["referenced_message"] = {
                    **referenced, "content": "", "embeds": [], "attachments": [], "components": [],
                }  # fmt: skip
        return data

    async def _flush(self) -> None:
        connections = [s.conn for s in self._sessions.values() if s.conn is not None]
        await asyncio.gather(*(c.flush() for c in connections))

    async def _await_bot(self, timeout: float = 5.0) -> None:
        def connected() -> bool:
            return any(s.conn is not None for s in self._sessions.values())

        if not connected():
            try:
                await self.wait_for(connected, timeout)
            except AssertionError:
                raise AssertionError(
                    f"no bot is connected to the fake gateway ({self.gateway_url}); did the bot "
                    "start, and does DiscordWebSocket.DEFAULT_GATEWAY point at the fake?"
                ) from None

    # ---------------------------------------------------------------- websocket gateway

    async def _handle_gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0, timeout=1.0, compress=False)
        await ws.prepare(request)
        conn = _Connection(ws)
        self._connections.add(conn)
        hello = {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake-discord"]}
        conn.send({"op": 10, "d": hello, "s": None, "t": None})
        try:
            async for frame in ws:
                if frame.type is WSMsgType.TEXT:
                    await self._on_gateway_payload(conn, json.loads(frame.data))
                elif frame.type is WSMsgType.ERROR:
                    break
        finally:
            self._connections.discard(conn)
            await conn.stop()
            session = conn.session
            if session is not None and session.conn is conn:
                session.conn = None
                if ws.close_code in (1000, 1001):  # a clean close ends the session
                    self._sessions.pop(session.id, None)
        return ws

    async def _on_gateway_payload(self, conn: _Connection, payload: dict[str, Any]) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == 1:
            conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(conn, data or {})
        elif op == 6:
            self._resume(conn, data or {})
        elif op == 8 and conn.session is not None:
            self._request_members(conn.session, data or {})
        # op 3 (presence) and op 4 (voice state) are accepted and ignored

    async def _identify(self, conn: _Connection, data: dict[str, Any]) -> None:
        intents = int(data.get("intents", 0))
        self.intents = intents
        if intents & Intents.PRIVILEGED & ~self.privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        self.identify_count += 1
        session = _Session(secrets.token_hex(16), intents)
        self._sessions[session.id] = session
        session.conn, conn.session = conn, session
        application = {"id": str(self.application_id), "flags": self._application_json()["flags"]}
        session.dispatch(
            "READY",
            {
                "v": 10,
                "user": self._user_pii_json(self._users[self.bot_user_id]),
                "guilds": [{"id": str(g), "unavailable": True} for g in self._guilds],
                "session_id": session.id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "application": application,
                "private_channels": [],
                "presences": [],
                "relationships": [],
                "guild_join_requests": [],
                "user_settings": {},
                "shard": list(data.get("shard") or [0, 1]),
                "_trace": ["fake-discord"],
            },
        )
        for guild in self._guilds.values():
            session.dispatch("GUILD_CREATE", self._guild_create_json(guild))

    def _resume(self, conn: _Connection, data: dict[str, Any]) -> None:
        session = self._sessions.get(str(data.get("session_id")))
        seq = int(data.get("seq") or 0)
        oldest = session.buffer[0][0] if session and session.buffer else 1
        if session is None or seq + 1 < oldest:
            conn.send({"op": 9, "d": False, "s": None, "t": None})
            return
        self.resume_count += 1
        session.conn, conn.session = conn, session
        for number, frame in session.buffer:
            if number > seq:
                conn.queue.put_nowait(frame)
        session.dispatch("RESUMED", {"_trace": ["fake-discord"]})

    def _request_members(self, session: _Session, data: dict[str, Any]) -> None:
        guild = self._guilds.get(_to_int(data.get("guild_id")) or 0)
        if guild is None:
            return
        wanted = {int(u) for u in data.get("user_ids") or []}
        query = str(data.get("query") or "").lower()
        limit = int(data.get("limit") or 0) or len(guild.members)
        members = [
            m
            for m in guild.members.values()
            if (
                m.user_id in wanted
                if wanted
                else self._users[m.user_id].username.lower().startswith(query)
            )
        ][:limit]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [self._member_json(m) for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if wanted:
            chunk["not_found"] = [str(u) for u in wanted - set(guild.members)]
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    # ---------------------------------------------------------------- CDN

    async def _handle_cdn(self, request: web.Request) -> web.Response:
        parts = request.match_info["tail"].split("/")
        if parts and parts[0] == "media":
            parts = parts[1:]
        attachment_id = _to_int(parts[2]) if len(parts) == 4 else None
        blob = self._blobs.get(attachment_id or 0)
        query = request.query
        expires, issued = query.get("ex", ""), query.get("is", "")
        expected = hmac.new(
            self._secret, f"{attachment_id}:{expires}:{issued}".encode(), hashlib.sha256
        ).hexdigest()
        valid = (
            blob is not None
            and parts[0] in ("attachments", "ephemeral-attachments")
            and hmac.compare_digest(expected, query.get("hm", ""))
            and int(expires or "0", 16) > time.time()
        )
        self.cdn_requests.append(str(request.rel_url))
        if blob is None or not valid:
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(
            body=blob.data, content_type=blob.content_type or "application/octet-stream"
        )

    # ---------------------------------------------------------------- REST plumbing

    def _build_routes(self) -> dict[str, list[_Route]]:
        r = _Route.make
        webhook = "/webhooks/{application_id}/{token}"
        commands = "/applications/{application_id}/commands"
        guild_commands = "/applications/{application_id}/guilds/{guild_id}/commands"
        message = "/channels/{channel_id}/messages/{message_id}"
        routes = [
            r("GET", "/gateway", self._get_gateway, auth=False),
            r("GET", "/gateway/bot", self._get_gateway),
            r("GET", "/users/@me", self._get_me),
            r("GET", "/users/{user_id}", self._get_user),
            r("POST", "/users/@me/channels", self._create_dm),
            r("GET", "/oauth2/applications/@me", self._get_application),
            r("GET", commands, self._list_commands),
            r("PUT", commands, self._put_commands),
            r("POST", commands, self._upsert_command),
            r("DELETE", commands + "/{command_id}", self._delete_command),
            r("GET", guild_commands, self._list_commands),
            r("PUT", guild_commands, self._put_commands),
            r("POST", guild_commands, self._upsert_command),
            r("DELETE", guild_commands + "/{command_id}", self._delete_command),
            r("GET", "/guilds/{guild_id}", self._get_guild),
            r("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member),
            r("GET", "/channels/{channel_id}", self._get_channel),
            r("GET", "/channels/{channel_id}/messages", self._list_messages),
            r("POST", "/channels/{channel_id}/messages", self._create_message),
            r("GET", message, self._get_message),
            r("PATCH", message, self._edit_message),
            r("DELETE", message, self._delete_channel_message),
            r("POST", "/channels/{channel_id}/typing", self._typing),
            r("PUT", message + "/reactions/{emoji}/@me", self._add_reaction),
            r(
                "POST",
                "/interactions/{interaction_id}/{token}/callback",
                self._callback,
                auth=False,
            ),
            r("POST", webhook, self._execute_webhook, auth=False),
            r("GET", webhook + "/messages/@original", self._get_webhook_message, auth=False),
            r("PATCH", webhook + "/messages/@original", self._edit_webhook_message, auth=False),
            r("DELETE", webhook + "/messages/@original", self._delete_webhook_message, auth=False),
            r("GET", webhook + "/messages/{message_id}", self._get_webhook_message, auth=False),
            r("PATCH", webhook + "/messages/{message_id}", self._edit_webhook_message, auth=False),
            r(
                "DELETE",
                webhook + "/messages/{message_id}",
                self._delete_webhook_message,
                auth=False,
            ),
        ]
        table: dict[str, list[_Route]] = {}
        for route in routes:
            table.setdefault(route.method, []).append(route)
        return table

    def _match(self, method: str, path: str) -> tuple[_Route, dict[str, str]] | None:
        best: tuple[_Route, dict[str, str]] | None = None
        for route in self._routes.get(method, []):
            found = route.regex.fullmatch(path)
            if found and (best is None or route.literals > best[0].literals):
                best = (route, found.groupdict())
        return best

    async def _handle_api(self, request: web.Request) -> web.Response:
        method, path = request.method, "/" + request.match_info["tail"]
        matched = self._match(method, path)
        route = matched[0] if matched else None
        body: Json = None
        uploads: list[_Upload] = []
        headers: dict[str, str] = {}
        try:
            body, uploads = await self._read_body(request)
            if matched is None:
                self.spec_errors.append(f"unhandled {method} {path}")
                raise _ApiError(404, 0, "fake: no route")
            route, params = matched
            authorization = request.headers.get("Authorization", "")
            if route.auth and not authorization.startswith("Bot "):
                raise _ApiError(401, 0, "401: Unauthorized")
            fault = self._take_fault(method, route.template, bool(uploads))
            if fault is not None:
                status, response, headers = self._fault_reply(fault, route.template)
            else:
                req = _Request(method, path, route.template, params, request.query, body, uploads)
                status, response = await route.handler(req)
        except _ApiError as error:
            status, response = error.status, error.body()
        if route is not None:
            headers = {**self._ratelimit_headers(route.template), **headers}
            if self.spec is not None:
                # An injected fault's answer is the test's choice (Discord does send 5xx the
                # spec leaves out): check the bot's request, not that answer.
                checked = (status, response) if fault is None else None
                self._validate(method, route.template, request, body, checked)
        self.calls.append(
            RecordedCall(
                method=method,
                path=path,
                route=route.template if route else path,
                query=dict(request.query),
                json=body,
                files=[(u.filename, u.content_type, u.data) for u in uploads],
                status=status,
                response=response,
                time=asyncio.get_running_loop().time(),
                headers=dict(request.headers),
            )
        )
        if response is None:
            return web.Response(status=status, headers=headers)
        headers["Content-Type"] = "application/json"  # exactly: discord.py wants no charset
        return web.Response(status=status, body=json.dumps(response).encode(), headers=headers)

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Json, list[_Upload]]:
        if not request.body_exists:
            return None, []
        try:
            if request.content_type != "multipart/form-data":
                raw = await request.read()
                return (json.loads(raw) if raw else None), []
            payload: Json = None
            uploads: list[_Upload] = []
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                name = part.name or ""
                if name == "payload_json":
                    payload = json.loads(await part.text())
                elif part.filename is not None:
                    index_match = re.fullmatch(r"files\[(\d+)\]", name)
                    index = int(index_match.group(1)) if index_match else len(uploads)
                    content_type = part.headers.get("Content-Type", "application/octet-stream")
                    data = bytes(await part.read())
                    uploads.append(_Upload(index, part.filename, content_type, data))
                else:
                    payload = payload if isinstance(payload, dict) else {}
                    payload[name] = await part.text()
            return payload, uploads
        except (ValueError, UnicodeDecodeError) as error:
            raise _ApiError(400, 50109, "The request body contains invalid JSON.") from error

    def _validate(
        self,
        method: str,
        template: str,
        request: web.Request,
        body: Json,
        answer: tuple[int, Json] | None,
    ) -> None:
        """Check the request body, and the answer (status, body) unless it is None."""
        assert self.spec is not None
        problems = self.spec.problems(
            method,
            template,
            request_body=body,
            content_type=request.content_type,
            status=answer[0] if answer else None,
            response_body=answer[1] if answer else None,
        )
        self.spec_errors.extend(f"{method} {template}: {p}" for p in problems)

    def _take_fault(self, method: str, template: str, has_files: bool) -> _FaultRule | None:
        normalized = _normalize_template(template)
        for rule in self._faults:
            if rule.with_files and not has_files:
                continue
            if rule.method == method and rule.route == normalized:
                rule.times -= 1
                if rule.times <= 0:
                    self._faults.remove(rule)
                return rule
        return None

    def _fault_reply(self, rule: _FaultRule, template: str) -> tuple[int, Json, dict[str, str]]:
        message = rule.message or f"{rule.status}: {http.HTTPStatus(rule.status).phrase}"
        if rule.status != 429:
            return rule.status, {"code": rule.code, "message": message}, {}
        retry_after = rule.retry_after if rule.retry_after is not None else 0.01
        headers = {
            **self._ratelimit_headers(template),
            "Via": "1.1 google",
            "Retry-After": str(max(1, int(retry_after + 0.999))),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Scope": "user",
        }
        body = {
            "message": rule.message or "You are being rate limited.",
            "retry_after": retry_after,
            "global": False,
            "code": rule.code,
        }
        return 429, body, headers

    def _ratelimit_headers(self, template: str) -> dict[str, str]:
        bucket = hashlib.sha256(_normalize_template(template).encode()).hexdigest()[:32]
        reset_after = self.ratelimit_reset_after
        return {
            "X-RateLimit-Limit": str(self.ratelimit_limit),
            "X-RateLimit-Remaining": str(self.ratelimit_limit - 1),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        }

    # ---------------------------------------------------------------- lookups

    def _guild(self, guild_id: int | None) -> _Guild:
        guild = self._guilds.get(guild_id if guild_id is not None else self.guild_id)
        if guild is None:
            raise ValueError(f"unknown guild {guild_id}")
        return guild

    def _user_or_fail(self, user_id: int) -> _User:
        if user_id not in self._users:
            raise ValueError(f"unknown user {user_id}; add_member() first")
        return self._users[user_id]

    def _place(self, guild_id: int | None, channel_id: int | None) -> _Channel:
        if channel_id is not None:
            channel = self._channels.get(channel_id)
            if channel is None:
                raise ValueError(f"unknown channel {channel_id}")
            if guild_id is not None and channel.guild_id != guild_id:
                raise ValueError(f"channel {channel_id} is not in guild {guild_id}")
            return channel
        if guild_id is not None:
            guild = self._guild(guild_id)
            if not guild.channels:
                raise ValueError(f"guild {guild_id} has no channel; add_channel() first")
            return self._channels[guild.channels[0]]
        return self._channels[self.channel_id]

    def _ensure_member(self, user_id: int, channel: _Channel) -> _User:
        """Unknown users become members with default permissions (or DM partners)."""
        if channel.guild_id is None:
            return self._user_or_fail(user_id)
        if user_id not in self._guilds[channel.guild_id].members:
            name = self._users[user_id].username if user_id in self._users else f"user{user_id}"
            self.add_member(user_id, guild_id=channel.guild_id, name=name)
        return self._users[user_id]

    def _app_permissions(self, channel: _Channel) -> int:
        if channel.guild_id is None:
            return Permissions.BASIC
        return self.permissions_of(self.bot_user_id, channel.id)

    def _find_command(
        self, name: str, command_type: int, guild_id: int | None
    ) -> dict[str, Any] | None:
        candidates = [*self.commands_guild.get(guild_id or 0, []), *self.commands_global]
        return next(
            (c for c in candidates if c["name"] == name and c.get("type", 1) == command_type), None
        )

    def _param_id(self, req: _Request, name: str, kind: str) -> int:
        value = _to_int(req.params[name])
        if value is None:
            raise _unknown(kind)
        return value

    def _channel_param(self, req: _Request) -> _Channel:
        channel = self._channels.get(self._param_id(req, "channel_id", "Channel"))
        if channel is None:
            raise _unknown("Channel")
        return channel

    def _channel_message_param(self, req: _Request) -> dict[str, Any]:
        """A message reachable by the channel routes (ephemeral ones are not)."""
        channel = self._channel_param(req)
        message = self.messages.get(self._param_id(req, "message_id", "Message"))
        if (
            message is None
            or message["channel_id"] != str(channel.id)
            or message["flags"] & MessageFlags.EPHEMERAL
        ):
            raise _unknown("Message")
        return message

    def _check_application(self, req: _Request) -> None:
        if req.params["application_id"] != str(self.application_id):
            raise _ApiError(
                403, 20012, "You are not authorized to perform this action on this application"
            )

    # ---------------------------------------------------------------- REST: login & lookups

    async def _get_gateway(self, req: _Request) -> _Reply:
        if req.route.endswith("/bot"):
            limit = {
                "total": 1000,
                "remaining": 999,
                "reset_after": 86_400_000,
                "max_concurrency": 1,
            }
            return 200, {"url": self.gateway_url, "shards": 1, "session_start_limit": limit}
        return 200, {"url": self.gateway_url}

    async def _get_me(self, req: _Request) -> _Reply:
        return 200, self._user_pii_json(self._users[self.bot_user_id])

    async def _get_application(self, req: _Request) -> _Reply:
        return 200, self._application_json()

    async def _get_user(self, req: _Request) -> _Reply:
        user = self._users.get(self._param_id(req, "user_id", "User"))
        if user is None:
            raise _unknown("User")
        return 200, self._user_json(user)

    async def _create_dm(self, req: _Request) -> _Reply:
        recipient = _to_int(req.body().get("recipient_id"))
        if recipient is None or recipient not in self._users:
            raise _unknown("User")
        return 200, self._channel_json(self._channels[self.dm_channel(recipient)])

    async def _get_guild(self, req: _Request) -> _Reply:
        guild = self._guilds.get(self._param_id(req, "guild_id", "Guild"))
        if guild is None:
            raise _unknown("Guild")
        data = self._guild_json(guild)
        if req.flag("with_counts"):
            data.update(approximate_member_count=len(guild.members), approximate_presence_count=0)
        return 200, data

    async def _get_member(self, req: _Request) -> _Reply:
        guild = self._guilds.get(self._param_id(req, "guild_id", "Guild"))
        if guild is None:
            raise _unknown("Guild")
        member = guild.members.get(self._param_id(req, "user_id", "Member"))
        if member is None:
            raise _unknown("Member")
        return 200, self._member_json(member)

    async def _get_channel(self, req: _Request) -> _Reply:
        return 200, self._channel_json(self._channel_param(req))

    # ---------------------------------------------------------------- REST: commands

    def _command_store(self, req: _Request) -> list[dict[str, Any]]:
        self._check_application(req)
        if "guild_id" not in req.params:
            return self.commands_global
        guild_id = self._param_id(req, "guild_id", "Guild")
        if guild_id not in self._guilds:
            raise _unknown("Guild")
        return self.commands_guild.setdefault(guild_id, [])

    def _command_response(
        self,
        definition: Mapping[str, Any],
        guild_id: str | None,
        previous: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        permissions = definition.get("default_member_permissions")
        command: dict[str, Any] = {
            "id": previous["id"] if previous else str(self._next_id()),
            "application_id": str(self.application_id),
            "version": str(self._next_id()),
            "default_member_permissions": None if permissions is None else str(permissions),
            "type": definition.get("type", 1),
            "name": definition["name"],
            "description": definition.get("description", ""),
            "dm_permission": definition.get("dm_permission", True),
            "nsfw": bool(definition.get("nsfw", False)),
            "integration_types": definition.get("integration_types") or [0],
            "contexts": definition.get("contexts"),
        }
        for key in ("name_localizations", "description_localizations"):
            if definition.get(key):
                command[key] = definition[key]
        if definition.get("options"):
            command["options"] = [self._option_response(o) for o in definition["options"]]
        if guild_id is not None:
            command["guild_id"] = guild_id
        return command

    def _option_response(self, option: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in option.items() if v is not None}
        if out.get("options"):
            out["options"] = [self._option_response(o) for o in out["options"]]
        else:
            out.pop("options", None)
        return out

    async def _list_commands(self, req: _Request) -> _Reply:
        return 200, list(self._command_store(req))

    async def _put_commands(self, req: _Request) -> _Reply:
        store = self._command_store(req)
        if not isinstance(req.json, list):
            raise _form_error("_root", "LIST_TYPE_CONVERT", "Must be an array.")
        previous = {(c["name"], c["type"]): c for c in store}
        guild_id = req.params.get("guild_id")
        commands = [
            self._command_response(d, guild_id, previous.get((d["name"], d.get("type", 1))))
            for d in req.json
        ]
        store[:] = commands
        return 200, commands

    async def _upsert_command(self, req: _Request) -> _Reply:
        store = self._command_store(req)
        definition = req.body()
        key = (definition.get("name"), definition.get("type", 1))
        previous = next((c for c in store if (c["name"], c["type"]) == key), None)
        command = self._command_response(definition, req.params.get("guild_id"), previous)
        if previous is not None:
            store[store.index(previous)] = command
            return 200, command
        store.append(command)
        return 201, command

    async def _delete_command(self, req: _Request) -> _Reply:
        store = self._command_store(req)
        found = next((c for c in store if c["id"] == req.params["command_id"]), None)
        if found is None:
            raise _unknown("application command")
        store.remove(found)
        return 204, None

    # ---------------------------------------------------------------- REST: channel messages

    async def _list_messages(self, req: _Request) -> _Reply:
        channel = self._channel_param(req)
        limit = max(1, min(100, int(req.query.get("limit", "50"))))
        messages = self.channel_messages(channel.id)
        before, after = _to_int(req.query.get("before")), _to_int(req.query.get("after"))
        around = _to_int(req.query.get("around"))
        if before is not None:
            messages = [m for m in messages if int(m["id"]) < before]
        if after is not None:
            messages = [m for m in messages if int(m["id"]) > after][:limit]
        if around is not None:
            older = [m for m in messages if int(m["id"]) <= around][-(limit // 2 + 1) :]
            newer = [m for m in messages if int(m["id"]) > around][: limit - len(older)]
            messages = older + newer
        return 200, list(reversed(messages[-limit:]))  # newest first, like Discord

    async def _create_message(self, req: _Request) -> _Reply:
        channel = self._channel_param(req)
        if channel.id in self._denied_channels:
            raise _ApiError(403, 50013, "Missing Permissions")
        self._check_uploads(req.uploads, self.upload_limit)
        payload = req.body()
        nonce = payload.get("nonce")
        key = (channel.id, self.bot_user_id, str(nonce))
        now = time.monotonic()
        if nonce is not None and payload.get("enforce_nonce"):
            seen = self._nonces.get(key)
            if seen and now - seen[1] < NONCE_WINDOW_SECONDS and seen[0] in self.messages:
                return 200, self.messages[seen[0]]
        extra: dict[str, Any] = {}
        replied_author: int | None = None
        reference = payload.get("message_reference")
        message_type = 0
        if isinstance(reference, dict) and reference.get("message_id") is not None:
            referenced = self.messages.get(_to_int(reference["message_id"]) or 0)
            if referenced is not None and not referenced["flags"] & MessageFlags.EPHEMERAL:
                referenced = self._reference_object(referenced)
                message_type = 19
                extra["message_reference"] = self._reference_json(referenced)
                extra["referenced_message"] = referenced
                replied_author = int(referenced["author"]["id"])
            elif reference.get("fail_if_not_exists", True):
                raise _form_error(
                    "message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                )
        fields = self._compose(
            payload,
            req.uploads,
            channel_id=channel.id,
            existing=None,
            ephemeral=False,
            replied_author=replied_author,
        )
        flags = int(payload.get("flags") or 0) & MessageFlags.SETTABLE
        candidate = {**fields, "flags": flags}
        self._check_not_empty(candidate)
        message = self._store_message(
            channel,
            self._users[self.bot_user_id],
            fields,
            flags=flags,
            message_type=message_type,
            nonce=nonce,
            extra=extra,
        )
        if nonce is not None:
            self._nonces[key] = (int(message["id"]), now)
        self._emit_message("MESSAGE_CREATE", message)
        return 200, message

    async def _get_message(self, req: _Request) -> _Reply:
        return 200, self._channel_message_param(req)

    async def _edit_message(self, req: _Request) -> _Reply:
        message = self._channel_message_param(req)
        if int(message["channel_id"]) in self._denied_channels:
            raise _ApiError(403, 50013, "Missing Permissions")
        if message["author"]["id"] != str(self.bot_user_id):
            raise _ApiError(403, 50005, "Cannot edit a message authored by another user")
        self._check_uploads(req.uploads, self.upload_limit)
        return 200, self._apply_edit(message, req.body(), req.uploads)

    async def _delete_channel_message(self, req: _Request) -> _Reply:
        message = self._channel_message_param(req)
        self._delete_message(int(message["id"]))
        return 204, None

    async def _typing(self, req: _Request) -> _Reply:
        self._channel_param(req)
        return 204, None

    async def _add_reaction(self, req: _Request) -> _Reply:
        self._channel_message_param(req)
        return 204, None

    # ---------------------------------------------------------------- REST: interactions

    async def _callback(self, req: _Request) -> _Reply:
        interaction = self._interactions_by_id.get(_to_int(req.params["interaction_id"]) or 0)
        if interaction is None or interaction.token != req.params["token"]:
            raise _unknown("interaction")
        age = asyncio.get_running_loop().time() - interaction.created_at
        if interaction.callbacks:
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        if interaction.expired or age > self.interaction_response_deadline:
            raise _unknown("interaction")
        body = req.body()
        callback_type = body.get("type")
        handlers: dict[Any, Callable[[FakeInteraction, dict[str, Any], list[_Upload]], Json]] = {
            4: self._callback_message,
            5: self._callback_defer,
            6: self._callback_defer_update,
            7: self._callback_update,
            8: self._callback_autocomplete,
            9: self._callback_modal,
        }
        handler = handlers.get(callback_type)
        if handler is None:
            raise _form_error(
                "type", "BASE_TYPE_CHOICES", f"Value must be one of {sorted(handlers)}."
            )
        self._check_uploads(req.uploads, interaction.attachment_size_limit)
        message = handler(interaction, body.get("data") or {}, req.uploads)
        interaction._acknowledge(body)
        if not req.flag("with_response"):
            return 204, None
        result: dict[str, Any] = {"id": str(interaction.id), "type": interaction.type}
        if callback_type in (4, 5, 7) and message is not None:
            result.update(
                response_message_id=message["id"],
                response_message_loading=callback_type == 5,
                response_message_ephemeral=bool(message["flags"] & MessageFlags.EPHEMERAL),
            )
        response: dict[str, Any] = {"interaction": result}
        if callback_type in (4, 7):
            response["resource"] = {"type": callback_type, "message": message}
        return 200, response

    def _callback_message(
        self, interaction: FakeInteraction, data: dict[str, Any], uploads: list[_Upload]
    ) -> Json:
        flags = int(data.get("flags") or 0) & (MessageFlags.SETTABLE | MessageFlags.EPHEMERAL)
        fields = self._compose(
            data,
            uploads,
            channel_id=interaction.channel_id,
            existing=None,
            ephemeral=bool(flags & MessageFlags.EPHEMERAL),
        )
        self._check_not_empty(fields)
        message = self._interaction_message(interaction, fields, flags=flags)
        interaction.original_id = int(message["id"])
        return message

    def _callback_defer(
        self, interaction: FakeInteraction, data: dict[str, Any], uploads: list[_Upload]
    ) -> Json:
        flags = MessageFlags.LOADING | (int(data.get("flags") or 0) & MessageFlags.EPHEMERAL)
        message = self._interaction_message(interaction, {}, flags=flags)
        interaction.original_id = int(message["id"])
        return message

    def _component_message(self, interaction: FakeInteraction) -> dict[str, Any]:
        message = self.messages.get(interaction.message_id or 0)
        if message is None:
            raise _ApiError(400, 40032, "This interaction has no message to update")
        return message

    def _callback_defer_update(
        self, interaction: FakeInteraction, data: dict[str, Any], uploads: list[_Upload]
    ) -> Json:
        if interaction.type == 5 and interaction.message_id is None:
            return None  # acknowledging a modal opened by a slash command just closes it
        interaction.original_id = int(self._component_message(interaction)["id"])
        return None

    def _callback_update(
        self, interaction: FakeInteraction, data: dict[str, Any], uploads: list[_Upload]
    ) -> Json:
        message = self._apply_edit(self._component_message(interaction), data, uploads)
        interaction.original_id = int(message["id"])
        return message

    def _callback_autocomplete(
        self, interaction: FakeInteraction, data: dict[str, Any], uploads: list[_Upload]
    ) -> Json:
        interaction.autocomplete_choices = list(data.get("choices") or [])
        return None

    def _callback_modal(
        self, interaction: FakeInteraction, data: dict[str, Any], uploads: list[_Upload]
    ) -> Json:
        if interaction.type == 5:
            raise _ApiError(400, 50035, "Invalid Form Body: a modal cannot open another modal")
        interaction.modal = data
        return None

    def _webhook_interaction(self, req: _Request) -> FakeInteraction:
        token = req.params["token"]
        interaction = self._interactions_by_token.get(token)
        if token in self._expired_tokens:
            raise _ApiError(401, 50027, "Invalid Webhook Token")
        if interaction is None or req.params["application_id"] != str(interaction.application_id):
            raise _unknown("Webhook")
        age = asyncio.get_running_loop().time() - interaction.created_at
        if interaction.expired or age > self.interaction_token_lifetime:
            raise _ApiError(401, 50027, "Invalid Webhook Token")
        return interaction

    def _webhook_message(self, req: _Request, interaction: FakeInteraction) -> dict[str, Any]:
        if "message_id" in req.params:
            message_id = _to_int(req.params["message_id"])
            if message_id != interaction.original_id and message_id not in interaction.followup_ids:
                raise _unknown("Message")
        else:
            message_id = interaction.original_id
        message = self.messages.get(message_id or 0)
        if message is None:
            raise _unknown("Message")
        return message

    async def _execute_webhook(self, req: _Request) -> _Reply:
        interaction = self._webhook_interaction(req)
        if not interaction.callbacks:
            raise _unknown("Webhook")
        self._check_uploads(req.uploads, interaction.attachment_size_limit)
        payload = req.body()
        original = interaction.original
        if original is not None and original["flags"] & MessageFlags.LOADING:
            # Discord: the first follow-up after a deferral edits the "thinking" message.
            message = self._apply_edit(original, payload, req.uploads)
        else:
            flags = int(payload.get("flags") or 0) & (
                MessageFlags.SETTABLE | MessageFlags.EPHEMERAL
            )
            fields = self._compose(
                payload,
                req.uploads,
                channel_id=interaction.channel_id,
                existing=None,
                ephemeral=bool(flags & MessageFlags.EPHEMERAL),
            )
            self._check_not_empty(fields)
            message = self._interaction_message(interaction, fields, flags=flags, followup=True)
            interaction.followup_ids.append(int(message["id"]))
        return (200, message) if req.flag("wait") else (204, None)

    async def _get_webhook_message(self, req: _Request) -> _Reply:
        interaction = self._webhook_interaction(req)
        return 200, self._webhook_message(req, interaction)

    async def _edit_webhook_message(self, req: _Request) -> _Reply:
        interaction = self._webhook_interaction(req)
        message = self._webhook_message(req, interaction)
        self._check_uploads(req.uploads, interaction.attachment_size_limit)
        return 200, self._apply_edit(message, req.body(), req.uploads)

    async def _delete_webhook_message(self, req: _Request) -> _Reply:
        interaction = self._webhook_interaction(req)
        message = self._webhook_message(req, interaction)
        self._delete_message(int(message["id"]))
        return 204, None
