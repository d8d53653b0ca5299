#!/usr/bin/env python3
"""DuckDB's side of benches/history.sh: the queries of history_queries.sql
over the same Parquet files (Hive partitioning), RUNS times in one process.
Prints `query<TAB>seconds<TAB>rows` per run, like `history query`.

Usage: history_duckdb.py DATA RUNS END_UNIX_S [QUERY_NAME]
"""
import datetime, os, sys, time

import duckdb

data, runs, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
only = sys.argv[4] if len(sys.argv) > 4 else None


def at(hours_back):
    t = datetime.datetime.fromtimestamp(end - hours_back * 3600, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:00:00Z")


queries, name = [], None
for line in open(os.path.join(os.path.dirname(__file__), "history_queries.sql")):
    if line.startswith("-- name: "):
        name = line[len("-- name: "):].strip()
    elif line.startswith("-- duckdb: ") and only in (None, name):
        q = line[len("-- duckdb: "):].strip()
        queries.append((name, q.replace("{T24H}", at(24)).replace("{T7D}", at(24 * 7)).replace("{T30D}", at(24 * 30))))

con = duckdb.connect()
con.execute("SET threads = %d" % os.cpu_count())
con.execute(
    "CREATE VIEW flows AS SELECT * FROM read_parquet('%s/flows/*/*/*.parquet', hive_partitioning = true)" % data
)
for _ in range(runs):
    for name, q in queries:
        t = time.perf_counter()
        rel = con.sql(q)
        rows = (rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()).num_rows
        print("%s\t%.4f\t%d" % (name, time.perf_counter() - t, rows), flush=True)
