#!/usr/bin/env python3
"""A planning measurement, not part of CI: would another Parquet layout of
the flows table answer "all flows of one IP" fast? Rewrites HOURS compacted
hours of a history (benches/history.sh's data) with pyarrow in two layouts
and times the query with DataFusion (Python, the same major version as
ours), pages locked in the page cache by the caller (vmtouch -l).

  today  : the hours as tapstream wrote them (sorted by orig_h).
  main2  : the same rows sorted by orig_h without the derivable columns
           (community_id, duration, flow_start), 8 KiB pages, dictionary
           encoding only for columns with fewer than 20 000 distinct values.
  resp2  : main2's rows sorted by resp_h (the second copy).

Usage: layout_probe.py DATA OUT HOURS IP
"""
import glob, os, sys, time

import pyarrow.parquet as pq
from datafusion import SessionConfig, SessionContext

data, out, hours, ip = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
DERIVED = ["community_id", "duration", "flow_start"]


def distinct(col):
    """Distinct values of a column; list columns count as many."""
    try:
        return len(col.unique())
    except Exception:
        return 1 << 62


files = sorted(glob.glob(os.path.join(data, "flows/date=*/hour=*/*.parquet")))[-hours:]
sizes = {"today": 0, "main2": 0, "resp2": 0}
for f in files:
    rel = os.path.relpath(f, os.path.join(data, "flows"))
    t = pq.read_table(f)
    sizes["today"] += os.path.getsize(f)
    link = os.path.join(out, "today", rel)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if not os.path.exists(link):
        os.symlink(f, link)
    t = t.drop_columns([c for c in DERIVED if c in t.column_names])
    dic = [c for c in t.column_names if distinct(t.column(c)) < 20000]
    for name, key in [("main2", "orig_h"), ("resp2", "resp_h")]:
        p = os.path.join(out, name, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        pq.write_table(
            t.sort_by([(key, "ascending"), ("ts", "ascending")]),
            p,
            compression="zstd",
            write_page_index=True,
            data_page_size=8 * 1024,
            use_dictionary=dic,
            row_group_size=1 << 20,
        )
        sizes[name] += os.path.getsize(p)
print("hours %d; bytes: today %d, main2 %d, resp2 %d" % (len(files), sizes["today"], sizes["main2"], sizes["resp2"]))

cfg = (
    SessionConfig()
    .set("datafusion.execution.parquet.pushdown_filters", "true")
    .set("datafusion.execution.parquet.enable_page_index", "true")
    .set("datafusion.execution.collect_statistics", "false")
    .set("datafusion.execution.parquet.metadata_size_hint", "65536")
)
ctx = SessionContext(cfg)
for name in sizes:
    ctx.register_parquet(name, os.path.join(out, name) + "/", table_partition_cols=[("date", "string"), ("hour", "string")])
queries = {
    "today: orig_h = ip OR resp_h = ip": f"SELECT * FROM today WHERE orig_h = '{ip}' OR resp_h = '{ip}'",
    "main2 + resp2: orig_h = ip UNION ALL resp_h = ip AND orig_h <> ip":
        f"SELECT * FROM main2 WHERE orig_h = '{ip}' UNION ALL SELECT * FROM resp2 WHERE resp_h = '{ip}' AND orig_h <> '{ip}'",
}
for r in range(5):
    for k, q in queries.items():
        t = time.perf_counter()
        n = sum(b.num_rows for b in ctx.sql(q).collect())
        print("%d\t%s\t%.3f\t%d" % (r, k, time.perf_counter() - t, n), flush=True)
