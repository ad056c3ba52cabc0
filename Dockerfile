# syntax=docker/dockerfile:1
# Multi-stage: dependencies are installed in their own layer (kept across code
# changes), then the code; the runtime image runs as a non-root user.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# Dependencies only: an empty package with the real pyproject.toml pulls them in.
COPY pyproject.toml README.md ./
RUN mkdir myticket && touch myticket/__init__.py \
    && pip install . && pip uninstall -y myticket && rm -rf myticket build
# The code, installed as a wheel (not editable): sql/ and migrations/ ship inside the
# package (myticket/db/sql and myticket/db/migrations link to them) and are read with
# importlib.resources, so the runtime image needs nothing from /app.
COPY myticket ./myticket
COPY sql ./sql
COPY migrations ./migrations
RUN pip install --no-deps . && rm -rf build

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin myticket \
    && mkdir -p /var/lib/myticket && chown myticket /var/lib/myticket
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HTTP_PORT=9098 \
    MYTICKET_DATA_DIR=/var/lib/myticket
USER myticket
VOLUME /var/lib/myticket
EXPOSE 9098
# The health check asks /ready on the port the service listens on (HTTP_PORT).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('HTTP_PORT', '9098'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/ready', timeout=2).status != 200)"]
# Exec form: SIGTERM reaches the server itself, which then drains in-flight tickets.
CMD ["myticket", "serve"]
