-- A per-day rollup of tools/call rows for the servers views (store/rollup.py), exact under re-delivery: per
-- upstream (per_tool = 0, tool = '') for the servers list, and per tool (per_tool = 1) for one server's page.
-- A materialized view cannot roll calls up itself: it sees every inserted copy, so a re-delivered spill segment
-- would count twice. Instead the view below only marks which days received rows (calls_days), and Tollgate
-- computes a day's rollup rows from `calls FINAL` once the day is over and quiet, recording the mark it saw
-- (marks_seen). A later insert into that day (a late or re-delivered row) moves its mark past marks_seen, and
-- readers go back to `calls FINAL` for that day until it is rolled up again.
-- Never edit this file once released: add NNNN_next.sql instead.

CREATE TABLE IF NOT EXISTS {db}.calls_days{on_cluster}
(
    day Date,
    marked_at DateTime64(6, 'UTC')
)
ENGINE = {replicated}ReplacingMergeTree(marked_at)
ORDER BY day;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.calls_days_mv{on_cluster} TO {db}.calls_days
AS SELECT toDate(started_at) AS day, now64(6, 'UTC') AS marked_at FROM {db}.calls GROUP BY day;

-- Days that already hold calls (the view marks only new inserts), so they are rolled up too.
INSERT INTO {db}.calls_days SELECT toDate(started_at) AS day, now64(6, 'UTC') AS marked_at FROM {db}.calls GROUP BY day;

CREATE TABLE IF NOT EXISTS {db}.calls_rollup{on_cluster}
(
    day Date,
    upstream LowCardinality(String),
    per_tool UInt8,
    tool String,
    marks_seen DateTime64(6, 'UTC'),
    calls UInt64,
    errors UInt64,
    req_bytes UInt64,
    resp_bytes UInt64,
    est_tokens UInt64,
    req_bytes_max UInt64,
    resp_bytes_max UInt64,
    first_at DateTime64(6, 'UTC'),
    last_at DateTime64(6, 'UTC'),
    tools AggregateFunction(uniqExact, String),
    sessions AggregateFunction(uniqExact, String),
    req_q AggregateFunction(quantilesTDigest(0.5, 0.95), UInt64),
    resp_q AggregateFunction(quantilesTDigest(0.5, 0.95), UInt64),
    duration_q AggregateFunction(quantileTDigest(0.95), Float64),
    sizes Tuple(Array(UInt8), Array(UInt64))
)
ENGINE = {replicated}ReplacingMergeTree(marks_seen)
PARTITION BY toYYYYMM(day)
ORDER BY (per_tool, day, upstream, tool);
