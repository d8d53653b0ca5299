-- The history benchmark's queries (benches/history.sh), each for tapstream
-- and for DuckDB over the same Parquet files. {T24H}, {T7D} and {T30D} are
-- the start of the last 24 hours, 7 days and 30 days of the data.
-- DuckDB has no cidr_contains: for an IPv4 /16 in dotted text,
-- starts_with(orig_h, '10.1.') selects exactly the same rows.

-- name: top10_talkers_24h
-- tapstream: SELECT orig_h, sum(orig_ip_bytes + resp_ip_bytes) AS bytes FROM flows WHERE ts >= '{T24H}' GROUP BY orig_h ORDER BY bytes DESC, orig_h LIMIT 10
-- duckdb: SELECT orig_h, sum(orig_ip_bytes + resp_ip_bytes) AS bytes FROM flows WHERE ts >= '{T24H}' GROUP BY orig_h ORDER BY bytes DESC, orig_h LIMIT 10

-- name: bytes_per_proto_hour_7d
-- tapstream: SELECT date_trunc('hour', ts) AS h, proto, sum(orig_ip_bytes + resp_ip_bytes) AS bytes FROM flows WHERE ts >= '{T7D}' GROUP BY 1, 2 ORDER BY 1, 2
-- duckdb: SELECT date_trunc('hour', ts) AS h, proto, sum(orig_ip_bytes + resp_ip_bytes) AS bytes FROM flows WHERE ts >= '{T7D}' GROUP BY 1, 2 ORDER BY 1, 2

-- name: one_ip_30d
-- tapstream: SELECT * FROM flows WHERE ts >= '{T30D}' AND (orig_h = '10.3.50.10' OR resp_h = '10.3.50.10')
-- duckdb: SELECT * FROM flows WHERE ts >= '{T30D}' AND (orig_h = '10.3.50.10' OR resp_h = '10.3.50.10')

-- name: cidr_port_count_30d
-- tapstream: SELECT count(*) AS n FROM flows WHERE ts >= '{T30D}' AND cidr_contains('10.1.0.0/16', orig_h) AND resp_p = 443
-- duckdb: SELECT count(*) AS n FROM flows WHERE ts >= '{T30D}' AND starts_with(orig_h, '10.1.') AND resp_p = 443
