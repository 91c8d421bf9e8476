-- Claude Code telemetry (DESIGN §5): typed tables per event kind, every event raw, metric points, spans.
-- Placeholders: {db}, {on_cluster}, {replicated} (filled by store/schema.py). Statements end with a line ending in ';'.
-- Every table is a ReplacingMergeTree whose ORDER BY holds a deterministic key (event_key: request id for
-- api_request, else session id + event.sequence, else a hash of the record), so a re-delivered export is
-- stored once: read with FINAL. event_time is part of the key because `claude --continue` reuses session.id
-- and restarts event.sequence in the new process. Identity columns come from log attributes first, then resource attributes.
-- Prompt and response text is kept only when the telemetry config enables it (prompt_length always).
-- Never edit this file once released: add NNNN_next.sql instead.

CREATE TABLE IF NOT EXISTS {db}.cc_user_prompts{on_cluster}
(
    event_key String,
    event_name LowCardinality(String),
    session_id String,
    prompt_id String,
    event_sequence Nullable(UInt64),
    user_id String,
    user_email String,
    user_account_uuid String,
    organization_id String,
    app_version LowCardinality(String),
    terminal_type LowCardinality(String),
    service_name LowCardinality(String),
    resource_attributes Map(String, String),
    event_time DateTime64(9, 'UTC'),
    observed_time DateTime64(9, 'UTC'),
    trace_id String,
    span_id String,
    ingested_at DateTime64(6, 'UTC'),
    prompt_length Nullable(Int64),
    prompt String,
    message_uuid String
)
ENGINE = {replicated}ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (session_id, event_time, event_key);

CREATE TABLE IF NOT EXISTS {db}.cc_api_requests{on_cluster}
(
    event_key String,
    event_name LowCardinality(String),
    session_id String,
    prompt_id String,
    event_sequence Nullable(UInt64),
    user_id String,
    user_email String,
    user_account_uuid String,
    organization_id String,
    app_version LowCardinality(String),
    terminal_type LowCardinality(String),
    service_name LowCardinality(String),
    resource_attributes Map(String, String),
    event_time DateTime64(9, 'UTC'),
    observed_time DateTime64(9, 'UTC'),
    trace_id String,
    span_id String,
    ingested_at DateTime64(6, 'UTC'),
    model LowCardinality(String),
    input_tokens Nullable(Int64),
    output_tokens Nullable(Int64),
    cache_read_tokens Nullable(Int64),
    cache_creation_tokens Nullable(Int64),
    cache_creation_5m_tokens Nullable(Int64),
    cache_creation_1h_tokens Nullable(Int64),
    cost_usd Nullable(Float64),
    cost_usd_micros Nullable(Int64),
    duration_ms Nullable(Int64),
    ttft_ms Nullable(Int64),
    request_id String,
    query_source LowCardinality(String),
    speed LowCardinality(String),
    effort LowCardinality(String),
    mcp_server_name String,
    mcp_tool_name String
)
ENGINE = {replicated}ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (session_id, event_time, event_key);

CREATE TABLE IF NOT EXISTS {db}.cc_api_errors{on_cluster}
(
    event_key String,
    event_name LowCardinality(String),
    session_id String,
    prompt_id String,
    event_sequence Nullable(UInt64),
    user_id String,
    user_email String,
    user_account_uuid String,
    organization_id String,
    app_version LowCardinality(String),
    terminal_type LowCardinality(String),
    service_name LowCardinality(String),
    resource_attributes Map(String, String),
    event_time DateTime64(9, 'UTC'),
    observed_time DateTime64(9, 'UTC'),
    trace_id String,
    span_id String,
    ingested_at DateTime64(6, 'UTC'),
    model LowCardinality(String),
    error String,
    status_code String,
    attempt Nullable(Int64),
    duration_ms Nullable(Int64),
    request_id String,
    query_source LowCardinality(String),
    speed LowCardinality(String)
)
ENGINE = {replicated}ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (session_id, event_time, event_key);

CREATE TABLE IF NOT EXISTS {db}.cc_tool_results{on_cluster}
(
    event_key String,
    event_name LowCardinality(String),
    session_id String,
    prompt_id String,
    event_sequence Nullable(UInt64),
    user_id String,
    user_email String,
    user_account_uuid String,
    organization_id String,
    app_version LowCardinality(String),
    terminal_type LowCardinality(String),
    service_name LowCardinality(String),
    resource_attributes Map(String, String),
    event_time DateTime64(9, 'UTC'),
    observed_time DateTime64(9, 'UTC'),
    trace_id String,
    span_id String,
    ingested_at DateTime64(6, 'UTC'),
    tool_name String,
    tool_use_id String,
    success Nullable(Bool),
    duration_ms Nullable(Int64),
    tool_input_size_bytes Nullable(Int64),
    tool_result_size_bytes Nullable(Int64),
    mcp_server_scope LowCardinality(String),
    mcp_server_name String,
    mcp_tool_name String,
    tool_parameters String,
    error String,
    decision_source LowCardinality(String),
    decision_type LowCardinality(String),
    request_id String
)
ENGINE = {replicated}ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (session_id, event_time, event_key);

CREATE TABLE IF NOT EXISTS {db}.cc_tool_decisions{on_cluster}
(
    event_key String,
    event_name LowCardinality(String),
    session_id String,
    prompt_id String,
    event_sequence Nullable(UInt64),
    user_id String,
    user_email String,
    user_account_uuid String,
    organization_id String,
    app_version LowCardinality(String),
    terminal_type LowCardinality(String),
    service_name LowCardinality(String),
    resource_attributes Map(String, String),
    event_time DateTime64(9, 'UTC'),
    observed_time DateTime64(9, 'UTC'),
    trace_id String,
    span_id String,
    ingested_at DateTime64(6, 'UTC'),
    tool_name String,
    tool_use_id String,
    decision LowCardinality(String),
    source LowCardinality(String),
    tool_source LowCardinality(String),
    permission_mode LowCardinality(String),
    mcp_server_name String,
    mcp_tool_name String,
    tool_parameters String,
    request_id String
)
ENGINE = {replicated}ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (session_id, event_time, event_key);

CREATE TABLE IF NOT EXISTS {db}.cc_events_raw{on_cluster}
(
    event_key String,
    event_name LowCardinality(String),
    session_id String,
    prompt_id String,
    event_sequence Nullable(UInt64),
    user_id String,
    user_email String,
    user_account_uuid String,
    organization_id String,
    app_version LowCardinality(String),
    terminal_type LowCardinality(String),
    service_name LowCardinality(String),
    resource_attributes Map(String, String),
    event_time DateTime64(9, 'UTC'),
    observed_time DateTime64(9, 'UTC'),
    trace_id String,
    span_id String,
    ingested_at DateTime64(6, 'UTC'),
    scope_name LowCardinality(String),
    scope_version LowCardinality(String),
    severity_number UInt8,
    severity_text LowCardinality(String),
    flags UInt32,
    body String,
    attributes Map(String, String),
    attributes_json String
)
ENGINE = {replicated}ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (session_id, event_time, event_key)
TTL toDateTime(event_time) + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS {db}.cc_metric_points{on_cluster}
(
    point_key String,
    metric_name LowCardinality(String),
    description String,
    unit LowCardinality(String),
    metric_type LowCardinality(String),
    temporality LowCardinality(String),
    is_monotonic Nullable(Bool),
    start_time DateTime64(9, 'UTC'),
    time DateTime64(9, 'UTC'),
    value Nullable(Float64),
    value_int Nullable(Int64),
    count Nullable(UInt64),
    sum Nullable(Float64),
    min Nullable(Float64),
    max Nullable(Float64),
    bucket_counts Array(UInt64),
    explicit_bounds Array(Float64),
    extra_json String,
    flags UInt32,
    session_id String,
    user_id String,
    user_email String,
    user_account_uuid String,
    organization_id String,
    app_version LowCardinality(String),
    terminal_type LowCardinality(String),
    service_name LowCardinality(String),
    scope_name LowCardinality(String),
    scope_version LowCardinality(String),
    attributes Map(String, String),
    resource_attributes Map(String, String),
    ingested_at DateTime64(6, 'UTC')
)
ENGINE = {replicated}ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(time)
ORDER BY (metric_name, session_id, time, point_key);

CREATE TABLE IF NOT EXISTS {db}.cc_spans{on_cluster}
(
    trace_id String,
    span_id String,
    parent_span_id String,
    trace_state String,
    name LowCardinality(String),
    kind UInt8,
    start_time DateTime64(9, 'UTC'),
    end_time DateTime64(9, 'UTC'),
    duration_ns Int64,
    status_code UInt8,
    status_message String,
    flags UInt32,
    session_id String,
    user_id String,
    app_version LowCardinality(String),
    service_name LowCardinality(String),
    scope_name LowCardinality(String),
    scope_version LowCardinality(String),
    attributes Map(String, String),
    attributes_json String,
    events_json String,
    links_json String,
    resource_attributes Map(String, String),
    ingested_at DateTime64(6, 'UTC')
)
ENGINE = {replicated}ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(start_time)
ORDER BY (session_id, start_time, trace_id, span_id)
TTL toDateTime(start_time) + INTERVAL 400 DAY;
