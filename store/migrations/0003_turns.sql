-- Turns (DESIGN §6): a view, not a materialized table. A turn is (session_id, prompt_id); a session whose
-- events carry no prompt.id is segmented by its user_prompt events in (event_time, event.sequence) order, and
-- every row says which (`match_method` = 'prompt_id' | 'turn_order'). Turn 0 holds what came before the first
-- prompt. Measured (docs/turns.md): one session's turns read by primary key (session_id leads every telemetry
-- ORDER BY) in milliseconds, so nothing is materialized; store/queries_turns.py runs this same SQL with its
-- filters pushed into the inner selects (a test keeps the two equal).
-- Skip indexes serve the tie joins: calls by time range and tool_use_id, tool results by tool_use_id.
-- Never edit this file once released: add NNNN_next.sql instead.

ALTER TABLE {db}.calls{on_cluster} ADD INDEX IF NOT EXISTS idx_started_at started_at TYPE minmax GRANULARITY 1;

ALTER TABLE {db}.calls{on_cluster} ADD INDEX IF NOT EXISTS idx_tool_use_id tool_use_id TYPE bloom_filter(0.01) GRANULARITY 4;

ALTER TABLE {db}.cc_tool_results{on_cluster} ADD INDEX IF NOT EXISTS idx_tool_use_id tool_use_id TYPE bloom_filter(0.01) GRANULARITY 4;

CREATE VIEW IF NOT EXISTS {db}.turns{on_cluster} AS
SELECT
    session_id,
    if(has_ids, turn_key, '') AS prompt_id,
    if(has_ids, 'prompt_id', 'turn_order') AS match_method,
    min(turn_index) AS turn_index,
    anyIf(e_prompt_length, is_prompt = 1) AS prompt_length,
    anyIf(e_prompt, is_prompt = 1) AS prompt,
    min(event_time) AS started_at,
    max(event_time) AS ended_at,
    countIf(is_prompt = 0) AS requests,
    sum(e_input_tokens) AS input_tokens,
    sum(e_output_tokens) AS output_tokens,
    sum(e_cache_read_tokens) AS cache_read_tokens,
    sum(e_cache_creation_tokens) AS cache_creation_tokens,
    sum(e_cache_creation_5m_tokens) AS cache_creation_5m_tokens,
    sum(e_cache_creation_1h_tokens) AS cache_creation_1h_tokens,
    sum(e_input_tokens + e_output_tokens + e_cache_read_tokens + e_cache_creation_tokens) AS total_tokens,
    sum(e_usd) AS cost_usd,
    sum(e_micros) AS cost_usd_micros,
    groupUniqArrayIf(model, model != '') AS models,
    groupUniqArrayIf(query_source, query_source != '') AS query_sources,
    any(user_id) AS user_id
FROM
(
    SELECT *, if(has_ids, prompt_id, toString(turn_index)) AS turn_key
    FROM
    (
    SELECT
        *,
        sum(is_prompt) OVER (PARTITION BY session_id ORDER BY event_time, seq
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS turn_index,
        max(prompt_id != '') OVER (PARTITION BY session_id) AS has_ids
    FROM
    (
        SELECT session_id, prompt_id, event_time, ifNull(event_sequence, 0) AS seq, toUInt8(1) AS is_prompt,
               prompt_length AS e_prompt_length, prompt AS e_prompt, '' AS model, '' AS query_source, user_id,
               toInt64(0) AS e_input_tokens, toInt64(0) AS e_output_tokens, toInt64(0) AS e_cache_read_tokens,
               toInt64(0) AS e_cache_creation_tokens, toInt64(0) AS e_cache_creation_5m_tokens,
               toInt64(0) AS e_cache_creation_1h_tokens, toFloat64(0) AS e_usd, toInt64(0) AS e_micros
        FROM {db}.cc_user_prompts FINAL
        UNION ALL
        SELECT session_id, prompt_id, event_time, ifNull(event_sequence, 0) AS seq, toUInt8(0) AS is_prompt,
               CAST(NULL AS Nullable(Int64)) AS e_prompt_length, '' AS e_prompt, toString(model) AS model,
               toString(query_source) AS query_source, user_id,
               ifNull(input_tokens, 0) AS e_input_tokens, ifNull(output_tokens, 0) AS e_output_tokens,
               ifNull(cache_read_tokens, 0) AS e_cache_read_tokens,
               ifNull(cache_creation_tokens, 0) AS e_cache_creation_tokens,
               ifNull(cache_creation_5m_tokens, 0) AS e_cache_creation_5m_tokens,
               ifNull(cache_creation_1h_tokens, 0) AS e_cache_creation_1h_tokens,
               ifNull(coalesce(cost_usd, cost_usd_micros / 1000000), 0) AS e_usd,
               ifNull(coalesce(cost_usd_micros, toInt64(round(cost_usd * 1000000))), 0) AS e_micros
        FROM {db}.cc_api_requests FINAL
    )
    )
)
GROUP BY session_id, has_ids, turn_key;
