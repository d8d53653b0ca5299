// The flows and protocol records explorer: a page of up to 10,000 rows in a
// virtualised table, filter bar, column chooser, export of the selection.
import { can, download, get, qs } from "../api";
import { filterBar, fromHash, resolve, toQuery, type Filter } from "../filter";
import { VTable, columnChooser, type Column } from "../table";
import { type Page, act, errorBox, message, roleButton } from "../ui";
import { h, time, num } from "../util";
import { clean } from "./history";

interface Records {
  table: string;
  from: string;
  to: string;
  columns: { name: string; type: string }[];
  rows: Record<string, unknown>[];
  more: boolean;
  older?: string;
  newer?: string;
}

const TABLES = ["flows", "dns", "tls", "http", "dhcp", "alerts"];
const DEFAULT_COLS: Record<string, string[]> = {
  flows: ["ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto", "service", "duration", "orig_bytes", "resp_bytes", "conn_state", "orig_pkts", "resp_pkts", "orig_cc", "resp_cc"],
  dns: ["ts", "uid", "orig_h", "resp_h", "query", "qtype_name", "rcode_name", "answers"],
  tls: ["ts", "uid", "orig_h", "resp_h", "server_name", "version", "cipher", "ja4"],
  http: ["ts", "uid", "orig_h", "resp_h", "method", "host", "uri", "status_code", "user_agent"],
  dhcp: ["ts", "uid", "msg_type", "mac", "client_addr", "assigned_addr", "host_name"],
  alerts: ["ts", "event", "id", "rule", "severity", "category", "explanation"],
};
const WIDTH: Record<string, number> = { ts: 170, uid: 150, orig_h: 150, resp_h: 150, orig_p: 70, resp_p: 70, proto: 60, explanation: 420, query: 260, uri: 260, server_name: 220, user_agent: 260 };

export function flowsPage(pg: Page): void {
  const { filter, range, params } = fromHash();
  if (!range.preset) range.preset = "1h";
  let table = params.get("table") ?? "flows";
  if (!TABLES.includes(table)) table = "flows";
  const uid = params.get("uid") ?? undefined;
  const limit = Number(params.get("limit") ?? 1000);
  // Pages are places in the rows (the answer's cursors), so rows written
  // meanwhile do not shift them; `row` only numbers the page's first row.
  const before = params.get("before") ?? undefined;
  const after = params.get("after") ?? undefined;
  const row = Math.max(1, Number(params.get("row") ?? 1));
  const paged = !!(before || after);
  const err = errorBox();
  const info = h("span", { class: "muted", "data-testid": "rows-info" });
  const saved = JSON.parse(localStorage.getItem(`tapstream.cols.${table}`) ?? "null") as string[] | null;
  const t = new VTable({
    columns: [],
    empty: "No rows for this selection.",
    onRow: (r) => {
      if (r.uid && table !== "alerts") location.hash = `#/flows?table=flows&uid=${r.uid}&range=${range.preset === "custom" ? "30d" : range.preset === "1h" ? "24h" : range.preset}`;
    },
  });
  const go = (q: Record<string, string>) => (location.hash = `#/flows?${new URLSearchParams(q)}`);
  const tableSel = h("select", { "aria-label": "Table", onchange: (e: Event) => go({ ...clean(toQuery(filter, range)), table: (e.target as HTMLSelectElement).value }) }, ...TABLES.map((x) => h("option", { value: x, selected: x === table }, x)));
  const limitSel = h("select", { "aria-label": "Rows", onchange: (e: Event) => go({ ...clean(toQuery(filter, range)), table, limit: (e.target as HTMLSelectElement).value }) }, ...[100, 1000, 10000].map((n) => h("option", { value: n, selected: n === limit }, `${num(n)} rows`)));
  const { from, to } = resolve(range);
  const exportBtn = (format: string) =>
    roleButton("analyst", format.toUpperCase(), () =>
      void act(`Exported ${format.toUpperCase()}`, () => {
        if (format === "pcap") {
          const body: Record<string, unknown> = uid ? { format, uid } : { format, from, to, ...numbers(filter) };
          delete body.country;
          return download("POST", "/api/export", body);
        }
        return download("POST", "/api/export", { format, table, from, to, ...numbers(filter) });
      }),
    );
  const chooser = h("span");
  // Pages of `limit` rows, newest first; a page keeps the range it was
  // asked with (the first page's end).
  const pageTo = (cursor: Record<string, string>, r: number, to?: string) =>
    go({ ...clean(toQuery(filter, to ? { preset: "custom", from: resolve(range).from, to } : range)), table, limit: String(limit), ...cursor, ...(r > 1 ? { row: String(r) } : {}) });
  let older: string | undefined;
  let newer: string | undefined;
  const prev = h("button", { class: "btn", type: "button", disabled: true, onclick: () => (row - limit <= 1 || !newer ? pageTo({}, 1) : pageTo({ after: newer }, row - limit)) }, "‹ Newer");
  const next = h("button", { class: "btn", type: "button", disabled: true, onclick: () => older && pageTo({ before: older }, row + limit, range.preset === "custom" ? undefined : lastTo) }, "Older ›");
  let lastTo: string | undefined;
  // Follow: the page refreshes every second (not for a custom range, one
  // connection or an older page).
  const follow = h("input", { type: "checkbox", name: "follow", checked: params.get("follow") === "1", disabled: range.preset === "custom" || !!uid || paged });
  const following = () => follow.checked && !follow.disabled;
  follow.addEventListener("change", () => {
    if (!following()) info.textContent = (info.textContent ?? "").replace(/ · following$/, "");
  });
  pg.root.append(
    h("div", { class: "page-head" }, h("h2", null, "Flows & records"), h("span", { class: "grow" }), info),
    filterBar(filter, range, ["15m", "1h", "24h", "7d", "30d"], (f, r) => go({ ...clean(toQuery(f, r)), table })),
    h(
      "div",
      { class: "toolbar" },
      h("label", { class: "field" }, h("span", null, "Table"), tableSel),
      limitSel,
      h("label", { class: "field", title: "refresh every second" }, follow, h("span", null, "follow")),
      prev,
      next,
      chooser,
      uid ? h("span", { class: "chip" }, `connection ${uid}`, h("a", { href: `#/flows?${new URLSearchParams({ ...clean(toQuery(filter, range)), table })}`, title: "clear" }, " ✕")) : null,
      h("span", { class: "grow" }),
      h("span", { class: "muted" }, "Export:"),
      exportBtn("csv"),
      exportBtn("json"),
      exportBtn("parquet"),
      table === "flows" || uid ? exportBtn("pcap") : null,
      can("analyst") ? null : h("span", { class: "muted small" }, "(exports need the analyst role)"),
    ),
    err,
    h("div", { class: "table-wrap" }, t.el),
  );
  let first = true;
  let busy = false;
  const load = () => {
    if (busy) return;
    busy = true;
    // Following, the range ends now at each refresh.
    const now = following() ? resolve(range) : { from, to };
    // Only the columns shown are fetched (the answer lists them all for
    // the chooser); showing another column fetches again.
    const shown = first ? (saved ?? DEFAULT_COLS[table]) : t.visibleColumns();
    // A row opens its connection: its id comes along even when hidden.
    const cols = [...shown, ...(table !== "alerts" && !shown.includes("uid") ? ["uid"] : [])].join(",");
    const q = { table, from: now.from, to: now.to, ...filter, uid, limit, before, after, columns: cols };
    get<Records>(`/api/records${qs(q)}`)
    .then((r) => {
      err.clear();
      if (!first) {
        t.setRows(r.rows);
        info.textContent = `${num(r.rows.length)} ${table} rows${r.more ? " (more: older pages)" : ""} · ${time(r.from)} – ${time(r.to)}${following() ? " · following" : ""}`;
        return;
      }
      first = false;
      lastTo = r.to;
      older = r.older;
      newer = r.newer;
      next.disabled = !older;
      prev.disabled = !paged;
      const cols: Column[] = r.columns.map((c) => ({
        name: c.name,
        width: WIDTH[c.name] ?? (c.type.includes("Int") || c.type.includes("Float") ? 90 : 130),
        render: c.type.startsWith("Timestamp") ? (v) => time(v as string) : undefined,
      }));
      t.setColumns(cols, saved ?? DEFAULT_COLS[table]);
      t.setRows(r.rows);
      chooser.replaceChildren(
        columnChooser(t, (names) => {
          localStorage.setItem(`tapstream.cols.${table}`, JSON.stringify(names));
          load();
        }),
      );
      info.textContent = `${num(r.rows.length)} ${table} rows${paged ? ` from row ${num(row)}` : ""}${r.more ? " (more: older pages)" : ""} · ${time(r.from)} – ${time(r.to)}`;
    })
    .catch((e) => {
      // Columns remembered from an older version of the table: forget them.
      if (first && saved && message(e).includes("columns:")) localStorage.removeItem(`tapstream.cols.${table}`);
      err.show(e);
    })
    .finally(() => (busy = false));
  };
  load();
  pg.every(1000, () => following() && load());
}

function numbers(f: Filter): Record<string, unknown> {
  const o: Record<string, unknown> = { ...f };
  if (f.port) o.port = Number(f.port);
  for (const k of Object.keys(o)) if (o[k] === undefined || o[k] === "") delete o[k];
  return o;
}
