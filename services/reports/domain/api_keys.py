"""API keys: `sk_<43 url-safe chars>` (32 random bytes); only their sha256 is ever stored."""

from __future__ import annotations

import hashlib
import secrets
import uuid

KEY_PREFIX = "sk_"
# "sk_" plus 7 key characters: enough to tell keys apart in a listing, ~42 of 256 bits.
DISPLAY_PREFIX_LENGTH = 10


def generate_api_key() -> str:
    """A new random key, shown to its owner once."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    """Hex sha256 of the key: what is stored and looked up (the key is high-entropy, no salt needed)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def display_prefix(api_key: str) -> str:
    """The non-secret beginning of a key, for listings."""
    return api_key[:DISPLAY_PREFIX_LENGTH]


def new_tenant_id() -> str:
    """A fresh tenant id."""
    return f"ten_{uuid.uuid4().hex}"


def new_key_id() -> str:
    """A fresh API-key id (not secret: used to revoke a key)."""
    return f"key_{uuid.uuid4().hex[:16]}"


def new_user_id() -> str:
    """A fresh user id."""
    return f"usr_{uuid.uuid4().hex[:16]}"
