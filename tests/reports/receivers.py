"""Real HTTPS receivers for the delivery tests: a webhook endpoint, and an EHR's SMART token
endpoint plus FHIR server that check what a real one would (the JWT client assertion's signature
against the registered JWKS and its claims; the bearer token; the Bundle, validated by
fhir.resources' R4B models). Each answers from a script of statuses, then 200."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fhir.resources.R4B.bundle import Bundle


@dataclass(frozen=True)
class Tls:
    """A self-signed certificate for 127.0.0.1 (the CA bundle the dispatcher is told to trust)."""

    cert_file: Path
    key_file: Path


def make_tls(directory: Path) -> Tls:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "skintriage-test-receiver")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "receiver.pem", directory / "receiver.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Tls(cert_file, key_file)


@dataclass
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """The state the handler shares with the test."""

    base_url: str = ""
    scripts: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer first
    requests: list[Received] = field(default_factory=list)
    # The EHR side: the registered public keys, tokens issued, JWT ids seen (replays refused).
    jwks: dict[str, Any] | None = None
    client_id: str = ""
    tokens: set[str] = field(default_factory=set)
    seen_jti: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    bundles: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    def next_status(self, path: str) -> int:
        script = self.scripts.get(path)
        return script.pop(0) if script else 200

    def wait_for(self, count: int, path_prefix: str = "/", timeout: float = 20.0) -> list[Received]:
        """The first `count` requests to paths under `path_prefix`, waiting for them to arrive."""

        def matching() -> list[Received]:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

        with self.arrived:
            self.arrived.wait_for(lambda: len(matching()) >= count, timeout)
            return matching()


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            if self.path == "/token":
                status, answer = self._token(body)
            elif self.path == "/fhir":
                status, answer = self._fhir(headers, body)
            else:
                with receiver.lock:
                    status = receiver.next_status(self.path)
                answer = b"{}"
            with receiver.arrived:
                receiver.requests.append(Received(self.path, headers, body, status))
                receiver.arrived.notify_all()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def _token(self, body: bytes) -> tuple[int, bytes]:
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            try:
                assert receiver.jwks is not None, "no key registered"
                assert form["grant_type"] == "client_credentials"
                assert (
                    form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                )
                header = jwt.get_unverified_header(form["client_assertion"])
                assert header["alg"] in {"RS384", "ES384"}, header
                keys = {key["kid"]: key for key in receiver.jwks["keys"]}
                public = jwt.PyJWK(keys[header["kid"]]).key
                claims = jwt.decode(
                    form["client_assertion"],
                    public,
                    algorithms=[header["alg"]],
                    audience=f"{receiver.base_url}/token",
                    options={"require": ["iss", "sub", "aud", "exp", "jti"]},
                )
                assert claims["iss"] == claims["sub"] == receiver.client_id, claims
                assert claims["exp"] - dt.datetime.now(dt.UTC).timestamp() <= 300, "exp over 5 minutes"
                assert claims["jti"] not in receiver.seen_jti, "jti replayed"
                receiver.seen_jti.add(claims["jti"])
            except Exception as exc:
                receiver.problems.append(f"token: {exc!r}")
                return 401, b'{"error": "invalid_client"}'
            token = uuid.uuid4().hex
            receiver.tokens.add(token)
            return 200, json.dumps(
                {"access_token": token, "token_type": "bearer", "expires_in": 300}
            ).encode()

        def _fhir(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
            if headers.get("authorization", "").removeprefix("Bearer ") not in receiver.tokens:
                receiver.problems.append("fhir: unknown bearer token")
                return 401, b"{}"
            with receiver.lock:
                status = receiver.next_status(self.path)
            if status != 200:
                return status, b'{"resourceType": "OperationOutcome", "issue": []}'
            try:
                assert headers.get("content-type") == "application/fhir+json"
                bundle = json.loads(body)
                Bundle.model_validate(bundle)
                assert bundle["type"] == "transaction"
            except Exception as exc:
                receiver.problems.append(f"fhir: {exc!r}")
                return 400, b'{"resourceType": "OperationOutcome", "issue": []}'
            receiver.bundles.append(bundle)
            answer = {
                "resourceType": "Bundle",
                "type": "transaction-response",
                "entry": [{"response": {"status": "201 Created"}} for _ in bundle["entry"]],
            }
            return 200, json.dumps(answer).encode()

    return Handler


@contextmanager
def https_receiver(tls: Tls) -> Iterator[Receiver]:
    """A receiver listening on https://127.0.0.1:<free port> until the block ends."""
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    receiver.base_url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
