-- Rows whose time is unknown are kept 400 days from their arrival, not deleted at their first merge.
-- A log record that carries no time (none of timeUnixNano, observedTimeUnixNano, event.timestamp) and has no timed
-- neighbour in its body is stored at event_time 0, OTLP's "unknown" (never the receive time: event_time is in the
-- ORDER BY, and a re-delivered body must replace its rows, docs/ingest.md); likewise a span without a start time.
-- The TTLs of 0002 counted 400 days from 1970 and dropped such rows at once. Existing parts are not rewritten
-- (materialize_ttl_after_modify = 0): none holds such a row, earlier versions never kept one.
-- Never edit this file once released: add NNNN_next.sql instead.

ALTER TABLE {db}.cc_events_raw{on_cluster}
    MODIFY TTL toDateTime(if(event_time = 0, ingested_at, event_time)) + INTERVAL 400 DAY
    SETTINGS materialize_ttl_after_modify = 0;

ALTER TABLE {db}.cc_spans{on_cluster}
    MODIFY TTL toDateTime(if(start_time = 0, ingested_at, start_time)) + INTERVAL 400 DAY
    SETTINGS materialize_ttl_after_modify = 0;
