-- The rollup counts resources/read and prompts/get rows too (store/kinds.py), per tool under their labels: mark
-- every day with calls as changed, so its rollup rows (computed from tools/call rows only) are stale and readers
-- go back to `calls FINAL` for it until it is rolled up again (store/rollup.py).
-- Never edit this file once released: add NNNN_next.sql instead.

INSERT INTO {db}.calls_days SELECT toDate(started_at) AS day, now64(6, 'UTC') AS marked_at FROM {db}.calls GROUP BY day;
