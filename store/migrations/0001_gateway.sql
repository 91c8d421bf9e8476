-- Gateway tables (DESIGN §4): one row per call, tool-list snapshots, upstream lifecycle, budget decisions, sessions.
-- Placeholders: {db}, {on_cluster}, {replicated} (filled by store/schema.py). Statements end with a line ending in ';'.
-- Every table is a ReplacingMergeTree keyed by a deterministic id, so replaying the writer's spill never
-- double-counts: read with FINAL (or argMax by the version column) to see each row once.
-- Never edit this file once released: add NNNN_next.sql instead (the runner refuses a changed checksum).

CREATE TABLE IF NOT EXISTS {db}.calls{on_cluster}
(
    call_id String,
    method LowCardinality(String),
    upstream LowCardinality(String),
    tool String,
    exposed_name String,
    mcp_session_id String,
    client_name LowCardinality(String),
    client_version String,
    auth_identity String,
    cc_session_id String,
    cc_prompt_id String,
    tool_use_id String,
    traceparent String,
    started_at DateTime64(6, 'UTC'),
    ended_at DateTime64(6, 'UTC'),
    duration_ms Float64,
    status LowCardinality(String),
    error String,
    req_bytes_client UInt64,
    req_bytes_upstream UInt64,
    resp_bytes_upstream UInt64,
    resp_bytes_client UInt64,
    text_bytes UInt64,
    image_bytes_encoded UInt64,
    image_bytes_decoded UInt64,
    audio_bytes UInt64,
    resource_bytes UInt64,
    structured_bytes UInt64,
    content_blocks UInt32,
    est_tokens UInt64,
    budget_action LowCardinality(String),
    budget_limit String,
    progress_events UInt32,
    gateway_id LowCardinality(String),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {replicated}ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(started_at)
ORDER BY (mcp_session_id, started_at, call_id);

CREATE TABLE IF NOT EXISTS {db}.tool_lists{on_cluster}
(
    snapshot_id String,
    upstream LowCardinality(String),
    taken_at DateTime64(6, 'UTC'),
    tool String,
    exposed_name String,
    def_bytes UInt64,
    server_bytes UInt64,
    tool_count UInt32,
    mcp_session_id String,
    gateway_id LowCardinality(String),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {replicated}ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(taken_at)
ORDER BY (upstream, taken_at, snapshot_id, tool);

CREATE TABLE IF NOT EXISTS {db}.upstream_events{on_cluster}
(
    event_id String,
    upstream LowCardinality(String),
    at DateTime64(6, 'UTC'),
    kind LowCardinality(String),
    detail String,
    gateway_id LowCardinality(String),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {replicated}ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(at)
ORDER BY (upstream, at, event_id);

CREATE TABLE IF NOT EXISTS {db}.budget_events{on_cluster}
(
    event_id String,
    upstream LowCardinality(String),
    tool String,
    mcp_session_id String,
    at DateTime64(6, 'UTC'),
    limit_name LowCardinality(String),
    action LowCardinality(String),
    used Float64,
    `limit` Float64,
    `window` LowCardinality(String),
    reset_at Nullable(DateTime64(3, 'UTC')),
    gateway_id LowCardinality(String),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {replicated}ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(at)
ORDER BY (upstream, at, event_id);

-- One row per MCP client session, rewritten as it learns more (Claude Code session bound, ended):
-- the row with the highest `version` wins.
CREATE TABLE IF NOT EXISTS {db}.sessions{on_cluster}
(
    mcp_session_id String,
    started_at DateTime64(6, 'UTC'),
    ended_at Nullable(DateTime64(6, 'UTC')),
    client_name LowCardinality(String),
    client_version String,
    protocol_version LowCardinality(String),
    auth_identity String,
    cc_session_id String,
    user_agent String,
    gateway_id LowCardinality(String),
    version UInt64,
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {replicated}ReplacingMergeTree(version)
ORDER BY mcp_session_id;
