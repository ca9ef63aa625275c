# One image for every sagaline role; the command picks the role:
#   sagaline migrate                   one-shot schema upgrade
#   python -m orchestrator             the orchestrator (the default)
#   python -m consumers payments       a worker (payments | inventory | shipping | ...)
# Configuration comes only from the environment at run time (AMQP_URL, DATABASE_URL,
# SAGALINE_*): nothing secret is baked into a layer.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: a virtualenv with sagaline and its dependencies ------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/sagaline
ENV PATH=/opt/sagaline/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject alone, so that a source (or README) change reuses this layer;
# with them the build backend (build-system.requires), so that building sagaline's own wheel below
# needs no download.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(p['project']['dependencies'] + p['build-system']['requires']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY README.md ./
COPY sagaline ./sagaline
COPY sagaline_tools ./sagaline_tools
COPY orchestrator ./orchestrator
COPY consumers ./consumers
COPY contracts ./contracts
COPY migrations ./migrations
# A regular (not editable) install: the final image needs no source tree.
# The import check runs from / so that it sees the installed packages, not /src.
# pip, setuptools and wheel only install: the final image runs without them (about 25 MB).
RUN pip install --no-deps --no-build-isolation . \
 && pip uninstall --yes pip setuptools wheel \
 && cd / && python -c "import sagaline_tools.cli, orchestrator, consumers, contracts, migrations"

# --- final: slim runtime, non-root -----------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="sagaline" \
      org.opencontainers.image.description="A saga orchestrator for RabbitMQ and PostgreSQL" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --gid 10001 sagaline \
 && useradd --uid 10001 --gid sagaline --no-log-init --home-dir /home/sagaline --create-home \
      --shell /usr/sbin/nologin sagaline

# Same base image as the builder, so the venv's interpreter path is valid here.
COPY --from=builder /opt/sagaline /opt/sagaline

ENV PATH=/opt/sagaline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SAGALINE_HTTP_HOST=0.0.0.0 \
    SAGALINE_HTTP_PORT=8080

USER 10001:10001
WORKDIR /home/sagaline
EXPOSE 8080

# Liveness only (/healthz); orchestration platforms should gate traffic on /readyz, which also
# checks the broker and the database (docker-compose.yml does).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SAGALINE_HTTP_PORT', '8080'), timeout=2)"]

CMD ["python", "-m", "orchestrator"]
