"""Bearer tokens: Supabase-style JWTs (HS256 with the project's secret, or a JWKS URL).

A token's `sub` is the user. It opens the offices in `app_metadata.office_ids` (`["*"]`: all)
and those the user has rows for in `office_members`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jwt

from semo.errors import Unauthorized
from semo.settings import Settings


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
        self.secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self.jwks = jwt.PyJWKClient(settings.jwks_url, timeout=10) if settings.jwks_url else None
        if self.secret is None and self.jwks is None:
            raise RuntimeError(
                "no JWT secret configured: set SUPABASE_JWT_SECRET (or SEMO_JWT_SECRET) to your "
                "project's JWT secret, or SEMO_JWKS_URL; `semo dev` generates one for you")

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("missing bearer token: send `Authorization: Bearer <token>`")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("malformed Authorization header: expected `Bearer <token>`")
        try:
            claims = self._decode(token.strip())
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(f"token audience is not {self.audience!r}") from None
        except (jwt.PyJWTError, ValueError) as err:
            raise Unauthorized(f"invalid token: {err}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("token has no subject (sub)")
        offices = (claims.get("app_metadata") or {}).get("office_ids") or []
        if not isinstance(offices, list):
            raise Unauthorized("app_metadata.office_ids must be a list")
        claimed = None if "*" in offices else frozenset(str(o) for o in offices)
        return Principal(sub=sub, claimed_offices=claimed)

    def _decode(self, token: str) -> dict:
        options = {"require": ["exp", "sub"]}
        if self.jwks is not None and jwt.get_unverified_header(token).get("alg", "").startswith(("RS", "ES", "PS", "Ed")):
            key = self.jwks.get_signing_key_from_jwt(token).key
            return jwt.decode(token, key, algorithms=["RS256", "ES256", "PS256", "EdDSA"],
                              audience=self.audience, options=options)
        if self.secret is None:
            raise jwt.InvalidTokenError("HS256 tokens are not accepted here")
        return jwt.decode(token, self.secret, algorithms=["HS256"], audience=self.audience,
                          options=options)


def mint_token(secret: str, sub: str, office_ids: list[str], *, audience: str = "authenticated",
               ttl_s: int = 365 * 24 * 3600) -> str:
    """An HS256 token like Supabase's (used by `semo dev` and tests)."""
    now = int(time.time())
    return jwt.encode({"sub": sub, "aud": audience, "role": "authenticated", "iat": now,
                       "exp": now + ttl_s, "app_metadata": {"office_ids": office_ids}},
                      secret, algorithm="HS256")
