// Settings: one's own password and TOTP; for admins retention, notification
// channels and routes (checked and applied at once by the server); the
// capture interfaces as the engine reports them.
import { call, can, get, post, setUser, user } from "../api";
import { type Page, act, errorBox, field, panel } from "../ui";
import { bytes, h, num } from "../util";

interface Settings {
  retention: { max_age_days: Record<string, number>; disk_budget_gb: number; interval_secs: number } | null;
  channels: (Record<string, unknown> & { name: string; kind: string; managed_by: string; password_set: boolean; url_host: string | null })[];
  routes: Record<string, unknown>[];
}

export async function settingsPage(pg: Page): Promise<void> {
  const root = pg.root;
  root.append(h("div", { class: "page-head" }, h("h2", null, "Settings")));
  root.append(account());
  root.append(await interfaces());
  if (!can("admin")) {
    root.append(h("p", { class: "muted" }, "Retention and notification settings need the admin role."));
    return;
  }
  const s = await get<Settings>("/api/settings");
  root.append(retention(s), channels(s), routes(s));
}

function account(): HTMLElement {
  const e = errorBox();
  const cur = h("input", { type: "password", name: "current", autocomplete: "current-password", required: true });
  const next = h("input", { type: "password", name: "new", minlength: 12, autocomplete: "new-password", required: true });
  const totpBox = h("div");
  const u = user();
  const renderTotp = () => {
    const on = user()?.totp;
    totpBox.replaceChildren(
      h("p", null, `Two-factor (TOTP) is ${on ? "on" : "off"}.`),
      on
        ? h("form", { class: "toolbar", onsubmit: async (ev: Event) => { ev.preventDefault(); const c = (ev.target as HTMLFormElement).code.value; if (await act("TOTP turned off", () => call("DELETE", "/api/me/totp", { code: c }))) { setUser({ ...user()!, totp: false }); renderTotp(); } } }, h("input", { name: "code", placeholder: "current code", inputmode: "numeric", required: true }), h("button", { class: "btn", type: "submit" }, "Turn off"))
        : h("button", {
            class: "btn",
            type: "button",
            onclick: async () => {
              const r = await post<{ secret: string; otpauth_url?: string; url?: string }>("/api/me/totp");
              const code = h("input", { name: "code", placeholder: "123456", inputmode: "numeric", required: true });
              totpBox.append(
                h("p", null, "Add this secret to your authenticator app, then enter a code:"),
                h("code", { class: "secret" }, r.secret),
                h("p", { class: "small muted" }, r.otpauth_url ?? r.url ?? ""),
                h("form", { class: "toolbar", onsubmit: async (ev: Event) => { ev.preventDefault(); if (await act("TOTP turned on", () => post("/api/me/totp/confirm", { code: code.value.trim() }))) { setUser({ ...user()!, totp: true }); renderTotp(); } } }, code, h("button", { class: "btn primary", type: "submit" }, "Confirm")),
              );
            },
          }, "Set up TOTP"),
    );
  };
  renderTotp();
  return Object.assign(
    panel(
      `My account (${u?.name}, ${u?.role})`,
      h(
        "div",
        { class: "split" },
        h("form", { class: "form-grid", onsubmit: async (ev: Event) => { ev.preventDefault(); e.clear(); try { await post("/api/me/password", { current: cur.value, new: next.value }); cur.value = next.value = ""; e.clear(); } catch (x) { e.show(x); } } }, field("Current password", cur), field("New password (12+ characters)", next), e, h("button", { class: "btn", type: "submit" }, "Change password")),
        totpBox,
      ),
    ),
    { className: "panel" },
  );
}

async function interfaces(): Promise<HTMLElement> {
  const body = h("div");
  try {
    const r = await get<{ packets: number; drops: number; interfaces: { name: string; mode: string; packets: number; bytes: number; worker_drops: number; kernel_drops: number; queues: { queue: string }[] }[] }>("/api/interfaces");
    body.append(
      h(
        "table",
        { class: "tbl" },
        h("thead", null, h("tr", null, ...["interface", "mode", "queues", "packets", "bytes", "drops"].map((c) => h("th", null, c)))),
        h("tbody", null, ...r.interfaces.map((i) => h("tr", null, h("td", null, i.name), h("td", null, i.mode), h("td", null, i.queues.map((q) => q.queue).join(", ")), h("td", { class: "num" }, num(i.packets)), h("td", { class: "num" }, bytes(i.bytes)), h("td", { class: "num" }, num(i.worker_drops + i.kernel_drops))))),
      ),
      h("p", { class: "muted small" }, "Interfaces, queues and cores are set in configs/tapstream.toml ([capture]) and take effect at the next start; see docs/capture.md."),
    );
  } catch (e) {
    body.append(h("div", { class: "error" }, String(e)));
  }
  return Object.assign(panel("Capture interfaces", body), { className: "panel" });
}

function retention(s: Settings): HTMLElement {
  const e = errorBox();
  const r = s.retention;
  if (!r) return Object.assign(panel("Retention", h("p", { class: "muted" }, "No engine runs beside this server.")), { className: "panel" });
  const inputs = Object.entries(r.max_age_days).map(([t, d]) => [t, h("input", { type: "number", min: 1, name: t, value: d, "aria-label": `${t} days` })] as const);
  const budget = h("input", { type: "number", min: 0, step: "any", name: "budget", value: r.disk_budget_gb });
  return Object.assign(
    panel(
      "Retention",
      h(
        "form",
        {
          class: "form-grid",
          onsubmit: async (ev: Event) => {
            ev.preventDefault();
            e.clear();
            try {
              await call("PUT", "/api/settings/retention", { max_age_days: Object.fromEntries(inputs.map(([t, i]) => [t, Number(i.value)])), disk_budget_gb: Number(budget.value) });
              e.clear();
              await act("Retention saved; a sweep runs now", async () => {});
            } catch (x) {
              e.show(x);
            }
          },
        },
        ...inputs.map(([t, i]) => field(`${t} (days)`, i)),
        field("Disk budget (GB, 0 = none)", budget),
        e,
        h("button", { class: "btn primary", type: "submit" }, "Save retention"),
      ),
    ),
    { className: "panel" },
  );
}

function channels(s: Settings): HTMLElement {
  const e = errorBox();
  const list = h(
    "table",
    { class: "tbl" },
    h("thead", null, h("tr", null, ...["name", "kind", "where", "managed by", ""].map((c) => h("th", null, c)))),
    h(
      "tbody",
      null,
      ...s.channels.map((c) =>
        h(
          "tr",
          null,
          h("td", null, c.name),
          h("td", null, c.kind),
          h("td", { class: "small" }, c.kind === "email" ? `${c.smtp_host}:${c.smtp_port ?? ""} → ${((c.to as string[]) ?? []).join(", ")}` : c.kind === "webhook" ? String(c.url_host ?? "") : String(c.address ?? "")),
          h("td", null, c.managed_by),
          h(
            "td",
            null,
            h("button", { class: "btn small", onclick: () => void act(`Test sent through ${c.name}`, () => post(`/api/settings/channels/${c.name}/test`)) }, "Test"),
            c.managed_by === "api" ? h("button", { class: "icon danger", title: "remove", onclick: () => void act(`Removed ${c.name}`, () => call("DELETE", `/api/settings/channels/${c.name}`)).then(() => location.reload()) }, "✕") : null,
          ),
        ),
      ),
    ),
  );
  const kind = h("select", { name: "kind" }, ...["email", "webhook", "syslog"].map((k) => h("option", { value: k }, k)));
  const name = h("input", { name: "name", required: true, pattern: "[A-Za-z0-9_\\-]+" });
  const extra = h("div", { class: "form-grid" });
  const fields: Record<string, [string, string, string][]> = {
    email: [["smtp_host", "SMTP host", "mail.example.org"], ["smtp_port", "SMTP port", "587"], ["security", "Security (none, starttls, tls)", "starttls"], ["username", "User name", ""], ["password", "Password", ""], ["from", "From", "tapstream@example.org"], ["to", "To (comma separated)", "soc@example.org"]],
    webhook: [["url", "URL", "https://hooks.example.org/…"], ["format", "Format (json, slack)", "json"]],
    syslog: [["address", "Address (host:port)", "127.0.0.1:514"], ["protocol", "Protocol (udp, tcp)", "udp"]],
  };
  const fill = () => extra.replaceChildren(...fields[kind.value].map(([k, l, ph]) => field(l, h("input", { name: k, placeholder: ph, type: k === "password" ? "password" : "text", autocomplete: k === "password" ? "new-password" : "off" }))));
  kind.addEventListener("change", fill);
  fill();
  const form = h(
    "form",
    {
      class: "form-grid",
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        e.clear();
        const b: Record<string, unknown> = { kind: kind.value };
        for (const i of extra.querySelectorAll("input")) {
          const v = i.value.trim();
          if (!v) continue;
          b[i.name] = i.name === "smtp_port" ? Number(v) : i.name === "to" ? v.split(",").map((x) => x.trim()).filter(Boolean) : v;
        }
        try {
          await call("PUT", `/api/settings/channels/${encodeURIComponent(name.value.trim())}`, b);
          location.reload();
        } catch (x) {
          e.show(x);
        }
      },
    },
    field("Name", name),
    field("Kind", kind),
    extra,
    e,
    h("button", { class: "btn primary", type: "submit" }, "Save channel"),
  );
  return Object.assign(panel("Notification channels", h("div", null, list, h("h4", null, "Add or change a channel"), form)), { className: "panel" });
}

function routes(s: Settings): HTMLElement {
  const e = errorBox();
  const text = h("textarea", { class: "editor", rows: 8, spellcheck: "false", "aria-label": "Routes" }, JSON.stringify(s.routes, null, 2));
  return Object.assign(
    panel(
      "Notification routes",
      h(
        "form",
        {
          onsubmit: async (ev: Event) => {
            ev.preventDefault();
            e.clear();
            let routes: unknown;
            try {
              routes = JSON.parse(text.value);
            } catch (x) {
              e.show(`Not JSON: ${String(x)}`);
              return;
            }
            try {
              await call("PUT", "/api/settings/routes", { routes });
              await act("Routes saved", async () => {});
            } catch (x) {
              e.show(x);
            }
          },
        },
        h("p", { class: "muted small" }, 'Which alerts go where, e.g. [{"channels": ["soc"], "min_severity": "high", "categories": ["ddos"], "escalate_after_minutes": 15, "escalate_to": ["oncall"]}]. The config file\'s routes apply too.'),
        text,
        e,
        h("button", { class: "btn primary", type: "submit" }, "Save routes"),
      ),
    ),
    { className: "panel" },
  );
}
