# syntax=docker/dockerfile:1
# One serving image for every SkinTriage service; compose and k8s pick the process by command
# (see docs/ARCHITECTURE.md, "Entry points"). No training library enters it: `pip install .`
# installs the serving dependencies only (ONNX Runtime serves); the `train` extra is never installed.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only the metadata, so this layer is rebuilt when dependencies change, not when code does.
# The wheel built from it holds no packages; uninstalling it leaves just the dependencies, and
# the code is copied beside them below (one copy, found through PYTHONPATH).
COPY pyproject.toml README.md ./
RUN pip install . \
    && pip uninstall --yes skintriage

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="skintriage" \
      org.opencontainers.image.description="SkinTriage serving image: gateway, reports, ood, inference worker" \
      org.opencontainers.image.licenses="Apache-2.0 (code); model CC BY-NC-SA 4.0"
# One native math thread per process (scripts/run_fleet.py NATIVE_THREAD_LIMITS says why):
# replicas and the worker pool give the parallelism.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1
RUN groupadd --system --gid 10001 skintriage \
    && useradd --system --uid 10001 --gid skintriage --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin skintriage
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
# Code and the shipped model bundle stay root-owned: the service user can read, never rewrite them.
COPY contracts/ contracts/
COPY model_bundle/ model_bundle/
COPY services/ services/
COPY models/ models/
RUN python -m compileall -q contracts model_bundle services
USER 10001:10001
EXPOSE 8000 8001 8002
# Default process: the public gateway. Other services override the command.
CMD ["uvicorn", "--factory", "services.gateway.api.app:create_app", "--host", "0.0.0.0", "--port", "8000"]
