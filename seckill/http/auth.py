"""Who is asking: the customer's identity (docs/API.md §2) and the admin token (§5)."""

from __future__ import annotations

import hmac
from collections.abc import Callable

import jwt
from aiohttp import web

from seckill.http.errors import Unauthenticated
from seckill.redis.keys import valid_id
from seckill.settings import Settings

Identify = Callable[[web.Request], str]

_ALGORITHMS = ["HS256"]


def header_identity(request: web.Request) -> str:
    """X-User-Id, trusted as is: for deployments behind an authenticating edge."""
    user = request.headers.get("X-User-Id")
    if user is None:
        raise Unauthenticated("Missing X-User-Id header.")
    if not valid_id(user):
        raise Unauthenticated("Malformed X-User-Id header.")
    return user


def jwt_identity(secret: str) -> Identify:
    """``Authorization: Bearer <JWT>``: HS256 with *secret*, user = ``sub``, ``exp`` required."""
    key = secret.encode()

    def identify(request: web.Request) -> str:
        token = _bearer(request)
        if token is None:
            raise Unauthenticated("Missing bearer token.")
        try:
            claims = jwt.decode(
                token, key, algorithms=_ALGORITHMS, options={"require": ["exp", "sub"]}
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("The token has expired.") from None
        except jwt.PyJWTError:
            raise Unauthenticated("Invalid bearer token.") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not valid_id(sub):
            raise Unauthenticated("The token's subject is not a valid user id.")
        return sub

    return identify


def identity_for(settings: Settings) -> Identify:
    if settings.auth == "jwt":
        assert settings.jwt_secret, "validated by Settings"
        return jwt_identity(settings.jwt_secret)
    return header_identity


def check_admin(request: web.Request, token: str) -> None:
    """401 unless the request carries ``Authorization: Bearer <token>`` (constant time)."""
    check_bearer(request, token, "Missing or wrong admin token.")


def check_bearer(request: web.Request, token: str, refusal: str) -> None:
    """401 with *refusal* unless the request carries ``Authorization: Bearer
    <token>`` (compared in constant time)."""
    given = _bearer(request)
    if given is None or not hmac.compare_digest(
        given.encode("utf-8", "backslashreplace"), token.encode()
    ):
        raise Unauthenticated(refusal)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
