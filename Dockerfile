# The hub in a container: pinned front-end assets from npm, the Python environment from PyPI, run as non-root.
#
#   docker build -t gpuclub .                      (Docker 23+; with Docker 20.10 add DOCKER_BUILDKIT=1)
#
# `RUN --mount` needs BuildKit. No `# syntax=` line on purpose: it would make BuildKit fetch its Dockerfile
# frontend from a registry, and the built-in one (Docker 20.10 and later) already understands `RUN --mount`.
# The base images are build arguments, so a machine without a registry can pass images it made itself
# (--build-arg PYTHON_BASE=... --build-arg NODE_BASE=...; tests/slow/images.py makes them with debootstrap).
# Behind a TLS-inspecting proxy, pass its CA bundle as a build secret; it is mounted only while a RUN needs it
# and never lands in a layer:
#   DOCKER_BUILDKIT=1 docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt -t gpuclub .
ARG PYTHON_BASE=python:3.11-slim-bookworm
ARG NODE_BASE=node:20-bookworm-slim

FROM ${NODE_BASE} AS assets
WORKDIR /src
COPY package.json package-lock.json ./
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export npm_config_cafile=/run/secrets/ca NODE_EXTRA_CA_CERTS=/run/secrets/ca; fi \
    && npm ci --no-audit --no-fund

FROM ${PYTHON_BASE} AS python
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The pinned dependencies first, from pyproject.toml alone (empty packages stand in for the sources), so a change
# to the code rebuilds only the small layer below and not this one.
COPY pyproject.toml README.md ./
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && mkdir hub agent && touch hub/__init__.py agent/__init__.py \
    && python3 -m venv /opt/venv && /opt/venv/bin/pip install . && rm -r hub agent
COPY hub hub
COPY agent agent
RUN --mount=type=secret,id=ca,target=/run/secrets/ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && /opt/venv/bin/pip install --no-deps --force-reinstall .

FROM ${PYTHON_BASE}
RUN useradd --system --uid 10001 --create-home --home-dir /home/gpuclub gpuclub \
    && mkdir -p /data && chown gpuclub:gpuclub /data && chmod 700 /data
COPY --from=python /opt/venv /opt/venv
WORKDIR /app
# The hub serves the agent's wheel, built at run time from agent/ (with its pyproject.toml) into /data/wheels.
COPY hub hub
COPY agent agent
COPY migrations migrations
COPY templates templates
COPY static static
COPY --from=assets /src/node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js
# Compiled now, as root: the hub cannot write beside its read-only sources, and each start would compile again.
RUN python3 -m compileall -q hub agent migrations
# /app first on the path, so templates/, static/ and migrations/ sit beside the package that uses them.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GPUCLUB_DATA_DIR=/data \
    GPUCLUB_HOST=0.0.0.0 \
    GPUCLUB_PORT=8000
USER gpuclub
VOLUME /data
EXPOSE 8000
# The port is read at check time, so a container started with another GPUCLUB_PORT is checked where it listens.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"GPUCLUB_PORT\", \"8000\")}/healthz', timeout=4)"
CMD ["sh", "-c", "gpuclub migrate && exec gpuclub serve"]
