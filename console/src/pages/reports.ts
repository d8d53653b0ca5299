// Reports: make one now (traffic, incidents, alerts, talkers, the audit
// trail; PDF, CSV or JSON) and download it, the reports kept on the
// appliance, and report schedules delivered through notification channels.
import { call, can, download, get, post } from "../api";
import { type Page, act, errorBox, field, panel, toast } from "../ui";
import { badge, h, localInput, si, time } from "../util";

interface Report {
  id: number;
  kind: string;
  format: string;
  from: string;
  to: string;
  filter: Record<string, unknown>;
  size: number;
  created: string;
  created_by: string;
  schedule?: number;
  delivered: { channel: string; ok: boolean; error?: string }[];
  download: string;
}

interface Schedule {
  id: number;
  name: string;
  kind: string;
  when: string;
  range: string;
  format: string;
  channels: string[];
  next_run: string;
  last_run?: string;
  last_report?: number;
  last_error?: string;
  created_by: string;
}

const KINDS: [string, string][] = [
  ["traffic", "Traffic summary"],
  ["talkers", "Top talkers and protocols"],
  ["alerts", "Alerts and anomalies"],
  ["incidents", "Incidents"],
  ["audit", "Compliance audit trail"],
];

function select(name: string, options: [string, string][], label: string): HTMLSelectElement {
  return h("select", { name, "aria-label": label }, ...options.map(([v, t]) => h("option", { value: v }, t)));
}

function kinds(): [string, string][] {
  return KINDS.filter(([k]) => k !== "audit" || can("admin"));
}

export async function reportsPage(pg: Page): Promise<void> {
  const err = errorBox();
  const list = h("div");
  const sched = h("div");
  const kind = select("kind", kinds(), "Report kind");
  const range = select("range", [["day", "Last 24 hours"], ["week", "Last 7 days"], ["month", "Last 30 days"], ["custom", "Custom range"]], "Range");
  const now = new Date();
  const from = h("input", { type: "datetime-local", name: "from", value: localInput(new Date(now.getTime() - 86_400_000)), "aria-label": "From", hidden: true });
  const to = h("input", { type: "datetime-local", name: "to", value: localInput(now), "aria-label": "To", hidden: true });
  range.onchange = () => {
    from.hidden = to.hidden = range.value !== "custom";
  };
  const format = select("format", [["pdf", "PDF"], ["csv", "CSV"], ["json", "JSON"]], "Format");
  const ip = h("input", { name: "ip", placeholder: "IP (optional)", "aria-label": "Filter IP", size: 14 });
  const port = h("input", { name: "port", placeholder: "port", "aria-label": "Filter port", size: 5, inputmode: "numeric" });
  const text = h("input", { name: "text", placeholder: "text", "aria-label": "Filter text", size: 12 });
  const go = h("button", { class: "btn primary", type: "submit", disabled: !can("analyst"), title: can("analyst") ? undefined : "needs the analyst role" }, "Generate");
  const form = h(
    "form",
    {
      class: "toolbar wrap",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        err.clear();
        const filter: Record<string, unknown> = {};
        if (ip.value.trim()) filter.ip = ip.value.trim();
        if (port.value.trim()) filter.port = Number(port.value.trim());
        if (text.value.trim()) filter.text = text.value.trim();
        const body: Record<string, unknown> = { kind: kind.value, format: format.value, filter };
        if (range.value === "custom") {
          body.from = new Date(from.value).toISOString();
          body.to = new Date(to.value).toISOString();
        } else {
          body.range = range.value;
        }
        go.disabled = true;
        go.textContent = "Generating…";
        try {
          const r = await post<Report>("/api/reports", body);
          toast(`Report ${r.id} ready (${si(r.size, "B")})`, "ok");
          await download("GET", r.download);
          await load();
        } catch (x) {
          err.show(x);
        } finally {
          go.disabled = !can("analyst");
          go.textContent = "Generate";
        }
      },
    },
    kind,
    range,
    from,
    to,
    format,
    ip,
    port,
    text,
    go,
  );
  pg.root.append(
    h("div", { class: "page-head" }, h("h2", null, "Reports")),
    h("p", { class: "muted small" }, "PDF with charts and tables, or CSV/JSON of the same figures. Kept on the appliance under the reports retention; every generation is in the audit log."),
    form,
    err,
    panel("Generated reports", list),
    panel("Schedules", sched),
  );

  async function load() {
    const [reports, schedules] = await Promise.all([get<Report[]>("/api/reports?limit=200"), get<Schedule[]>("/api/reports/schedules")]);
    const title = (k: string) => KINDS.find(([x]) => x === k)?.[1] ?? k;
    list.replaceChildren(
      reports.length
        ? h(
            "table",
            { class: "tbl", id: "report-list" },
            h("thead", null, h("tr", null, ...["made", "report", "range", "format", "size", "by", "sent", ""].map((c) => h("th", null, c)))),
            h(
              "tbody",
              null,
              ...reports.map((r) =>
                h(
                  "tr",
                  { "data-id": String(r.id) },
                  h("td", { class: "small" }, time(r.created)),
                  h("td", null, title(r.kind), Object.keys(r.filter).length ? h("span", { class: "muted small" }, ` (${Object.entries(r.filter).map(([k, v]) => `${k} ${v}`).join(", ")})`) : null),
                  h("td", { class: "small" }, `${time(r.from)} – ${time(r.to)}`),
                  h("td", null, r.format.toUpperCase()),
                  h("td", { class: "num" }, si(r.size, "B")),
                  h("td", { class: "small" }, r.created_by),
                  h("td", { class: "small" }, ...r.delivered.map((d) => badge(d.channel, d.ok ? "ok" : "critical"))),
                  h(
                    "td",
                    null,
                    h("button", { class: "btn small", onclick: () => void act("Downloaded", () => download("GET", r.download)) }, "Download"),
                    can("admin") ? h("button", { class: "icon danger", title: "delete", onclick: () => void act(`Deleted report ${r.id}`, () => call("DELETE", `/api/reports/${r.id}`)).then(load) }, "✕") : null,
                  ),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No reports yet."),
    );
    sched.replaceChildren(
      schedules.length
        ? h(
            "table",
            { class: "tbl", id: "schedule-list" },
            h("thead", null, h("tr", null, ...["name", "report", "when", "covers", "format", "channels", "next run", "last run", ""].map((c) => h("th", null, c)))),
            h(
              "tbody",
              null,
              ...schedules.map((s) =>
                h(
                  "tr",
                  null,
                  h("td", null, s.name),
                  h("td", null, title(s.kind)),
                  h("td", null, h("code", null, s.when)),
                  h("td", null, s.range),
                  h("td", null, s.format.toUpperCase()),
                  h("td", { class: "small" }, s.channels.join(", ") || "—"),
                  h("td", { class: "small" }, time(s.next_run)),
                  h("td", { class: "small" }, s.last_run ? time(s.last_run) : "never", s.last_error ? h("div", { class: "error small" }, s.last_error) : null),
                  h(
                    "td",
                    null,
                    can("admin") ? h("button", { class: "btn small", onclick: () => void act(`Ran ${s.name}`, () => post(`/api/reports/schedules/${s.id}/run`, {})).then(load) }, "Run now") : null,
                    can("admin") ? h("button", { class: "icon danger", title: "delete", onclick: () => void act(`Removed ${s.name}`, () => call("DELETE", `/api/reports/schedules/${s.id}`)).then(load) }, "✕") : null,
                  ),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No schedules."),
    );
    if (can("admin")) sched.append(scheduleForm(load));
  }
  await load().catch((e) => err.show(e));
}

function scheduleForm(reload: () => Promise<void>): HTMLElement {
  const err = errorBox();
  const name = h("input", { name: "name", placeholder: "weekly-traffic", required: true, pattern: "[A-Za-z0-9_\\-]{1,64}", "aria-label": "Schedule name" });
  const kind = select("kind", kinds(), "Schedule kind");
  const when = h("input", { name: "when", value: "daily", list: "when-presets", required: true, "aria-label": "When (daily, weekly, monthly or cron)", size: 14 });
  const presets = h("datalist", { id: "when-presets" }, ...["daily", "weekly", "monthly", "0 6 * * MON"].map((v) => h("option", { value: v })));
  const range = select("range", [["day", "covers a day"], ["week", "covers a week"], ["month", "covers 30 days"]], "Range covered");
  const format = select("format", [["pdf", "PDF"], ["csv", "CSV"], ["json", "JSON"]], "Schedule format");
  const channels = h("input", { name: "channels", placeholder: "channels, e.g. soc-mail", "aria-label": "Channels", size: 18 });
  return h(
    "form",
    {
      class: "toolbar wrap",
      id: "schedule-form",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        err.clear();
        try {
          await post("/api/reports/schedules", {
            name: name.value.trim(),
            kind: kind.value,
            when: when.value.trim(),
            range: range.value,
            format: format.value,
            channels: channels.value.split(",").map((c) => c.trim()).filter(Boolean),
          });
          toast(`Schedule ${name.value} added`, "ok");
          await reload();
        } catch (x) {
          err.show(x);
        }
      },
    },
    field("Name", name),
    field("Report", kind),
    field("When (UTC)", when),
    presets,
    field("Covers", range),
    field("Format", format),
    field("Send to", channels),
    h("button", { class: "btn primary", type: "submit" }, "Add schedule"),
    err,
  );
}
