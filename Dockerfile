# One image for every Prism service; the compose file picks the command.
# Two stages: pip builds Prism into a virtual environment, and the runtime image
# gets that environment alone (no build backend, caches or sources).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/prism
COPY pyproject.toml README.md ./
COPY prism ./prism
COPY runtime ./runtime
COPY schemas ./schemas
COPY models ./models
COPY streams ./streams
COPY edge_agents ./edge_agents
RUN /opt/prism/bin/pip install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/prism/bin:$PATH
# /state (PRISM_STATE_DIR) and /keys (docker-compose.yml's signing keys) belong
# to the service user, so the volumes mounted there start out writable by it.
RUN useradd --create-home --uid 10001 prism && mkdir /state /keys && chown prism:prism /state /keys
COPY --from=build /opt/prism /opt/prism
USER prism
WORKDIR /home/prism
# Healthy once the service's Prometheus /metrics on $METRICS_PORT answers; a
# container without METRICS_PORT (a one-shot job) has nothing to probe.
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=12 CMD \
  python -c "import os, urllib.request; p = os.environ.get('METRICS_PORT'); p and urllib.request.urlopen(f'http://127.0.0.1:{p}/metrics', timeout=3)"
ENTRYPOINT []
CMD ["prism", "--help"]
