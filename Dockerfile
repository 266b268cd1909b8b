# One image for every Prism service; the compose file picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY prism ./prism
COPY schemas ./schemas
COPY models ./models
COPY streams ./streams
COPY edge_agents ./edge_agents
RUN pip install . && useradd --create-home --uid 10001 prism
USER prism
ENTRYPOINT []
CMD ["prism", "--help"]
