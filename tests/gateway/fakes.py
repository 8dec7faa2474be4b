"""Fakes at the gateway's adapter seams: an in-memory task publisher, and reports' internal HTTP
API served by respx (a small in-memory model of its documented behaviour)."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import respx

from contracts.jobs import UNQUEUED_ERROR_CODES, InferenceTask
from services.gateway.domain.errors import UpstreamUnavailableError

REPORTS_URL = "http://reports.test"
INTERNAL_TOKEN = "test-internal-token-0123456789"
KEY_A, TENANT_A = "key-of-tenant-a", "tenant-a"
KEY_B, TENANT_B = "key-of-tenant-b", "tenant-b"


class InMemoryPublisher:
    """`TaskPublisher` that keeps what it was given; `down` makes it behave like a dead broker."""

    def __init__(self) -> None:
        self.tasks: list[InferenceTask] = []
        self.messages: list[list[str]] = []  # the job ids of each message sent, in order
        self.down = False
        self.depth: int | None = 0  # what the broker would report as waiting (None: unreadable)

    async def publish(self, task: InferenceTask) -> None:
        if self.down:
            raise UpstreamUnavailableError("broker down", {"dependency": "broker"})
        self.tasks.append(task)
        self.messages.append([task.job_id])

    async def publish_many(self, tasks: list[InferenceTask]) -> None:
        if self.down:
            raise UpstreamUnavailableError("broker down", {"dependency": "broker"})
        assert len({t.tenant_id for t in tasks}) == 1, "a chunk holds one tenant's jobs"
        self.tasks.extend(tasks)
        self.messages.append([t.job_id for t in tasks])

    async def ping(self) -> bool:
        return not self.down

    async def queue_depth(self) -> int | None:
        return None if self.down else self.depth

    def close(self) -> None:
        pass


def _error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": code}})


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class FakeReports:
    """Tenants, keys, jobs and batches as reports keeps them, behind its internal routes."""

    # api key -> (tenant, key id, role of the key's user); the users are named after the key.
    keys: dict[str, tuple[str, str, str]] = field(
        default_factory=lambda: {KEY_A: (TENANT_A, "key-a", "admin"), KEY_B: (TENANT_B, "key-b", "admin")}
    )
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    # After this many GETs of a job, it reports as done (None: stays as stored).
    finish_after_reads: int | None = None
    reads: dict[str, int] = field(default_factory=dict)
    failed_jobs: list[str] = field(default_factory=list)
    refuse_job_ids: set[str] = field(default_factory=set)  # the bulk route answers these with an error
    # Registrations of these filenames are refused by both routes, as reports refuses an unknown
    # lesion (404 lesion.not_found); every registration call is recorded (its job ids).
    refuse_filenames: set[str] = field(default_factory=set)
    registration_calls: list[list[str]] = field(default_factory=list)

    def install(self, router: respx.MockRouter) -> None:
        """Route reports' internal API to this fake. Routes are named so that a test can
        replace one: `reports_api["get_job"].mock(side_effect=httpx.ReadTimeout(...))`."""
        router.get("/readyz", name="readyz").mock(return_value=httpx.Response(200, json={"status": "ok"}))
        router.post("/internal/v1/auth/verify", name="verify").mock(side_effect=self._verify)
        router.post("/internal/v1/jobs", name="create_job").mock(side_effect=self._create_job)
        router.post("/internal/v1/jobs/bulk", name="create_jobs").mock(side_effect=self._create_jobs)
        router.post("/internal/v1/jobs/statuses", name="job_statuses").mock(side_effect=self._statuses)
        jobs = "^/internal/v1/jobs/(?P<job_id>[^/]+)"
        router.post(path__regex=f"{jobs}/fail$", name="fail_job").mock(side_effect=self._fail)
        router.post(path__regex=f"{jobs}/requeue$", name="requeue_job").mock(side_effect=self._requeue)
        router.get(path__regex=f"{jobs}/image$", name="job_image").mock(side_effect=self._image)
        router.get(path__regex=f"{jobs}$", name="get_job").mock(side_effect=self._get_job)
        router.get("/internal/v1/reports", name="list_reports").mock(
            return_value=httpx.Response(200, json={"items": [], "next_cursor": None})
        )
        router.post("/internal/v1/batches", name="create_batch").mock(side_effect=self._create_batch)
        router.get(path__regex=r"^/internal/v1/batches/(?P<batch_id>[^/]+)$", name="get_batch").mock(
            side_effect=self._get_batch
        )

    # -- helpers for tests -------------------------------------------------------------------

    def stored_image(self, job_id: str) -> bytes:
        """The re-encoded bytes the gateway registered for a job."""
        return base64.b64decode(self.jobs[job_id]["body"]["image"]["data_b64"])

    def add_job(self, tenant_id: str, job_id: str, status: str = "queued") -> None:
        """Seed a job directly, as if registered earlier."""
        self.jobs[job_id] = {
            "tenant_id": tenant_id,
            "status": status,
            "body": {"job_id": job_id, "batch_id": None, "metadata": {}},
            "created_at": _now(),
        }

    # -- routes ------------------------------------------------------------------------------

    def _tenant(self, request: httpx.Request) -> str | None:
        if request.headers.get("X-Internal-Token") != INTERNAL_TOKEN:
            return None
        return request.headers.get("X-Tenant-Id")

    def _verify(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("X-Internal-Token") != INTERNAL_TOKEN:
            return _error(401, "auth.internal_token_invalid")
        api_key = json.loads(request.content)["api_key"]
        if api_key not in self.keys:
            return _error(401, "auth.invalid_api_key")
        tenant_id, key_id, role = self.keys[api_key]
        return httpx.Response(
            200,
            json={
                "tenant_id": tenant_id,
                "key_id": key_id,
                "user_id": f"usr-{key_id}",
                "user_name": f"user of {key_id}",
                "role": role,
            },
        )

    def _view(self, job_id: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        view: dict[str, Any] = {
            "job_id": job_id,
            "batch_id": job["body"].get("batch_id"),
            "status": job["status"],
            "metadata": job["body"].get("metadata") or {},
            "created_at": job["created_at"],
            "updated_at": _now(),
            "result": None,
            "error_code": job.get("error_code"),
        }
        if job["status"] == "done":
            view["result"] = {
                "job_id": job_id,
                "status": "done",
                "triage_level": "routine",
                "prediction": {
                    "probabilities": {"nv": 0.7, "mel": 0.3},
                    "top_class": "nv",
                    "malignant_probability": 0.3,
                    "triage_level": "routine",
                    "triage_threshold": 0.2,
                    "conformal_set": ["nv", "mel"],
                    "conformal_coverage": 0.9,
                },
                "model": {"name": "tiny", "version": "0.0.1", "sha256": "0" * 64},
                "completed_at": _now(),
            }
        return view

    def _create_job(self, request: httpx.Request) -> httpx.Response:
        tenant_id = self._tenant(request)
        body = json.loads(request.content)
        if request.url.path.endswith("/jobs"):  # the single route, not a bulk call's job
            self.registration_calls.append([body["job_id"]])
        if tenant_id is None or body["tenant_id"] != tenant_id:
            return _error(400, "request.tenant_mismatch")
        if body.get("filename") in self.refuse_filenames:
            return _error(404, "lesion.not_found")
        key = body.get("idempotency_key")
        if key is not None:
            for job_id, job in self.jobs.items():
                if job["tenant_id"] == tenant_id and job["body"].get("idempotency_key") == key:
                    return httpx.Response(200, json=self._view(job_id), headers={"Idempotent-Replay": "true"})
        self.jobs[body["job_id"]] = {
            "tenant_id": tenant_id,
            "status": "queued",
            "body": body,
            "created_at": _now(),
        }
        return httpx.Response(201, json=self._view(body["job_id"]))

    def _create_jobs(self, request: httpx.Request) -> httpx.Response:
        """The bulk route: each job as `_create_job` answers it, an error in its place."""
        results = []
        self.registration_calls.append([job["job_id"] for job in json.loads(request.content)["jobs"]])
        for job in json.loads(request.content)["jobs"]:
            if job["job_id"] in self.refuse_job_ids:
                results.append({"error": {"code": "request.invalid", "message": "refused by the test"}})
                continue
            single = httpx.Request("POST", request.url, headers=request.headers, json=job)
            answer = self._create_job(single)
            if answer.status_code >= 400:
                results.append({"error": answer.json()["error"]})
            else:
                replayed = answer.headers.get("Idempotent-Replay") == "true"
                results.append({"job": answer.json(), "replayed": replayed})
        return httpx.Response(200, json={"results": results})

    def _statuses(self, request: httpx.Request) -> httpx.Response:
        """Each named job of the tenant, as `_get_job` would show its status (reads counted)."""
        tenant_id = self._tenant(request)
        statuses = {}
        for job_id in json.loads(request.content)["job_ids"]:
            job = self.jobs.get(job_id)
            if job is not None and job["tenant_id"] == tenant_id:
                # A status look counts as a read: jobs made to finish after N reads still do.
                self.reads[job_id] = self.reads.get(job_id, 0) + 1
                if self.finish_after_reads is not None and self.reads[job_id] >= self.finish_after_reads:
                    job["status"] = "done"
                statuses[job_id] = job["status"]
        return httpx.Response(200, json={"statuses": statuses})

    def _requeue(self, request: httpx.Request, job_id: str) -> httpx.Response:
        if not self._owned(request, job_id):
            return _error(404, "job.not_found")
        job = self.jobs[job_id]
        if job["status"] == "failed" and job.get("error_code") in UNQUEUED_ERROR_CODES:
            job["status"], job["error_code"] = "queued", None
        return httpx.Response(200, json=self._view(job_id))

    def _owned(self, request: httpx.Request, job_id: str) -> bool:
        tenant_id = self._tenant(request)
        return job_id in self.jobs and self.jobs[job_id]["tenant_id"] == tenant_id

    def _get_job(self, request: httpx.Request, job_id: str) -> httpx.Response:
        if not self._owned(request, job_id):
            return _error(404, "job.not_found")
        self.reads[job_id] = self.reads.get(job_id, 0) + 1
        if self.finish_after_reads is not None and self.reads[job_id] >= self.finish_after_reads:
            self.jobs[job_id]["status"] = "done"
        return httpx.Response(200, json=self._view(job_id))

    def _image(self, request: httpx.Request, job_id: str) -> httpx.Response:
        if not self._owned(request, job_id):
            return _error(404, "job.not_found")
        image = self.jobs[job_id]["body"]["image"]
        return httpx.Response(
            200, content=base64.b64decode(image["data_b64"]), headers={"Content-Type": image["media_type"]}
        )

    def _fail(self, request: httpx.Request, job_id: str) -> httpx.Response:
        if not self._owned(request, job_id):
            return _error(404, "job.not_found")
        self.jobs[job_id]["status"] = "failed"
        self.jobs[job_id]["error_code"] = json.loads(request.content)["error_code"]
        self.failed_jobs.append(job_id)
        return httpx.Response(200, json=self._view(job_id))

    def _batch_view(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        items = [self._view(j) for j, job in self.jobs.items() if job["body"].get("batch_id") == batch_id]
        counts = {"total": batch["total"], "queued": 0, "running": 0, "done": 0, "rejected": 0, "failed": 0}
        for item in items:
            counts[item["status"]] += 1
        return {
            "batch_id": batch_id,
            "client_ref": batch.get("client_ref"),
            "created_at": batch["created_at"],
            "counts": counts,
            "items": items,
        }

    def _create_batch(self, request: httpx.Request) -> httpx.Response:
        tenant_id = self._tenant(request)
        body = json.loads(request.content)
        batch_id = body["batch_id"]
        if batch_id in self.batches:
            if self.batches[batch_id]["tenant_id"] != tenant_id:
                return _error(409, "batch.conflict")
            return httpx.Response(200, json=self._batch_view(batch_id))
        self.batches[batch_id] = {**body, "tenant_id": tenant_id, "created_at": _now()}
        return httpx.Response(201, json=self._batch_view(batch_id))

    def _get_batch(self, request: httpx.Request, batch_id: str) -> httpx.Response:
        batch = self.batches.get(batch_id)
        if batch is None or batch["tenant_id"] != self._tenant(request):
            return _error(404, "batch.not_found")
        return httpx.Response(200, json=self._batch_view(batch_id))


JOB_ID = re.compile(r"^[0-9a-f]{32}$")
