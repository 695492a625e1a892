# syntax=docker/dockerfile:1
# The hub in a container: pinned front-end assets from npm, the Python environment from PyPI, run as non-root.

FROM node:20-bookworm-slim AS assets
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim-bookworm AS python
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hub hub
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --create-home --home-dir /home/gpuclub gpuclub \
    && mkdir -p /data && chown gpuclub:gpuclub /data && chmod 700 /data
COPY --from=python /opt/venv /opt/venv
WORKDIR /app
COPY hub hub
COPY migrations migrations
COPY templates templates
COPY static static
COPY --from=assets /src/node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js
# /app first on the path, so templates/, static/ and migrations/ sit beside the package that uses them.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    GPUCLUB_DATA_DIR=/data \
    GPUCLUB_HOST=0.0.0.0
USER gpuclub
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["sh", "-c", "gpuclub migrate && exec gpuclub serve"]
