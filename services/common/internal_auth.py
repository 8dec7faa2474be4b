"""Internal-token auth: SkinTriage's services prove they are SkinTriage's by sending the shared
token (`*_INTERNAL_TOKEN`, validated at start-up by `contracts.secrets.check_internal_token`) in
`X-Internal-Token`. The callee compares it in constant time.

No `from __future__ import annotations` here: FastAPI reads the guard's parameter annotations at
run time, and `Depends(get_settings)` names a closure variable that a string could not resolve.
"""

import hmac
from collections.abc import Callable
from typing import Annotated, Protocol

from fastapi import Depends, Header
from pydantic import SecretStr

from contracts.errors import DomainError

INTERNAL_TOKEN_HEADER = "X-Internal-Token"


class InternalTokenInvalidError(DomainError):
    """Missing or wrong X-Internal-Token: only SkinTriage's own services may call."""

    code, status = "auth.internal_token_invalid", 401


class HasInternalToken(Protocol):
    """A service's settings: they hold the shared token."""

    @property
    def internal_token(self) -> SecretStr:
        """The shared token."""
        ...


def token_matches(presented: str | None, expected: SecretStr) -> bool:
    """True when `presented` is the expected token (constant-time; None never matches)."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.get_secret_value().encode())


def internal_token_guard(get_settings: Callable[..., HasInternalToken]) -> Callable[..., None]:
    """The FastAPI dependency that admits only callers sending the token of the settings
    `get_settings` answers (a service's settings dependency: `request_settings`)."""

    def require_internal_token(
        settings: Annotated[HasInternalToken, Depends(get_settings)],
        x_internal_token: Annotated[str | None, Header()] = None,
    ) -> None:
        """Raise InternalTokenInvalidError unless X-Internal-Token is the shared token."""
        if not token_matches(x_internal_token, settings.internal_token):
            raise InternalTokenInvalidError("missing or invalid X-Internal-Token")

    return require_internal_token
