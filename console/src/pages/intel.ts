// Threat intelligence: the blocklist (IPs, networks, domains) detection
// matches against, and the threat alerts it and the other detectors raised.
import { call, can, get, post } from "../api";
import type { Alert } from "../stream";
import { type Page, act, errorBox, panel } from "../ui";
import { badge, h, time } from "../util";

interface Entry {
  id: number;
  value: string;
  kind: string;
  comment: string;
  created: string;
  created_by: string;
}

export async function intelPage(pg: Page): Promise<void> {
  const list = h("div");
  const threats = h("div");
  const err = errorBox();
  const value = h("input", { name: "value", placeholder: "203.0.113.9, 198.51.100.0/24 or bad.example", required: true, disabled: !can("admin"), "aria-label": "Blocklist entry" });
  const comment = h("input", { name: "comment", placeholder: "why (optional)", disabled: !can("admin"), "aria-label": "Comment" });
  const add = h(
    "form",
    {
      class: "toolbar",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        err.clear();
        try {
          await post("/api/blocklist", { value: value.value.trim(), comment: comment.value.trim() });
          value.value = "";
          comment.value = "";
          await load();
        } catch (x) {
          err.show(x);
        }
      },
    },
    value,
    comment,
    h("button", { class: "btn primary", type: "submit", disabled: !can("admin"), title: can("admin") ? undefined : "needs the admin role" }, "Add to blocklist"),
  );
  pg.root.append(
    h("div", { class: "page-head" }, h("h2", null, "Threat intel & blocklist")),
    h("p", { class: "muted small" }, "Detection re-reads the blocklist within a second; a match in flows, DNS or TLS raises a threat_intel alert. Feeds configured in the config file are matched too."),
    add,
    err,
    h("div", { class: "split" }, Object.assign(panel("Blocklist", list), { className: "panel" }), Object.assign(panel("Threat alerts", threats), { className: "panel" })),
  );
  async function load() {
    const [entries, alerts] = await Promise.all([get<Entry[]>("/api/blocklist"), get<(Alert & { last_seen: string; status: string })[]>("/api/threats?limit=200")]);
    list.replaceChildren(
      entries.length
        ? h(
            "table",
            { class: "tbl" },
            h("thead", null, h("tr", null, h("th", null, "value"), h("th", null, "kind"), h("th", null, "comment"), h("th", null, "added"), h("th", null, ""))),
            h("tbody", null, ...entries.map((e) => h("tr", null, h("td", null, e.value), h("td", null, e.kind), h("td", null, e.comment), h("td", { class: "small" }, `${time(e.created)} by ${e.created_by}`), h("td", null, can("admin") ? h("button", { class: "icon danger", title: "remove", onclick: () => void act(`Removed ${e.value}`, () => call("DELETE", `/api/blocklist/${e.id}`)).then(load) }, "✕") : null)))),
          )
        : h("p", { class: "muted" }, "The blocklist is empty."),
    );
    threats.replaceChildren(
      alerts.length
        ? h("table", { class: "tbl" }, h("tbody", null, ...alerts.map((a) => h("tr", { class: "link", onclick: () => (location.hash = `#/alerts?id=${a.id}`) }, h("td", null, badge(a.severity)), h("td", null, a.rule), h("td", { class: "small" }, a.explanation), h("td", { class: "small" }, time(a.last_seen))))))
        : h("p", { class: "muted" }, "No threat alerts."),
    );
  }
  await load().catch((e) => err.show(e));
}
