"""The one rule for the internal token the services share: every service refuses the same
empty or placeholder values at start-up, so a token one accepts is never refused by another."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, SecretStr

# Values copied from examples and templates that must never reach a running service.
PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "changethis",
        "placeholder",
        "secret",
        "token",
        "xxx",
        "todo",
        "none",
        "null",
    }
)


def check_internal_token(value: SecretStr) -> SecretStr:
    """Strip the token; raise ValueError when it is empty or a placeholder (`change...`, `<...>`,
    an unexpanded `${...}`, or a known template value)."""
    raw = value.get_secret_value().strip()
    if not raw:
        raise ValueError("must be set to a non-empty secret")
    lowered = raw.lower()
    if lowered in PLACEHOLDER_SECRETS or lowered.startswith("change") or raw.startswith(("<", "${")):
        raise ValueError("is a placeholder; set a real secret")
    return SecretStr(raw)


# The type of every service's `internal_token` setting: the same rule, applied the same way.
InternalToken = Annotated[SecretStr, AfterValidator(check_internal_token)]
