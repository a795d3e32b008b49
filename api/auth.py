"""Bearer tokens: Supabase-style JWTs (HS256 with the project's secret, or a JWKS URL).

A token's `sub` is the user. It opens the offices in `app_metadata.office_ids` (`["*"]`: all)
and those the user has rows for in `office_members`. `exp`, `sub` and `aud` are required.

Tokens never appear in an error message or a log line: the details say what is wrong with a
token, not what it is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field

import jwt

from semo.errors import ConfigError, Unauthorized, Unavailable
from semo.settings import Settings

#: RFC 7518 §3.2: an HS256 key must be at least as long as the hash (256 bits)
MIN_SECRET_BYTES = 32
_ASYMMETRIC = ("RS", "ES", "PS", "Ed")
_ASYMMETRIC_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384",
                          "PS512", "EdDSA"]


@dataclass(frozen=True)
class Principal:
    sub: str
    #: offices named in the token; None means every office
    claimed_offices: frozenset[str] | None = field(default_factory=frozenset)

    @property
    def all_offices(self) -> bool:
        return self.claimed_offices is None


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.audience = settings.jwt_audience
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        if secret is not None and len(secret.strip().encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"the JWT secret (SUPABASE_JWT_SECRET / SEMO_JWT_SECRET) is shorter than "
                f"{MIN_SECRET_BYTES} bytes: use your Supabase project's JWT secret, or a random "
                f"one "
                f"(`python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        self.secret = secret
        self.jwks: jwt.PyJWKClient | None = None
        if settings.jwks_url:
            try:
                self.jwks = jwt.PyJWKClient(settings.jwks_url, cache_keys=True,
                                            timeout=settings.jwks_timeout_s)
            except jwt.PyJWKClientError as err:
                raise ConfigError(f"SEMO_JWKS_URL is not usable: {err}") from None
        if self.secret is None and self.jwks is None:
            raise ConfigError(
                "no JWT secret configured, so the API cannot check tokens and will not start: "
                "set SUPABASE_JWT_SECRET (or SEMO_JWT_SECRET) to your project's JWT secret, or "
                "SEMO_JWKS_URL to its JWKS endpoint; for a local setup run `semo dev`, which "
                "generates one")

    async def verify_async(self, authorization: str | None) -> Principal:
        """`verify`, off the event loop when it may fetch keys from the JWKS URL."""
        if self.jwks is None:
            return self.verify(authorization)
        return await asyncio.to_thread(self.verify, authorization)

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("missing bearer token: send `Authorization: Bearer <token>`")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise Unauthorized("malformed Authorization header: expected `Bearer <token>`")
        try:
            claims = self._decode(token)
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as err:
            if isinstance(err, jwt.InvalidAudienceError) or err.claim == "aud":
                raise Unauthorized(f"token audience is not {self.audience!r}") from None
            raise Unauthorized(f"token has no {err.claim!r} claim") from None
        except jwt.PyJWKClientConnectionError:
            raise Unavailable(
                "could not fetch the signing keys from the JWKS URL; try again"
            ) from None
        except jwt.PyJWKClientError:
            raise Unauthorized("invalid token: its signing key is not in the JWKS") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("invalid token: bad signature") from None
        except jwt.DecodeError as err:  # after InvalidSignatureError, which is one of these
            raise Unauthorized(
                f"invalid token: not a readable JWT ({err}); a token is three "
                "base64url parts joined by dots (header.payload.signature)"
            ) from None
        except (jwt.PyJWTError, ValueError, TypeError) as err:
            raise Unauthorized(f"invalid token: {type(err).__name__}") from None
        return _principal(claims)

    def _decode(self, token: str) -> dict:
        options = {"require": ["exp", "sub", "aud"]}
        alg = jwt.get_unverified_header(token).get("alg")
        if isinstance(alg, str) and alg.startswith(_ASYMMETRIC):
            if self.jwks is None:
                raise jwt.InvalidAlgorithmError("asymmetric tokens need SEMO_JWKS_URL")
            key = self.jwks.get_signing_key_from_jwt(token).key
            return jwt.decode(token, key, algorithms=_ASYMMETRIC_ALGORITHMS,
                              audience=self.audience, options=options)  # type: ignore[arg-type]
        if self.secret is None:
            raise jwt.InvalidAlgorithmError("HS256 tokens are not accepted here")
        return jwt.decode(token, self.secret, algorithms=["HS256"], audience=self.audience,
                          options=options)  # type: ignore[arg-type]


def _principal(claims: dict) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise Unauthorized("token has no subject (sub)")
    meta = claims.get("app_metadata")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise Unauthorized("token claim app_metadata must be an object")
    offices = meta.get("office_ids")
    if offices is None:
        offices = []
    if not isinstance(offices, list) or not all(isinstance(o, str) for o in offices):
        raise Unauthorized("token claim app_metadata.office_ids must be a list of strings")
    claimed = None if "*" in offices else frozenset(offices)
    return Principal(sub=sub, claimed_offices=claimed)


_SECRETS_IN_TEXT = [
    (
        re.compile(r"([?&](?:token|access_token|api_key|apikey|code)=)[^&\s\"']+",
                   re.IGNORECASE),
        r"\1[redacted]",  # `code`: the console's one-time login link
    ),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "[redacted JWT]"),
]
#: the loggers that write request lines or headers (a WebSocket's `?token=` is part of its
#: path; the websockets library logs handshake headers at DEBUG)
REQUEST_LOGGERS = ("uvicorn.error", "uvicorn.access", "websockets.server", "websockets.client",
                   "httpx")


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS_IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


class RedactTokens(logging.Filter):
    """Rewrites a log record whose message carries a bearer token or a `token=` parameter."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that does not format is left to the handler
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_tokens_in_logs() -> None:
    """Install `RedactTokens` on the request loggers (once)."""
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


def mint_token(secret: str, sub: str, office_ids: list[str], *, audience: str = "authenticated",
               ttl_s: int = 365 * 24 * 3600) -> str:
    """An HS256 token like Supabase's (used by `semo dev` and tests)."""
    now = int(time.time())
    return jwt.encode({"sub": sub, "aud": audience, "role": "authenticated", "iat": now,
                       "exp": now + ttl_s, "app_metadata": {"office_ids": office_ids}},
                      secret, algorithm="HS256")
