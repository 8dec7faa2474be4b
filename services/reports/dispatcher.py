"""The dispatcher: sends what the deliveries table says is due (webhooks and FHIR pushes).

Deliveries are written in the transaction that ends their job (services/reports/db/deliveries.py),
so a finished job and its announcements cannot diverge. A thread in each reports replica claims
due ones (`FOR UPDATE SKIP LOCKED`, holding them for the length of an attempt), sends them
outside any transaction, and records how it went:

- 2xx: delivered;
- a timeout, a refused connection, 408, 429 or 5xx: tried again after a delay that doubles from
  `REPORTS_DELIVERY_RETRY_BASE_SECONDS` up to `REPORTS_DELIVERY_RETRY_MAX_DELAY_SECONDS` (or the
  receiver's `Retry-After`, within that cap), until `REPORTS_DELIVERY_RETRY_WINDOW_SECONDS` after
  the event; then failed;
- any other answer (a 4xx: the receiver refuses this request as it is): failed at once.

Failed deliveries are kept with their last status and error and can be replayed through the API.
A replica that dies mid-send leaves its claims due again once their hold ends: delivery is at
least once, and webhook receivers deduplicate on `webhook-id`, FHIR servers on the resources'
identifiers (`ifNoneExist`).
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from contracts.integrations import FHIR_JSON_MEDIA_TYPE, DeliveryKind
from services.common.request_id import bound_request_id, new_request_id
from services.reports.config import Settings
from services.reports.db.deliveries import claim_due, record_outcome
from services.reports.db.integrations import signing_key, signing_secrets
from services.reports.db.models import Delivery, FhirEndpoint, WebhookEndpoint
from services.reports.db.types import utc_now
from services.reports.documents import fhir_bundle_json, load_job_document
from services.reports.domain.smart_auth import token_request_form
from services.reports.domain.webhook_signing import webhook_headers

log = logging.getLogger("services.reports.dispatcher")

_RETRYABLE_STATUSES = frozenset({408, 425, 429})
# A token is renewed this long before the expiry its server announced.
_TOKEN_MARGIN = timedelta(seconds=30)


@dataclass(frozen=True)
class Attempt:
    """How one send went: delivered, or not and whether trying again may help."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None
    retryable: bool = False
    retry_after_seconds: float | None = None


@dataclass(frozen=True)
class _Claim:
    """What a send needs of a claimed delivery, read before its transaction ends."""

    delivery_id: str
    kind: DeliveryKind
    tenant_id: str
    webhook_id: str | None
    job_id: str | None
    payload: dict[str, Any] | None
    attempts: int


@dataclass
class _Token:
    value: str
    expires_at: datetime
    key_id: str


def _answer(response: httpx.Response, what: str) -> Attempt:
    status = response.status_code
    if 200 <= status < 300:
        return Attempt(delivered=True, status_code=status)
    retry_after = response.headers.get("retry-after", "")
    return Attempt(
        delivered=False,
        status_code=status,
        error=f"{what} answered {status}: {response.text[:200]}",
        retryable=status >= 500 or status in _RETRYABLE_STATUSES,
        retry_after_seconds=float(retry_after) if retry_after.isdigit() else None,
    )


def _unreachable(exc: httpx.HTTPError, what: str) -> Attempt:
    return Attempt(delivered=False, error=f"{what}: {type(exc).__name__} {exc}"[:512], retryable=True)


class _TokenRefusedError(Exception):
    def __init__(self, attempt: Attempt) -> None:
        super().__init__(attempt.error)
        self.attempt = attempt


class Dispatcher:
    """One round at a time (`dispatch_once`), or in a daemon thread woken by `wake` or every
    interval (`start`/`stop`)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=settings.delivery_ca_bundle)
            if settings.delivery_ca_bundle
            else True
        )
        self._http = httpx.Client(
            timeout=settings.delivery_timeout_seconds,
            verify=verify,
            follow_redirects=False,
            transport=transport,
            headers={"user-agent": "SkinTriage-Delivery/1"},
        )
        self._pool = ThreadPoolExecutor(settings.delivery_concurrency, thread_name_prefix="reports-delivery")
        self._tokens: dict[str, _Token] = {}
        self._tokens_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- one round ------------------------------------------------------------------------

    def dispatch_once(self) -> int:
        """Send every delivery due now (up to the batch size); returns how many were attempted."""
        settings = self._settings
        # An attempt may ask for a token and then POST: two timeouts, plus building the bundle.
        hold = timedelta(seconds=4 * settings.delivery_timeout_seconds + 30)
        with self._sessions() as session:
            claimed = claim_due(session, self._clock(), settings.delivery_batch_size, hold)
            claims = [self._claim(delivery) for delivery in claimed]
            session.commit()
        if not claims:
            return 0
        attempts = list(self._pool.map(self._attempt, claims))
        with self._sessions() as session:
            now = self._clock()
            for claim, attempt in zip(claims, attempts, strict=True):
                record_outcome(
                    session,
                    claim.delivery_id,
                    now=now,
                    delivered=attempt.delivered,
                    status_code=attempt.status_code,
                    error=attempt.error,
                    retry_at=self._retry_at(claim, attempt, now),
                )
            session.commit()
        for claim, attempt in zip(claims, attempts, strict=True):
            log.info(
                "delivery.attempted",
                extra={
                    "delivery_id": claim.delivery_id,
                    "delivery_kind": claim.kind.value,
                    "job_id": claim.job_id,
                    "tenant_id": claim.tenant_id,
                    "attempt": claim.attempts,
                    "delivered": attempt.delivered,
                    "upstream_status": attempt.status_code,
                    "error": attempt.error,
                },
            )
        return len(claims)

    @staticmethod
    def _claim(delivery: Delivery) -> _Claim:
        return _Claim(
            delivery_id=delivery.id,
            kind=DeliveryKind(delivery.kind),
            tenant_id=delivery.tenant_id,
            webhook_id=delivery.webhook_id,
            job_id=delivery.job_id,
            payload=delivery.payload,
            attempts=delivery.attempts,
        )

    def _retry_at(self, claim: _Claim, attempt: Attempt, now: datetime) -> datetime | None:
        """When to try again (None: never): doubling from the base delay, with a little jitter so
        receivers coming back are not hit by every delivery at once; `Retry-After` where given."""
        if attempt.delivered or not attempt.retryable:
            return None
        settings = self._settings
        delay = settings.delivery_retry_base_seconds * 2 ** max(0, claim.attempts - 1)
        if attempt.retry_after_seconds is not None:
            delay = max(delay, attempt.retry_after_seconds)
        delay = min(delay, settings.delivery_retry_max_delay_seconds) * random.uniform(0.9, 1.1)
        return now + timedelta(seconds=delay)

    def _attempt(self, claim: _Claim) -> Attempt:
        with bound_request_id(new_request_id()):
            try:
                if claim.kind == DeliveryKind.webhook:
                    return self._send_webhook(claim)
                return self._push_fhir(claim)
            except Exception as exc:  # a bug or a database outage: recorded, and tried again
                log.exception("delivery.error", extra={"delivery_id": claim.delivery_id})
                return Attempt(delivered=False, error=f"internal: {type(exc).__name__}", retryable=True)

    # ---- webhooks -------------------------------------------------------------------------

    def _send_webhook(self, claim: _Claim) -> Attempt:
        with self._sessions() as session:
            endpoint = session.get(WebhookEndpoint, claim.webhook_id) if claim.webhook_id else None
            if endpoint is None or endpoint.removed_at is not None:
                return Attempt(delivered=False, error="webhook.removed: the endpoint was removed")
            url = endpoint.url
            now = self._clock()
            secrets_in_use = signing_secrets(endpoint, now)
        body = json.dumps(claim.payload, separators=(",", ":")).encode()
        # The delivery id is the message id on every attempt: receivers deduplicate on it.
        headers = webhook_headers(secrets_in_use, claim.delivery_id, int(now.timestamp()), body)
        try:
            response = self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return _unreachable(exc, "webhook")
        return _answer(response, "webhook")

    # ---- FHIR pushes (SMART Backend Services) -----------------------------------------------

    def _push_fhir(self, claim: _Claim) -> Attempt:
        assert claim.job_id is not None
        with self._sessions() as session:
            endpoint = session.get(FhirEndpoint, claim.tenant_id)
            if endpoint is None:
                return Attempt(delivered=False, error="fhir_endpoint.removed: no FHIR endpoint is configured")
            session.expunge(endpoint)
            now = self._clock()
            document = load_job_document(session, claim.tenant_id, claim.job_id)
            bundle = fhir_bundle_json(document, self._settings, "transaction", now)
        try:
            token = self._token(endpoint, now)
        except _TokenRefusedError as refused:
            return refused.attempt
        except httpx.HTTPError as exc:
            return _unreachable(exc, "token endpoint")
        try:
            response = self._http.post(
                endpoint.base_url,
                content=bundle,
                headers={
                    "content-type": FHIR_JSON_MEDIA_TYPE,
                    "accept": FHIR_JSON_MEDIA_TYPE,
                    "authorization": f"Bearer {token}",
                },
            )
        except httpx.HTTPError as exc:
            return _unreachable(exc, "FHIR server")
        attempt = _answer(response, "FHIR server")
        if response.status_code == 401:
            # The token may have been revoked or expired early: the next attempt asks anew.
            with self._tokens_lock:
                self._tokens.pop(endpoint.tenant_id, None)
            return Attempt(delivered=False, status_code=401, error=attempt.error, retryable=True)
        return attempt

    def _token(self, endpoint: FhirEndpoint, now: datetime) -> str:
        """A cached access token for the endpoint's key, or a new one from its token endpoint."""
        with self._tokens_lock:
            cached = self._tokens.get(endpoint.tenant_id)
        if (
            cached is not None
            and cached.key_id == endpoint.key_id
            and cached.expires_at > now + _TOKEN_MARGIN
        ):
            return cached.value
        form = token_request_form(
            signing_key(endpoint), endpoint.client_id, endpoint.token_url, endpoint.scope, now
        )
        response = self._http.post(endpoint.token_url, data=form, headers={"accept": "application/json"})
        if response.status_code != 200:
            raise _TokenRefusedError(_answer(response, "token endpoint"))
        try:
            answer = response.json()
            value = str(answer["access_token"])
            lifetime = float(answer.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise _TokenRefusedError(
                Attempt(
                    delivered=False, status_code=200, error="token endpoint: no access_token in its answer"
                )
            ) from None
        with self._tokens_lock:
            self._tokens[endpoint.tenant_id] = _Token(
                value, now + timedelta(seconds=lifetime), endpoint.key_id
            )
        return value

    # ---- the thread -----------------------------------------------------------------------

    def wake(self) -> None:
        """Look for due deliveries now (new ones were just written)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._settings.delivery_interval_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                while self.dispatch_once() >= self._settings.delivery_batch_size:
                    pass  # a full round: more may be due
            except Exception:  # a database outage, say: the next round tries again
                log.exception("dispatch.failed")

    def start(self) -> None:
        """Dispatch until `stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="reports-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """End the thread after the round in hand and close the connections."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
            self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
