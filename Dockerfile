# Tollgate: MCP gateway + OTLP endpoint + UI in one process, embedded chDB store in /data.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# Node runs npm-packaged stdio upstreams (npx ...); drop it if all your upstreams are remote.
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY ingest ingest
COPY store store
COPY ui ui
COPY demo demo
RUN pip install '.[demo]'
COPY config.example.toml /etc/tollgate/config.toml

RUN useradd --create-home --uid 10001 tollgate && mkdir -p /data && chown tollgate /data
USER tollgate
VOLUME ["/data"]
EXPOSE 8765

# Inside a container the port must be reachable from outside: bind 0.0.0.0 and set a token,
# e.g. -e TOLLGATE_TOKEN=... with `auth_tokens = ["${TOLLGATE_TOKEN}"]` in the mounted config.
ENTRYPOINT ["tini", "--", "tollgate"]
CMD ["serve", "--config", "/etc/tollgate/config.toml", "--data-dir", "/data"]
