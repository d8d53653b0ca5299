// Alerts (acknowledge, resolve, assign; explanation and evidence) and the
// rule editor (validated by the engine's own parser on the server).
import { call, can, get, post, qs } from "../api";
import * as stream from "../stream";
import type { Alert } from "../stream";
import { type Page, act, dialog, errorBox, field, panel, roleButton, message } from "../ui";
import { badge, bytes, h, num, si, time } from "../util";

type AlertView = Alert & { state: string; status: string; assignee: string | null; events: number; src_ips: string[]; dst_ips: string[]; ports: number[]; countries: string[]; top_sources: string[]; sample_flows: string[]; packets: number; bytes: number; flows: number; rate: number; rate_unit: string; start: string; last_seen: string };

const SEVERITIES = ["", "critical", "high", "medium", "low", "info"];
const STATUSES = ["", "new", "acknowledged", "resolved"];
const CATEGORIES = ["", "ddos", "scan", "flood", "policy", "intel", "anomaly", "malware", "exfiltration", "system"];

export async function alertsPage(pg: Page): Promise<void> {
  const q = new URLSearchParams(location.hash.split("?")[1] ?? "");
  const filt = { min_severity: q.get("min_severity") ?? "", status: q.get("status") ?? "", category: q.get("category") ?? "" };
  const sel = (name: keyof typeof filt, opts: string[], label: string) =>
    h("label", { class: "field" }, h("span", null, label), h("select", { name, onchange: (e: Event) => { filt[name] = (e.target as HTMLSelectElement).value; void load(); } }, ...opts.map((o) => h("option", { value: o, selected: filt[name] === o }, o || "any"))));
  const list = h("div", { class: "alert-list" });
  const detail = h("div", { class: "alert-detail" }, h("p", { class: "muted" }, "Select an alert to see its explanation and evidence."));
  const err = errorBox();
  pg.root.append(
    h("div", { class: "page-head" }, h("h2", null, "Alerts"), h("span", { class: "grow" }), h("a", { class: "btn", href: "#/rules" }, "Rules")),
    h("div", { class: "toolbar" }, sel("min_severity", SEVERITIES, "Severity at least"), sel("status", STATUSES, "Status"), sel("category", CATEGORIES, "Category")),
    err,
    h("div", { class: "split" }, Object.assign(panel("Fired alerts", list), { className: "panel" }), Object.assign(panel("Alert", detail), { className: "panel" })),
  );
  let selected = q.get("id");
  let alerts: AlertView[] = [];
  async function load() {
    try {
      alerts = await get<AlertView[]>(`/api/alerts${qs({ ...filt, limit: 500 })}`);
      err.clear();
      renderList();
    } catch (e) {
      err.show(e);
    }
  }
  function renderList() {
    list.replaceChildren(
      alerts.length
        ? h(
            "table",
            { class: "tbl" },
            h("thead", null, h("tr", null, h("th", null, "severity"), h("th", null, "rule"), h("th", null, "entities"), h("th", null, "last seen"), h("th", null, "state"), h("th", null, "status"))),
            h(
              "tbody",
              null,
              ...alerts.map((a) =>
                h(
                  "tr",
                  { class: `link ${a.id === selected ? "selected" : ""}`, "data-alert": a.id, "data-rule": a.rule, onclick: () => { selected = a.id; renderList(); void show(a.id); } },
                  h("td", null, badge(a.severity)),
                  h("td", null, a.rule, h("div", { class: "muted small" }, a.category)),
                  h("td", { class: "small" }, [...(a.src_ips ?? []).slice(0, 2), "→", ...(a.dst_ips ?? []).slice(0, 2)].join(" ")),
                  h("td", { class: "small" }, time(a.last_seen)),
                  h("td", null, a.state),
                  h("td", null, badge(a.status), a.assignee ? h("div", { class: "muted small" }, `→ ${a.assignee}`) : null),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No alerts match."),
    );
  }
  async function show(id: string) {
    try {
      const a = await get<AlertView & { history: Alert[] }>(`/api/alerts/${id}`);
      const kv = (k: string, v: Node | string) => h("div", { class: "kv" }, h("span", null, k), h("span", null, v));
      const ipLinks = (ips: string[]) => h("span", null, ...(ips ?? []).flatMap((ip, i) => [i ? ", " : "", h("a", { href: `#/flows?ip=${ip}&range=24h` }, ip)]));
      detail.replaceChildren(
        h("h3", null, badge(a.severity), " ", a.rule, " ", badge(a.verdict)),
        h("p", { class: "explanation" }, a.explanation),
        h(
          "div",
          { class: "kvs" },
          kv("category", a.category),
          kv("started", time(a.start)),
          kv("last seen", time(a.last_seen)),
          kv("engine state", a.state),
          kv("status", a.status + (a.assignee ? ` (assigned to ${a.assignee})` : "")),
          kv("sources", ipLinks(a.src_ips)),
          kv("destinations", ipLinks(a.dst_ips)),
          kv("ports", (a.ports ?? []).join(", ")),
          kv("countries", (a.countries ?? []).join(", ")),
          kv("packets / bytes / flows", `${num(a.packets)} / ${bytes(a.bytes)} / ${num(a.flows)}`),
          kv("rate", `${si(a.rate)} ${a.rate_unit}`),
        ),
        h("h4", null, "Evidence"),
        h("div", { class: "kv" }, h("span", null, "top sources"), ipLinks(a.top_sources)),
        h("div", { class: "kv" }, h("span", null, "sample flows"), h("span", null, ...(a.sample_flows ?? []).flatMap((u, i) => [i ? ", " : "", h("a", { href: `#/flows?uid=${u}&range=24h` }, u)]))),
        h("h4", null, `Events (${a.history.length})`),
        h("ul", { class: "events small" }, ...a.history.slice(-20).map((e) => h("li", null, `${time(e.timestamp)} ${e.event}`))),
        h(
          "div",
          { class: "toolbar" },
          roleButton("analyst", "Acknowledge", () => void act("Alert acknowledged", () => post(`/api/alerts/${id}/ack`)).then(refresh), "btn primary"),
          roleButton("analyst", "Resolve", () => void act("Alert resolved", () => post(`/api/alerts/${id}/resolve`)).then(refresh)),
          roleButton("analyst", "Assign…", async () => {
            const who = h("input", { name: "assignee", placeholder: "user name (empty to unassign)", value: a.assignee ?? "" });
            const f = await dialog("Assign alert", field("Assignee", who), "Assign");
            if (f) await act("Alert assigned", () => post(`/api/alerts/${id}/assign`, { assignee: String(f.get("assignee") || "") || null })).then(refresh);
          }),
          roleButton("analyst", "Open incident", async () => {
            const ok = await act("Incident opened", async () => {
              const inc = await post<{ id: number }>("/api/incidents", { title: `${a.rule}: ${(a.dst_ips ?? [])[0] ?? (a.src_ips ?? [])[0] ?? a.id}`, severity: a.severity, alerts: [a.id], source_ip: (a.src_ips ?? []).length === 1 ? a.src_ips[0] : undefined });
              location.hash = `#/incidents?id=${inc.id}`;
            });
            void ok;
          }),
        ),
      );
    } catch (e) {
      detail.replaceChildren(h("div", { class: "error" }, message(e)));
    }
  }
  const refresh = async () => {
    await load();
    if (selected) await show(selected);
  };
  await load();
  if (selected) void show(selected);
  const unsub = stream.subscribe({ alert: () => void load() });
  pg.onLeave(unsub);
}

interface Rule {
  id: number;
  name: string;
  condition: string;
  severity?: string;
  category?: string;
  verdict?: string;
  cooldown?: string;
  description?: string;
  enabled?: boolean;
  updated: string;
  updated_by: string;
}

export async function rulesPage(pg: Page): Promise<void> {
  const list = h("div");
  const err = errorBox();
  const editor = h("div", { class: "rule-editor" });
  pg.root.append(
    h("div", { class: "page-head" }, h("h2", null, "Rules"), h("span", { class: "grow" }), roleButton("admin", "New rule", () => edit(null), "btn primary")),
    h("p", { class: "muted small" }, "A condition is METRIC by KEY OP NUMBER [UNIT] [for|in DURATION] [where …], e.g. ", h("code", null, "distinct dst_port by src_ip > 100 in 60s"), ". The server checks each rule with the engine's own parser; detection reloads within two seconds."),
    err,
    h("div", { class: "split" }, Object.assign(panel("Custom rules", list), { className: "panel" }), Object.assign(panel("Editor", editor), { className: "panel" })),
  );
  async function load() {
    try {
      const rules = await get<Rule[]>("/api/alerts/rules");
      list.replaceChildren(
        rules.length
          ? h(
              "table",
              { class: "tbl" },
              h("thead", null, h("tr", null, h("th", null, "name"), h("th", null, "condition"), h("th", null, "severity"), h("th", null, "on"))),
              h("tbody", null, ...rules.map((r) => h("tr", { class: "link", onclick: () => edit(r) }, h("td", null, r.name), h("td", null, h("code", null, r.condition)), h("td", null, badge(r.severity ?? "medium")), h("td", null, r.enabled === false ? "off" : "on")))),
            )
          : h("p", { class: "muted" }, "No custom rules yet."),
      );
    } catch (e) {
      err.show(e);
    }
  }
  function edit(r: Rule | null) {
    const admin = can("admin");
    const e = errorBox();
    const name = h("input", { name: "name", value: r?.name ?? "", required: true, pattern: "[A-Za-z0-9._\\-]+", disabled: !admin });
    const cond = h("textarea", { name: "condition", rows: 3, required: true, disabled: !admin, class: "editor" }, r?.condition ?? "");
    const opt = (n: string, vals: string[], v?: string) => h("select", { name: n, disabled: !admin }, ...vals.map((x) => h("option", { value: x, selected: (v ?? "") === x }, x || "default")));
    const sev = opt("severity", ["", "info", "low", "medium", "high", "critical"], r?.severity);
    const cat = opt("category", ["", "ddos", "scan", "flood", "policy", "intel", "anomaly", "malware", "exfiltration"], r?.category);
    const verdict = opt("verdict", ["", "normal", "suspicious", "malicious"], r?.verdict);
    const cooldown = h("input", { name: "cooldown", value: r?.cooldown ?? "", placeholder: "5m", disabled: !admin });
    const desc = h("input", { name: "description", value: r?.description ?? "", disabled: !admin });
    const enabled = h("input", { type: "checkbox", name: "enabled", checked: r?.enabled !== false, disabled: !admin });
    const body = () => {
      const b: Record<string, unknown> = { name: name.value.trim(), condition: cond.value.trim(), enabled: enabled.checked };
      if (sev.value) b.severity = sev.value;
      if (cat.value) b.category = cat.value;
      if (verdict.value) b.verdict = verdict.value;
      if (cooldown.value.trim()) b.cooldown = cooldown.value.trim();
      if (desc.value.trim()) b.description = desc.value.trim();
      return b;
    };
    editor.replaceChildren(
      h(
        "form",
        {
          class: "form-grid",
          onsubmit: async (ev: Event) => {
            ev.preventDefault();
            e.clear();
            try {
              if (r) await call("PUT", `/api/alerts/rules/${r.id}`, body());
              else await post("/api/alerts/rules", body());
              await load();
              editor.replaceChildren(h("p", { class: "ok" }, `Rule “${name.value}” saved; detection applies it within two seconds.`));
            } catch (x) {
              e.show(x);
            }
          },
        },
        field("Name", name),
        field("Condition", cond),
        field("Severity", sev),
        field("Category", cat),
        field("Verdict", verdict),
        field("Cooldown", cooldown),
        field("Description", desc),
        h("label", { class: "field" }, enabled, h("span", null, "enabled")),
        e,
        admin
          ? h("div", { class: "row" }, h("button", { class: "btn primary", type: "submit" }, r ? "Save rule" : "Create rule"), r ? h("button", { class: "btn danger", type: "button", onclick: () => void act("Rule deleted", () => call("DELETE", `/api/alerts/rules/${r.id}`)).then(() => { editor.replaceChildren(); return load(); }) }, "Delete") : null)
          : h("p", { class: "muted small" }, "Changing rules needs the admin role."),
      ),
    );
  }
  await load();
}
