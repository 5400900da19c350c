"""Access control: who is calling, and whether they may call this route.

Every route declares exactly one :class:`Access` dependency in its decorator
(``dependencies=[AdminOnly]``); the dependency runs before the route reads
its body, so a refused request changes nothing and costs no backend work.

- :data:`Public`: no credentials (probes, login, logout).
- :data:`AnyCaller`: any valid caller (the shared collection: images,
  tags, thumbnails, /tag, /trainerstatus...).
- :data:`ActsAs`: any valid caller, but a user token acts only as its own
  user: a ``user`` parameter naming someone else, or ``all``, is a 403, and
  an absent one means the caller. The query string is checked here; a
  ``user`` in a form or JSON body is checked where the route parses it
  (:func:`scoped_user`, called by ``params.user``/``params.user_or_all``),
  which is still before any RPC.
- :data:`AdminOnly`: admin tokens only.
- The ``...Changing`` variants are GET routes that change state: a cookie
  session alone may not call them (a cross-site link could), only a token in
  the ``Authorization`` header.

Credentials are ``Authorization: Bearer <token>`` or the ``tagrate_session``
cookie set by /login: a random session id stored (hashed) by the dataset
service, never the token; /logout and revoking the token end it (HttpOnly,
SameSite=Strict; an unsafe method through a cookie must also carry a
same-origin ``Origin``). Tokens are verified by
the dataset service by their SHA-256 hash and cached here for
``GATEWAY_AUTH_CACHE_SECONDS``, so a revocation on another replica takes
effect within that time (on this replica at once). Failed token uses and
logins are limited per client address (``GATEWAY_AUTH_FAILURES_PER_MINUTE``;
the address is the TCP peer unless it is a ``GATEWAY_TRUSTED_PROXIES``
proxy); a valid token is never refused by the limiter (see clients.py).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc
from fastapi import Depends, Request

from tagrate_common import validation
from tagrate_common.errors import NotFound, TagrateError
from tagrate_common.protos import sessions_pb2, tokens_pb2

from .clients import FailureLimiter, ProxyTrust, TooManyFailures, client_address, forwarded, request_is_https

__all__ = [  # the client-address helpers live in clients.py; routes import them from here
    "FailureLimiter",
    "ProxyTrust",
    "TooManyFailures",
    "client_address",
    "request_is_https",
]

if TYPE_CHECKING:
    from tagrate_common.grpc_client import AsyncBackend

    from .config import GatewaySettings

log = logging.getLogger("tagrate_gateway.auth")

SESSION_COOKIE = "tagrate_session"
# The cookie's session id: 256 random bits (the token itself never goes into a cookie).
SESSION_ID_BYTES = 32
# An admin token set by hand must be as hard to guess as a generated one
# (22 URL-safe characters carry 128 bits).
MIN_ADMIN_TOKEN_CHARS = 22
# Verified tokens kept at most; the cache starts over when it is full.
MAX_CACHED_TOKENS = 10_000
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Unauthorized(TagrateError):
    kind = "unauthenticated"
    grpc_status = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    default_code = "unauthorized"


class Forbidden(TagrateError):
    kind = "permission_denied"
    grpc_status = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403
    default_code = "forbidden"


@dataclass(frozen=True)
class Caller:
    """A verified caller: admin, or one user (``user``)."""

    user: str | None
    admin: bool
    token_id: str | None = None
    expires_at: datetime | None = None
    via_cookie: bool = False


# Access control off: every caller may do everything.
NO_AUTH_CALLER = Caller(user=None, admin=True)
_caller_var: ContextVar[Caller | None] = ContextVar("tagrate_caller", default=None)


def token_digest(token: str) -> str:
    """Lowercase hex SHA-256 of a token: what the dataset service stores."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def private_to(owner: str | None) -> bool:
    """Whether data belonging to ``owner`` (a user name; None: nobody's)
    must be hidden from the current caller: a user token sees only its own
    user's entries, admin (and access control off) sees everything."""
    caller = _caller_var.get()
    if caller is None or caller.admin:
        return False
    return owner != caller.user


def scoped_user(value: str | None, param: str = "user") -> str | None:
    """The ``user`` parameter as the current caller may use it: unchanged
    for admin (or with access control off), the caller's own name when
    absent for a user token; 403 when a user token names another user or
    ``all``."""
    caller = _caller_var.get()
    if caller is None or caller.admin:
        return value
    if value is None or value.strip() == "":
        return caller.user
    if value.strip().lower() == validation.ALL_USERS:
        raise Forbidden(f"'{param}=all' needs an admin token; this token acts only for {caller.user}")
    if value.strip() != caller.user:
        raise Forbidden(f"this token acts only for user {caller.user!r}, not {value.strip()[:64]!r}")
    return value


class Authenticator:
    """Verifies tokens (the bootstrap admin token, else the dataset
    service by hash, cached for ``auth_cache_seconds``)."""

    def __init__(self, settings: GatewaySettings, dataset: AsyncBackend[Any]) -> None:
        self.enabled = settings.auth_enabled
        self.cache_seconds = settings.auth_cache_seconds
        self.dataset = dataset
        self.limiter = FailureLimiter(settings.auth_failures_per_minute)
        self.allowed_origins = frozenset(o for o in settings.cors_origin_list if o != "*")
        admin = settings.admin_token_value()
        if admin is not None and len(admin) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(f"GATEWAY_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters")
        self._admin_digest = token_digest(admin) if admin else None
        self._cache: dict[str, tuple[Caller, float]] = {}

    def forget(self, token_id: str) -> None:
        """Drops a revoked token from this replica's cache."""
        for digest, (caller, _) in list(self._cache.items()):
            if caller.token_id == token_id:
                self._cache.pop(digest, None)

    async def verify(self, token: str, address: str, via_cookie: bool = False) -> Caller:
        """The caller ``token`` stands for; 401 for an unknown, revoked or
        expired token (a failure counted against ``address``), 429 when the
        address has failed too often."""
        digest = token_digest(token)
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return Caller(user=None, admin=True, via_cookie=via_cookie)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            caller = cached[0]
            if caller.expires_at is None or caller.expires_at > datetime.now(UTC):
                return caller if caller.via_cookie == via_cookie else _with_cookie(caller, via_cookie)
        try:
            reply = await self.dataset.stub.tokens.AuthenticateToken(
                tokens_pb2.AuthenticateTokenRequest(token_sha256=digest)
            )
        except NotFound:
            # Checked only now: a valid token is never refused, whatever
            # others sent from the same address.
            self.failed(address)
            raise Unauthorized("the token is not valid (unknown, revoked or expired)") from None
        caller = Caller(
            user=reply.user if reply.HasField("user") else None,
            admin=reply.admin,
            token_id=reply.id,
            expires_at=reply.expires_at.ToDatetime(UTC) if reply.HasField("expires_at") else None,
            via_cookie=via_cookie,
        )
        if self.cache_seconds > 0:
            if len(self._cache) >= MAX_CACHED_TOKENS:
                self._cache.clear()
            self._cache[digest] = (caller, now + self.cache_seconds)
        return caller

    async def start_session(self, caller: Caller, max_age_seconds: int) -> str:
        """A new browser session acting for ``caller`` (verified just now):
        its random id, of which the dataset service stores only the hash."""
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        request = sessions_pb2.CreateSessionRequest(
            session_sha256=token_digest(session_id), max_age_seconds=max(0, max_age_seconds)
        )
        if caller.token_id is not None:
            request.token_id = caller.token_id
        elif self._admin_digest is not None:
            request.bootstrap_check = token_digest(self._admin_digest)
        else:  # access control off: nothing to remember
            return session_id
        await self.dataset.stub.sessions.CreateSession(request)
        return session_id

    async def verify_session(self, session_id: str, address: str) -> Caller:
        """The caller a session cookie stands for; 401 for an unknown,
        ended or expired session (counted as a failure)."""
        digest = token_digest(session_id)
        now = time.monotonic()
        cached = self._cache.get("s:" + digest)
        if cached is not None and cached[1] > now:
            caller = cached[0]
            if caller.expires_at is None or caller.expires_at > datetime.now(UTC):
                return caller
        try:
            reply = await self.dataset.stub.sessions.AuthenticateSession(
                sessions_pb2.AuthenticateSessionRequest(session_sha256=digest)
            )
        except NotFound:
            self.failed(address)
            raise Unauthorized(
                "the session has ended (logged out, its token revoked, or expired); log in again"
            ) from None
        if not reply.HasField("token_id") and (
            self._admin_digest is None
            or not hmac.compare_digest(reply.bootstrap_check, token_digest(self._admin_digest))
        ):
            self.failed(address)
            raise Unauthorized("the session's admin token is no longer configured; log in again")
        caller = Caller(
            user=reply.user if reply.HasField("user") else None,
            admin=reply.admin,
            token_id=reply.token_id if reply.HasField("token_id") else None,
            expires_at=reply.expires_at.ToDatetime(UTC) if reply.HasField("expires_at") else None,
            via_cookie=True,
        )
        if self.cache_seconds > 0:
            if len(self._cache) >= MAX_CACHED_TOKENS:
                self._cache.clear()
            self._cache["s:" + digest] = (caller, now + self.cache_seconds)
        return caller

    async def end_session(self, session_id: str) -> None:
        digest = token_digest(session_id)
        self._cache.pop("s:" + digest, None)
        if self.enabled:
            await self.dataset.stub.sessions.DeleteSession(sessions_pb2.DeleteSessionRequest(session_sha256=digest))

    def failed(self, address: str) -> None:
        """Counts a failed attempt from ``address``: 429 once it has failed
        too often this minute, else the caller raises its 401."""
        self.limiter.check(address)
        self.limiter.fail(address)


def _with_cookie(caller: Caller, via_cookie: bool) -> Caller:
    return Caller(caller.user, caller.admin, caller.token_id, caller.expires_at, via_cookie)


def _own_origin(request: Request) -> str:
    host = forwarded(request, "x-forwarded-host") or request.headers.get("host", "")
    return f"{'https' if request_is_https(request) else 'http'}://{host.split(',')[0].strip()}".lower()


def check_same_site(request: Request, allowed_origins: frozenset[str]) -> None:
    """403 unless an unsafe request comes from the gateway's own origin (or
    a listed CORS origin): its ``Origin``, else ``Sec-Fetch-Site:
    same-origin``. Browsers send one of them with every POST; a request with
    neither cannot be told from a cross-site one and is refused."""
    origin = request.headers.get("origin")
    if origin is not None:
        if origin.lower() == _own_origin(request) or origin in allowed_origins:
            return
        raise Forbidden(f"a cross-site request ({origin[:100]}) cannot change anything through a browser session")
    if request.headers.get("sec-fetch-site", "").lower() == "same-origin":
        return
    raise Forbidden("a browser session must send an Origin header with a request that changes something")


async def authenticate(request: Request) -> Caller:
    """The request's caller (:data:`NO_AUTH_CALLER` with access control
    off); 401 without valid credentials, 429 after too many failures. A
    cookie session's unsafe request must be same-site (403)."""
    auth: Authenticator = request.app.state.auth
    if not auth.enabled:
        return NO_AUTH_CALLER
    address = client_address(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            auth.failed(address)
            raise Unauthorized("send the token as 'Authorization: Bearer <token>'")
        return await auth.verify(token.strip(), address)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        caller = await auth.verify_session(cookie, address)
        if request.method in UNSAFE_METHODS:
            check_same_site(request, auth.allowed_origins)
        return caller
    raise Unauthorized("this endpoint needs credentials: 'Authorization: Bearer <token>' or a login session")


class Access:
    """The one access rule of a route (see the module docstring). Used as a
    dependency: ``dependencies=[AdminOnly]``."""

    def __init__(self, scope: str, changes_state_on_get: bool = False) -> None:
        assert scope in ("public", "any", "user", "admin")
        self.scope = scope
        self.changes_state_on_get = changes_state_on_get

    def __repr__(self) -> str:
        return f"Access({self.scope!r}, changes_state_on_get={self.changes_state_on_get})"

    async def __call__(self, request: Request) -> Caller | None:
        if self.scope == "public":
            return None
        caller = await authenticate(request)
        if caller.via_cookie and self.changes_state_on_get and request.method == "GET":
            raise Forbidden(
                f"GET {request.url.path} changes state: use POST from a browser session, or a token in the "
                "Authorization header"
            )
        if self.scope == "admin" and not caller.admin:
            raise Forbidden("this endpoint needs an admin token")
        # Seen by params.user/user_or_all wherever the route parses a user.
        _caller_var.set(caller)
        if self.scope == "user" and not caller.admin:
            # A foreign user in the query string is refused now; body fields
            # as the route parses them, which is still before any RPC.
            for value in request.query_params.getlist("user"):
                scoped_user(value)
        request.state.caller = caller
        return caller


Public = Depends(Access("public"))
AnyCaller = Depends(Access("any"))
ActsAs = Depends(Access("user"))
ActsAsChanging = Depends(Access("user", changes_state_on_get=True))
AdminOnly = Depends(Access("admin"))
AdminOnlyChanging = Depends(Access("admin", changes_state_on_get=True))


def api_routes(routes: list[Any]) -> list[Any]:
    """Every ``APIRoute`` among ``routes``, looking inside included routers
    (FastAPI includes a router lazily, as one entry of ``app.routes``)."""
    from fastapi.routing import APIRoute

    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found += api_routes(route.original_router.routes)
    return found


def route_access(route: Any) -> list[Access]:
    """The access rules a route declares (exactly one for every API route)."""
    return [dep.call for dep in route.dependant.dependencies if isinstance(dep.call, Access)]


def document_access(routes: list[Any]) -> None:
    """Adds the 401/403/429 answers of each route's access rule to its
    OpenAPI description (call after the routers are included)."""
    from .errors import ErrorBody

    meaning = {
        401: "No valid credentials (`unauthorized`); nothing is read or changed.",
        403: "The caller may not do this (`forbidden`); nothing changes.",
        429: "Too many failed logins or token uses from this address (`too_many_requests`).",
    }
    for route in api_routes(routes):
        rules = route_access(route)
        if not rules or rules[0].scope == "public":
            continue
        statuses = (401, 429) if rules[0].scope == "any" and not rules[0].changes_state_on_get else (401, 403, 429)
        for status in statuses:
            route.responses.setdefault(status, {"model": ErrorBody, "description": meaning[status]})
