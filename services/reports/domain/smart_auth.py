"""SMART Backend Services client authentication (HL7 SMART App Launch 2, "Backend Services"):
SkinTriage holds a key pair per tenant, the EHR's authorisation server holds the public key
(the JWKS below), and each token request carries a short-lived JWT client assertion signed with
the private key (`private_key_jwt`, RS384 or ES384)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# The specification caps an assertion's lifetime at five minutes.
ASSERTION_LIFETIME = timedelta(minutes=5)
RSA_BITS = 3072


@dataclass(frozen=True)
class SigningKey:
    """A private key (PEM, PKCS#8) and the key id its public half is registered under."""

    algorithm: str
    key_id: str
    private_key_pem: str


def new_signing_key(algorithm: str) -> SigningKey:
    """A fresh key pair for `algorithm` (ES384: P-384; RS384: RSA 3072)."""
    if algorithm == "ES384":
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = ec.generate_private_key(ec.SECP384R1())
    elif algorithm == "RS384":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    else:
        raise ValueError(f"unsupported algorithm {algorithm}")
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return SigningKey(algorithm, hashlib.sha256(public_der).hexdigest()[:32], pem)


def public_jwks(key: SigningKey) -> dict[str, list[dict[str, str]]]:
    """The public key as a JWK Set, to register with the EHR's authorisation server."""
    private = serialization.load_pem_private_key(key.private_key_pem.encode("ascii"), password=None)
    public = private.public_key()
    jwk: dict[str, Any]
    if isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    else:  # pragma: no cover - new_signing_key makes only these two
        raise ValueError("unsupported key type")
    jwk.update({"kid": key.key_id, "alg": key.algorithm, "use": "sig"})
    # key_ops (a list, from PyJWT's RSA export) adds nothing to `use` and is left out.
    return {"keys": [{name: value for name, value in jwk.items() if isinstance(value, str)}]}


def client_assertion(key: SigningKey, client_id: str, token_url: str, now: datetime) -> str:
    """The signed JWT a token request authenticates with: issued by and about the client, for the
    token endpoint, unique (`jti`) and valid for five minutes."""
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": int((now + ASSERTION_LIFETIME).timestamp()),
        "iat": int(now.timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key.private_key_pem, algorithm=key.algorithm, headers={"kid": key.key_id})


def token_request_form(
    key: SigningKey, client_id: str, token_url: str, scope: str, now: datetime
) -> dict[str, str]:
    """The form body of the client-credentials token request."""
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client_assertion(key, client_id, token_url, now),
    }
