// Users (create, role, disable, password reset, delete) and the audit log.
import { call, get, post, qs } from "../api";
import { type Page, act, dialog, errorBox, field, panel } from "../ui";
import { badge, h, time } from "../util";

interface U {
  name: string;
  role: string;
  totp: boolean;
  disabled: boolean;
  created: string;
}
interface Audit {
  id: number;
  time: string;
  user: string;
  action: string;
  target: string;
  detail: unknown;
  addr: string;
  ok: boolean;
}

export async function usersPage(pg: Page): Promise<void> {
  const users = h("div");
  const audit = h("div");
  const err = errorBox();
  const fu = h("input", { placeholder: "user", "aria-label": "Audit user" });
  const fa = h("input", { placeholder: "action (e.g. login_failed)", "aria-label": "Audit action" });
  pg.root.append(
    h("div", { class: "page-head" }, h("h2", null, "Users & audit"), h("span", { class: "grow" }), h("button", { class: "btn primary", type: "button", onclick: () => void create() }, "New user")),
    err,
    Object.assign(panel("Users", users), { className: "panel" }),
    Object.assign(panel("Audit log", h("div", null, h("form", { class: "toolbar", onsubmit: (e: Event) => (e.preventDefault(), void loadAudit()) }, fu, fa, h("button", { class: "btn", type: "submit" }, "Filter")), audit)), { className: "panel" }),
  );
  const roleSel = (v = "viewer") => h("select", { name: "role" }, ...["viewer", "analyst", "admin"].map((r) => h("option", { value: r, selected: r === v }, r)));
  async function create() {
    const f = await dialog("New user", h("div", { class: "form-grid" }, field("Name", h("input", { name: "name", required: true, pattern: "[A-Za-z0-9._@\\-]{1,64}" })), field("Role", roleSel()), field("Password (12+ characters)", h("input", { name: "password", type: "password", minlength: 12, required: true, autocomplete: "new-password" }))), "Create");
    if (f) await act(`User ${f.get("name")} created`, () => post("/api/users", { name: f.get("name"), role: f.get("role"), password: f.get("password") })).then(load);
  }
  async function load() {
    const list = await get<U[]>("/api/users");
    users.replaceChildren(
      h(
        "table",
        { class: "tbl" },
        h("thead", null, h("tr", null, ...["name", "role", "TOTP", "state", "created", ""].map((c) => h("th", null, c)))),
        h(
          "tbody",
          null,
          ...list.map((u) => {
            const rs = roleSel(u.role);
            rs.addEventListener("change", () => void act(`${u.name} is now ${rs.value}`, () => call("PATCH", `/api/users/${encodeURIComponent(u.name)}`, { role: rs.value })).then(load));
            return h(
              "tr",
              { "data-user": u.name },
              h("td", null, u.name),
              h("td", null, rs),
              h("td", null, u.totp ? "on" : "off"),
              h("td", null, badge(u.disabled ? "disabled" : "active")),
              h("td", { class: "small" }, time(u.created)),
              h(
                "td",
                null,
                h("button", { class: "btn small", onclick: () => void act(`${u.name} ${u.disabled ? "enabled" : "disabled"}`, () => call("PATCH", `/api/users/${encodeURIComponent(u.name)}`, { disabled: !u.disabled })).then(load) }, u.disabled ? "Enable" : "Disable"),
                h("button", {
                  class: "btn small",
                  onclick: async () => {
                    const f = await dialog(`New password for ${u.name}`, field("Password (12+ characters)", h("input", { name: "password", type: "password", minlength: 12, required: true, autocomplete: "new-password" })));
                    if (f) await act("Password changed", () => call("PATCH", `/api/users/${encodeURIComponent(u.name)}`, { password: f.get("password") }));
                  },
                }, "Password…"),
                h("button", { class: "icon danger", title: "delete", onclick: () => confirm(`Delete ${u.name}?`) && void act(`${u.name} deleted`, () => call("DELETE", `/api/users/${encodeURIComponent(u.name)}`)).then(load) }, "✕"),
              ),
            );
          }),
        ),
      ),
    );
  }
  async function loadAudit() {
    const list = await get<Audit[]>(`/api/user_activity${qs({ user: fu.value.trim(), action: fa.value.trim(), limit: 500 })}`);
    audit.replaceChildren(
      h(
        "table",
        { class: "tbl" },
        h("thead", null, h("tr", null, ...["time", "user", "action", "target", "from", "ok", "detail"].map((c) => h("th", null, c)))),
        h("tbody", null, ...list.map((a) => h("tr", null, h("td", { class: "small" }, time(a.time)), h("td", null, a.user), h("td", null, a.action), h("td", null, a.target), h("td", null, a.addr), h("td", null, a.ok ? "✓" : badge("failed", "bad")), h("td", { class: "small mono" }, a.detail ? JSON.stringify(a.detail) : "")))),
      ),
    );
  }
  await Promise.all([load(), loadAudit()]).catch((e) => err.show(e));
}
