"""Standard Webhooks signatures (https://www.standardwebhooks.com): HMAC-SHA256 over
`{webhook-id}.{webhook-timestamp}.{body}`, keyed by the base64 part of a `whsec_` secret, sent as
`v1,<base64>`, one per active secret (space-separated) while a rotation overlaps. Any Standard
Webhooks library verifies them with either secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh signing secret, as Standard Webhooks libraries expect it."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secrets_in_use: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: one `v1,` signature per secret."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode("ascii")
        for secret in secrets_in_use
    )


def webhook_headers(
    secrets_in_use: list[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Everything a Standard Webhooks request carries besides its body."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secrets_in_use, message_id, timestamp, body),
    }
