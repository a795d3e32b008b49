"""The test deployment's JWT secret, its machine, and tokens for it."""

from __future__ import annotations

from api.auth import mint_token

JWT_SECRET = "test-secret-" + "x" * 32


MACHINE_ID = "test-machine"


def token_for(office_ids: list[str], sub: str = "tester", **kw) -> str:
    return mint_token(JWT_SECRET, sub, office_ids, **kw)


