// Incidents: filter by severity and status; detail with notes, linked
// alerts and flows; resolve; block the source.
import { call, can, get, post, qs } from "../api";
import { type Page, act, dialog, errorBox, field, panel, roleButton, message } from "../ui";
import { badge, h, time } from "../util";

interface Incident {
  id: number;
  title: string;
  severity: string;
  status: string;
  assignee: string | null;
  source_ip: string | null;
  created: string;
  updated: string;
  created_by: string;
  alerts: string[];
}
interface Detail extends Incident {
  notes: { id: number; author: string; text: string; created: string }[];
  details: string | null;
  details_hidden: boolean;
}

export async function incidentsPage(pg: Page): Promise<void> {
  const q = new URLSearchParams(location.hash.split("?")[1] ?? "");
  const filt = { status: q.get("status") ?? "", severity: q.get("severity") ?? "" };
  let selected = q.get("id") ? Number(q.get("id")) : null;
  const list = h("div");
  const detail = h("div", null, h("p", { class: "muted" }, "Select an incident."));
  const err = errorBox();
  const sel = (name: keyof typeof filt, opts: string[], label: string) =>
    h("label", { class: "field" }, h("span", null, label), h("select", { name, onchange: (e: Event) => { filt[name] = (e.target as HTMLSelectElement).value; void load(); } }, ...opts.map((o) => h("option", { value: o, selected: filt[name] === o }, o || "any"))));
  pg.root.append(
    h("div", { class: "page-head" }, h("h2", null, "Incidents"), h("span", { class: "grow" }), roleButton("analyst", "New incident", () => void create(), "btn primary")),
    h("div", { class: "toolbar" }, sel("status", ["", "open", "investigating", "resolved"], "Status"), sel("severity", ["", "critical", "high", "medium", "low", "info"], "Severity")),
    err,
    h("div", { class: "split" }, Object.assign(panel("Incidents", list), { className: "panel" }), Object.assign(panel("Incident", detail), { className: "panel" })),
  );
  async function create() {
    const title = h("input", { name: "title", required: true });
    const sev = h("select", { name: "severity" }, ...["medium", "info", "low", "high", "critical"].map((s) => h("option", { value: s }, s)));
    const src = h("input", { name: "source_ip", placeholder: "optional: 203.0.113.9" });
    const alerts = h("input", { name: "alerts", placeholder: "optional: alert ids, comma separated" });
    const f = await dialog("New incident", h("div", { class: "form-grid" }, field("Title", title), field("Severity", sev), field("Source IP", src), field("Alerts", alerts)), "Create");
    if (!f) return;
    await act("Incident created", async () => {
      const b: Record<string, unknown> = { title: String(f.get("title")), severity: String(f.get("severity")) };
      const s = String(f.get("source_ip") ?? "").trim();
      if (s) b.source_ip = s;
      const a = String(f.get("alerts") ?? "").split(",").map((x) => x.trim()).filter(Boolean);
      if (a.length) b.alerts = a;
      const inc = await post<Incident>("/api/incidents", b);
      selected = inc.id;
      await load();
      await show(inc.id);
    });
  }
  async function load() {
    try {
      const items = await get<Incident[]>(`/api/incidents${qs(filt)}`);
      err.clear();
      list.replaceChildren(
        items.length
          ? h(
              "table",
              { class: "tbl" },
              h("thead", null, h("tr", null, h("th", null, "#"), h("th", null, "title"), h("th", null, "severity"), h("th", null, "status"), h("th", null, "updated"))),
              h("tbody", null, ...items.map((i) => h("tr", { class: `link ${i.id === selected ? "selected" : ""}`, "data-incident": i.id, onclick: () => { selected = i.id; void load(); void show(i.id); } }, h("td", null, String(i.id)), h("td", null, i.title), h("td", null, badge(i.severity)), h("td", null, badge(i.status)), h("td", { class: "small" }, time(i.updated))))),
            )
          : h("p", { class: "muted" }, "No incidents match."),
      );
    } catch (e) {
      err.show(e);
    }
  }
  async function show(id: number) {
    try {
      const d = await get<Detail>(`/api/incidents/${id}`);
      const note = h("textarea", { rows: 3, placeholder: "Add a note…", disabled: !can("analyst"), "aria-label": "Note" });
      const reload = async () => {
        await load();
        await show(id);
      };
      const patch = (b: Record<string, unknown>, what: string) => void act(what, () => call("PATCH", `/api/incidents/${id}`, b)).then(reload);
      detail.replaceChildren(
        h("h3", null, `#${d.id} ${d.title} `, badge(d.severity), " ", badge(d.status)),
        h("div", { class: "kvs" },
          h("div", { class: "kv" }, h("span", null, "opened"), h("span", null, `${time(d.created)} by ${d.created_by}`)),
          h("div", { class: "kv" }, h("span", null, "assignee"), h("span", null, d.assignee ?? "—")),
          h("div", { class: "kv" }, h("span", null, "source"), d.source_ip ? h("span", null, d.source_ip, " · ", h("a", { href: `#/flows?ip=${d.source_ip}&range=24h` }, "flows")) : h("span", null, "—")),
          d.details_hidden ? h("div", { class: "kv" }, h("span", null, "details"), h("span", { class: "muted" }, "hidden for your role")) : d.details ? h("div", { class: "kv" }, h("span", null, "details"), h("span", null, d.details)) : null,
        ),
        h("h4", null, `Linked alerts (${d.alerts.length})`),
        h("ul", null, ...d.alerts.map((a) => h("li", null, h("a", { href: `#/alerts?id=${a}` }, a)))),
        h("h4", null, `Notes (${d.notes.length})`),
        h("ul", { class: "notes" }, ...d.notes.map((n) => h("li", null, h("div", { class: "muted small" }, `${n.author}, ${time(n.created)}`), n.text))),
        note,
        h(
          "div",
          { class: "toolbar" },
          roleButton("analyst", "Add note", () => { if (note.value.trim()) void act("Note added", () => post(`/api/incidents/${id}/notes`, { text: note.value.trim() })).then(reload); }),
          roleButton("analyst", "Investigating", () => patch({ status: "investigating" }, "Marked investigating")),
          roleButton("analyst", "Resolve", () => patch({ status: "resolved" }, "Incident resolved"), "btn primary"),
          roleButton("analyst", "Link alerts…", async () => {
            const ids = h("input", { name: "alerts", placeholder: "alert ids, comma separated", required: true });
            const f = await dialog("Link alerts", field("Alerts", ids), "Link");
            if (f) void act("Alerts linked", () => post(`/api/incidents/${id}/alerts`, { alerts: String(f.get("alerts")).split(",").map((x) => x.trim()).filter(Boolean) })).then(reload);
          }),
          roleButton("analyst", "Block source", () => void act("Source blocked", () => post(`/api/incidents/${id}/block`)).then(reload), "btn danger"),
        ),
      );
    } catch (e) {
      detail.replaceChildren(h("div", { class: "error" }, message(e)));
    }
  }
  await load();
  if (selected) await show(selected);
}
