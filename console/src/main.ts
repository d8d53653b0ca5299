// The console's shell: log-in gate, navigation, hash router, live status.
import "./style.css";
import { can, isAbort, logout, onSessionChange, user, type Role } from "./api";
import * as stream from "./stream";
import { h } from "./util";
import { type Cleanup, type Page, toast, message } from "./ui";
import { loginPage } from "./pages/login";
import { dashboardPage } from "./pages/dashboard";
import { historyPage } from "./pages/history";
import { flowsPage } from "./pages/flows";
import { sqlPage } from "./pages/sql";
import { mapPage } from "./pages/map";
import { alertsPage, rulesPage } from "./pages/alerts";
import { incidentsPage } from "./pages/incidents";
import { intelPage } from "./pages/intel";
import { reportsPage } from "./pages/reports";
import { pluginsPage } from "./pages/plugins";
import { performancePage } from "./pages/performance";
import { logsPage } from "./pages/logs";
import { usersPage } from "./pages/users";
import { settingsPage } from "./pages/settings";

interface Route {
  path: string;
  title: string;
  role: Role;
  render: (p: Page) => void | Promise<void>;
}

const ROUTES: Route[] = [
  { path: "dashboard", title: "Dashboard", role: "viewer", render: dashboardPage },
  { path: "history", title: "History", role: "viewer", render: historyPage },
  { path: "flows", title: "Flows & records", role: "viewer", render: flowsPage },
  { path: "sql", title: "SQL", role: "analyst", render: sqlPage },
  { path: "map", title: "World map", role: "viewer", render: mapPage },
  { path: "alerts", title: "Alerts", role: "viewer", render: alertsPage },
  { path: "rules", title: "Rules", role: "viewer", render: rulesPage },
  { path: "incidents", title: "Incidents", role: "viewer", render: incidentsPage },
  { path: "intel", title: "Threat intel", role: "viewer", render: intelPage },
  { path: "reports", title: "Reports", role: "viewer", render: reportsPage },
  { path: "plugins", title: "Plugins", role: "viewer", render: pluginsPage },
  { path: "performance", title: "Performance", role: "viewer", render: performancePage },
  { path: "logs", title: "Logs", role: "admin", render: logsPage },
  { path: "users", title: "Users & audit", role: "admin", render: usersPage },
  { path: "settings", title: "Settings", role: "viewer", render: settingsPage },
];

const app = document.getElementById("app")!;
let cleanups: Cleanup[] = [];

function leave(): void {
  cleanups.forEach((f) => {
    try {
      f();
    } catch {
      /* a page's cleanup must not stop the next page */
    }
  });
  cleanups = [];
}

function current(): string {
  return (location.hash.replace(/^#\/?/, "").split("?")[0] || "dashboard").split("/")[0];
}

let shell: { main: HTMLElement; nav: HTMLElement; live: HTMLElement; who: HTMLElement } | null = null;

function buildShell() {
  const nav = h("nav", { class: "nav", "aria-label": "Pages" });
  const live = h("span", { class: "live off", title: "live stream" }, "offline");
  const who = h("span", { class: "who" });
  const main = h("main", { class: "main", id: "main" });
  const menu = h("button", { class: "btn menu-btn", type: "button", "aria-label": "Menu", onclick: () => document.body.classList.toggle("nav-open") }, "☰");
  const top = h(
    "header",
    { class: "top" },
    menu,
    h("a", { class: "brand", href: "#/dashboard" }, "tapstream"),
    h("span", { class: "grow" }),
    live,
    who,
    h("button", { class: "btn", type: "button", onclick: () => void logout() }, "Log out"),
  );
  app.replaceChildren(h("div", { class: "shell" }, top, nav, main));
  stream.subscribe({
    state: (up) => {
      live.className = `live ${up ? "on" : "off"}`;
      live.textContent = up ? "live" : "offline";
    },
  });
  return { main, nav, live, who };
}

function renderNav(active: string) {
  if (!shell) return;
  shell.nav.replaceChildren(
    ...ROUTES.filter((r) => can(r.role)).map((r) =>
      h("a", { href: `#/${r.path}`, class: r.path === active ? "active" : undefined, "aria-current": r.path === active ? "page" : undefined }, r.title),
    ),
  );
  const u = user();
  shell.who.textContent = u ? `${u.name} · ${u.role}` : "";
}

async function route(): Promise<void> {
  leave();
  const u = user();
  if (!u) {
    shell = null;
    stream.stop();
    app.replaceChildren();
    const root = h("div", { class: "login-wrap" });
    app.append(root);
    loginPage(root, () => {
      if (!location.hash || location.hash === "#/login") location.hash = "#/dashboard";
      else void route();
    });
    return;
  }
  shell ??= buildShell();
  stream.start();
  const path = current();
  const r = ROUTES.find((x) => x.path === path);
  renderNav(path);
  document.body.classList.remove("nav-open");
  const root = h("div", { class: `page page-${path}` });
  shell.main.replaceChildren(root);
  if (!r) {
    root.append(h("h2", null, "Not found"), h("p", null, `There is no page “${path}”.`));
    return;
  }
  if (!can(r.role)) {
    root.append(h("h2", null, r.title), h("p", { class: "muted" }, `This page needs the ${r.role} role.`));
    return;
  }
  document.title = `${r.title} · tapstream`;
  const timers: number[] = [];
  const page: Page = {
    root,
    onLeave: (f) => cleanups.push(f),
    every: (ms, f) => timers.push(window.setInterval(f, ms)),
  };
  cleanups.push(() => timers.forEach(clearInterval));
  try {
    await r.render(page);
  } catch (e) {
    root.append(h("div", { class: "error" }, message(e)));
  }
}

window.addEventListener("hashchange", () => void route());
onSessionChange(() => {
  // Logged out (or the session ended): back to the log-in page.
  if (!user() && shell) void route();
});
window.addEventListener("unhandledrejection", (e) => {
  e.preventDefault();
  if (!isAbort(e.reason)) toast(message(e.reason), "error");
});
void route();
