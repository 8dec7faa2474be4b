"""The Celery message from the gateway (producer) to the inference worker (consumer), apart from
its body (`contracts.jobs.InferenceTask`): the task's name and queue, the keyword that carries the
body and the header that carries the request id. The task id is the job id."""

from __future__ import annotations

INFERENCE_TASK_NAME = "inference.predict"
# Several jobs of one batch in one message (body `contracts.jobs.InferenceChunk`, same kwarg);
# the task id is a fresh id, each job keeps its own id inside.
INFERENCE_CHUNK_TASK_NAME = "inference.predict_chunk"
INFERENCE_QUEUE = "inference"
# kwargs = {PAYLOAD_KWARG: <InferenceTask as a JSON dict>}; the task function's parameter name.
PAYLOAD_KWARG = "payload"
# Task header with the request id, for a payload that carries none (queued by an older gateway).
REQUEST_ID_TASK_HEADER = "request_id"
# kwargs[FIRST_ATTEMPT_KWARG]: when the task's first attempt started (Unix seconds), added by the
# worker to its own retries so that their time budget (INFERENCE_RETRY_WINDOW_SECONDS) counts from
# the first attempt, not from a retry; absent on a message the gateway (or the sweeper) queued.
FIRST_ATTEMPT_KWARG = "first_attempt_at"
