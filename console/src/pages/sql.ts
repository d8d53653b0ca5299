// The SQL console: an editor with examples, the result as a table and a
// chart, export, and the guardrails' errors shown as they come.
import { download, post } from "../api";
import { barOption, mount, timeOption } from "../charts";
import { VTable, type Column } from "../table";
import { type Page, act, errorBox } from "../ui";
import { h, num, si, time } from "../util";

interface Answer {
  columns: { name: string; type: string }[];
  rows: Record<string, unknown>[];
  truncated: boolean;
  notes: string[];
  elapsed_ms: number;
}

const EXAMPLES: [string, string][] = [
  ["Top talkers, last hour", "SELECT orig_h, SUM(orig_ip_bytes + resp_ip_bytes) AS bytes, COUNT(*) AS flows\nFROM flows\nWHERE ts > now() - INTERVAL '1 hour'\nGROUP BY orig_h ORDER BY bytes DESC LIMIT 20"],
  ["Packets per minute", "SELECT date_bin(INTERVAL '1 minute', ts, TIMESTAMP '1970-01-01') AS minute, SUM(packets) AS packets\nFROM stats\nWHERE ts > now() - INTERVAL '1 hour'\nGROUP BY 1 ORDER BY 1"],
  ["DNS names asked most", "SELECT query, COUNT(*) AS n\nFROM dns\nWHERE ts > now() - INTERVAL '1 hour'\nGROUP BY query ORDER BY n DESC LIMIT 25"],
  ["TLS server names", "SELECT server_name, version, COUNT(*) AS n\nFROM tls\nWHERE ts > now() - INTERVAL '1 hour'\nGROUP BY 1, 2 ORDER BY n DESC LIMIT 25"],
  ["Unanswered SYNs (S0) by destination", "SELECT resp_h, resp_p, COUNT(*) AS attempts\nFROM flows\nWHERE ts > now() - INTERVAL '1 hour' AND conn_state = 'S0'\nGROUP BY 1, 2 ORDER BY attempts DESC LIMIT 20"],
  ["Traffic inside 10.0.0.0/8", "SELECT orig_h, resp_h, resp_p, proto, orig_bytes + resp_bytes AS bytes\nFROM flows\nWHERE ts > now() - INTERVAL '1 hour' AND cidr_contains('10.0.0.0/8', orig_h)\nORDER BY bytes DESC LIMIT 100"],
  ["Alerts by severity", "SELECT severity, COUNT(DISTINCT id) AS alerts\nFROM alerts\nWHERE ts > now() - INTERVAL '1 day'\nGROUP BY severity ORDER BY alerts DESC"],
];

export function sqlPage(pg: Page): void {
  const editor = h("textarea", { class: "editor", spellcheck: "false", "aria-label": "SQL", rows: 8 }, EXAMPLES[0][1]);
  const err = errorBox();
  const info = h("span", { class: "muted" });
  const notes = h("ul", { class: "notes" });
  const t = new VTable({ columns: [], empty: "Run a query to see its result." });
  const chartEl = h("div", { class: "chart-box" });
  const { chart, dispose } = mount(chartEl);
  pg.onLeave(dispose);
  let last: Answer | null = null;
  const run = async () => {
    err.clear();
    info.textContent = "running…";
    try {
      const a = await post<Answer>("/api/query", { sql: editor.value });
      last = a;
      const cols: Column[] = a.columns.map((c) => ({ name: c.name, width: Math.max(110, Math.min(320, c.name.length * 10)), render: c.type.startsWith("Timestamp") ? (v) => time(v as string) : undefined }));
      t.setColumns(cols, cols.map((c) => c.name));
      t.setRows(a.rows);
      info.textContent = `${num(a.rows.length)} rows${a.truncated ? " (truncated at the row limit: export for all)" : ""} in ${a.elapsed_ms} ms`;
      notes.replaceChildren(...a.notes.map((n) => h("li", null, n)));
      draw(a);
    } catch (e) {
      info.textContent = "";
      err.show(e);
    }
  };
  const draw = (a: Answer) => {
    // First text/time column against the first numeric one.
    const numeric = a.columns.find((c) => /Int|Float|Decimal/.test(c.type));
    const label = a.columns.find((c) => c !== numeric);
    if (!numeric || !label || !a.rows.length) {
      chart.clear();
      chartEl.dataset.points = "0";
      return;
    }
    const v = (r: Record<string, unknown>) => Number(r[numeric.name] ?? 0);
    if (label.type.startsWith("Timestamp")) {
      chart.setOption(timeOption([{ name: numeric.name, points: a.rows.map((r) => [Date.parse(String(r[label.name]).replace(/(\d)$/, "$1Z")), v(r)]), area: true }], (n) => si(n)), { notMerge: true });
    } else {
      chart.setOption(barOption(a.rows.slice(0, 30).map((r) => ({ name: String(r[label.name] ?? ""), value: v(r) })), (n) => si(n)), { notMerge: true });
    }
    chartEl.dataset.points = String(a.rows.length);
  };
  editor.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") {
      e.preventDefault();
      void run();
    }
  });
  const exportAs = (format: string) => h("button", { class: "btn", type: "button", onclick: () => void act(`Exported ${format.toUpperCase()}`, () => download("POST", "/api/export", { format, sql: editor.value })) }, format.toUpperCase());
  pg.root.append(
    h("div", { class: "page-head" }, h("h2", null, "SQL"), h("span", { class: "grow" }), h("span", { class: "muted small" }, "Read-only; time-limited; a default time range applies when a query has none. Tables: flows, dns, tls, http, dhcp, stats, alerts.")),
    h(
      "div",
      { class: "sql-top" },
      h("div", { class: "sql-editor" }, editor, h("div", { class: "toolbar" }, h("button", { class: "btn primary", type: "button", onclick: () => void run() }, "Run (Ctrl+Enter)"), info, h("span", { class: "grow" }), h("span", { class: "muted" }, "Export all rows:"), exportAs("csv"), exportAs("json"), exportAs("parquet"))),
      h("div", { class: "examples" }, h("h4", null, "Examples"), ...EXAMPLES.map(([name, sql]) => h("button", { class: "link-btn", type: "button", onclick: () => ((editor.value = sql), void run()) }, name))),
    ),
    err,
    notes,
    h("div", { class: "sql-result" }, h("div", { class: "table-wrap" }, t.el), chartEl),
  );
  void last;
}
