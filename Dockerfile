# Tollgate: MCP gateway + OTLP endpoint + UI in one process, embedded chDB store in the /data volume.
#   docker build -t tollgate . && docker run -p 8765:8765 -e TOLLGATE_TOKEN=... -v tollgate-data:/data tollgate
# The default config (docker/config.toml) is config.example.toml listening on 0.0.0.0 with that bearer token;
# mount your own at /etc/tollgate/config.toml.
# Trixie's Node.js is 20, which the npm demo upstream needs (bookworm's is 18).
FROM python:3.11-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# Node runs npm-packaged stdio upstreams; drop it if all your upstreams are remote.
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The demo upstream only (package.json also pins the Claude Code CLI, which only the tests need).
RUN npm install --no-audit --no-fund --loglevel=error @modelcontextprotocol/server-everything@2026.8.31
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY ingest ingest
COPY store store
COPY ui ui
COPY demo demo
RUN pip install '.[demo]'
COPY docker/config.toml /etc/tollgate/config.toml

RUN useradd --create-home --uid 10001 tollgate && mkdir -p /data && chown tollgate /data
USER tollgate
VOLUME ["/data"]
EXPOSE 8765

ENTRYPOINT ["tini", "--", "tollgate"]
CMD ["serve", "--config", "/etc/tollgate/config.toml"]
