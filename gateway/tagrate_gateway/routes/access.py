"""Access control endpoints: /login, /logout, /whoami (the browser UI's
session) and token management /tokens (admin; dataset service)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tagrate_common.errors import InvalidArgument
from tagrate_common.protos import tokens_pb2
from tagrate_common.timestamps import optional_api_text

from .. import params
from ..auth import (
    SESSION_COOKIE,
    AdminOnly,
    AnyCaller,
    Authenticator,
    Caller,
    Public,
    check_same_site,
    client_address,
    request_is_https,
    token_digest,
)
from ..bodies import JSON_MEDIA_TYPE, parse_json_pairs, post_fields, read_small_body
from ..deps import DatasetDep, SettingsDep
from ..errors import ErrorBody
from ..tokens import new_secret

router = APIRouter(tags=["access"])

MAX_EXPIRES_IN = 10 * 365 * 24 * 3600

_AUTH_ERRORS: dict[int | str, dict] = {
    401: {"model": ErrorBody, "description": "No valid credentials (code `unauthorized`)."},
    403: {"model": ErrorBody, "description": "The caller may not do this (code `forbidden`)."},
    429: {"model": ErrorBody, "description": "Too many failed logins or token uses from this address."},
}


class Session(BaseModel):
    user: str | None = Field(description="The user the session acts for; null for admin.")
    admin: bool
    expires_at: str | None = Field(description="When the token expires; null: never.")


class WhoAmI(BaseModel):
    auth: bool = Field(description="Whether access control is on.")
    user: str | None
    admin: bool


class LoggedOut(BaseModel):
    success: bool


class NewToken(BaseModel):
    id: str
    token: str = Field(description="The secret: shown only now, stored only as a hash.")
    user: str | None
    admin: bool
    expires_at: str | None


class TokenInfo(BaseModel):
    id: str
    user: str | None
    admin: bool
    created_at: str | None
    expires_at: str | None
    expired: bool


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class RevokedToken(BaseModel):
    success: bool
    id: str


def _expiry(caller: Caller) -> str | None:
    return caller.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if caller.expires_at else None


@router.post(
    "/login",
    summary="Start a browser session with a token (sets the tagrate_session cookie)",
    description='Form field or JSON `{"token": "..."}`. Sets an HttpOnly, SameSite=Strict session cookie.',
    response_model=Session,
    responses={k: v for k, v in _AUTH_ERRORS.items() if k != 403} | {400: {"model": ErrorBody}},
    dependencies=[Public],
)
async def login(request: Request, settings: SettingsDep) -> JSONResponse:
    auth: Authenticator = request.app.state.auth
    if "origin" in request.headers:  # a cross-site page may not log a visitor in (login CSRF)
        check_same_site(request, auth.allowed_origins)
    fields = await post_fields(request, settings, accept_json=True)
    token = fields.get("token")
    if token is None or token.strip() == "":
        raise InvalidArgument("the 'token' parameter is missing", "missing_token")
    address = client_address(request)
    if auth.enabled:
        caller = await auth.verify(token.strip(), address)
    else:
        caller = Caller(user=None, admin=True)
    body = Session(user=caller.user, admin=caller.admin, expires_at=_expiry(caller))
    response = JSONResponse(body.model_dump())
    max_age = None
    if caller.expires_at is not None:
        max_age = max(0, int((caller.expires_at - datetime.now(UTC)).total_seconds()))
    session_id = await auth.start_session(caller, max_age or 0)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=max_age,
        path="/",
        secure=request_is_https(request),
        httponly=True,
        samesite="strict",
    )
    return response


@router.post(
    "/logout",
    summary="End the browser session",
    description="Ends the session on the server (the cookie stops working everywhere) and clears the cookie.",
    response_model=LoggedOut,
    dependencies=[Public],
)
async def logout(request: Request) -> JSONResponse:
    auth: Authenticator = request.app.state.auth
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        if "origin" in request.headers:  # a cross-site page may not end a visitor's session either
            check_same_site(request, auth.allowed_origins)
        await auth.end_session(cookie)
    response = JSONResponse({"success": True})
    response.delete_cookie(SESSION_COOKIE, path="/", secure=request_is_https(request), httponly=True, samesite="strict")
    return response


@router.get(
    "/whoami",
    summary="Who the credentials belong to",
    response_model=WhoAmI,
    responses=_AUTH_ERRORS,
    dependencies=[AnyCaller],
)
async def whoami(request: Request) -> WhoAmI:
    caller: Caller = request.state.caller
    return WhoAmI(auth=request.app.state.auth.enabled, user=caller.user, admin=caller.admin)


@router.post(
    "/tokens",
    summary="Create a token (admin)",
    description="Form fields or JSON: `user` (the token acts only as that user) or `admin=true`, optional "
    "`expires_in` seconds. The secret is in the answer only.",
    response_model=NewToken,
    responses=_AUTH_ERRORS | {400: {"model": ErrorBody}},
    dependencies=[AdminOnly],
)
async def create_token(request: Request, settings: SettingsDep, dataset: DatasetDep) -> NewToken:
    fields = await _token_fields(request, settings)
    admin = params.boolean(fields.get("admin"), "admin")
    user = fields.get("user")
    if admin == params._present(user):
        raise InvalidArgument("give either 'user' or 'admin=true'", "invalid_token_scope")
    name = "" if admin else params.user(user)
    expires_in = fields.get("expires_in")
    seconds = 0  # never expires
    if expires_in is not None and expires_in.strip() != "":
        seconds = params._integer(expires_in, "expires_in", 1, MAX_EXPIRES_IN)
    secret = new_secret()
    reply = await dataset.stub.tokens.CreateToken(
        tokens_pb2.CreateTokenRequest(
            token_sha256=token_digest(secret), user=name, admin=admin, expires_in_seconds=seconds
        )
    )
    return NewToken(
        id=reply.id,
        token=secret,
        user=reply.user if reply.HasField("user") else None,
        admin=reply.admin,
        expires_at=optional_api_text(reply, "expires_at"),
    )


@router.get(
    "/tokens",
    summary="List tokens (admin; never the secrets)",
    response_model=TokenList,
    responses=_AUTH_ERRORS,
    dependencies=[AdminOnly],
)
async def list_tokens(dataset: DatasetDep) -> TokenList:
    reply = await dataset.stub.tokens.ListTokens(tokens_pb2.ListTokensRequest())
    now = datetime.now(UTC)
    return TokenList(
        tokens=[
            TokenInfo(
                id=t.id,
                user=t.user if t.HasField("user") else None,
                admin=t.admin,
                created_at=optional_api_text(t, "created_at"),
                expires_at=optional_api_text(t, "expires_at"),
                expired=t.HasField("expires_at") and t.expires_at.ToDatetime(UTC) <= now,
            )
            for t in reply.tokens
        ]
    )


@router.delete(
    "/tokens/{token_id}",
    summary="Revoke a token (admin)",
    description="Takes effect at once on this gateway, within GATEWAY_AUTH_CACHE_SECONDS on other replicas.",
    response_model=RevokedToken,
    responses=_AUTH_ERRORS | {404: {"model": ErrorBody}},
    dependencies=[AdminOnly],
)
async def revoke_token(token_id: str, request: Request, dataset: DatasetDep) -> RevokedToken:
    await dataset.stub.tokens.RevokeToken(tokens_pb2.RevokeTokenRequest(id=token_id))
    request.app.state.auth.forget(token_id)
    return RevokedToken(success=True, id=token_id)


async def _token_fields(request: Request, settings: SettingsDep) -> params.Fields:
    """POST /tokens' fields: a form (via :func:`post_fields`) or a JSON
    object whose ``admin`` may be a JSON boolean and ``expires_in`` a number."""
    if request.headers.get("content-type", "").split(";", 1)[0].strip().lower() != JSON_MEDIA_TYPE:
        return params.Fields([(k, str(v)) for k, v in (await post_fields(request, settings)).pairs])
    pairs: list[tuple[str, str]] = []
    for key, value in parse_json_pairs(await read_small_body(request, settings.max_form_field_bytes)):
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | str):
            value = str(value)
        elif value is not None:
            raise InvalidArgument(
                f"'{key[:40]}' must be a string, a whole number or a boolean",
                f"invalid_{key}" if key.isidentifier() else "malformed_json",
            )
        if value is not None:
            pairs.append((key, value))
    return params.Fields(pairs)
