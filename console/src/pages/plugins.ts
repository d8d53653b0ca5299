// Plugins: upload (checked by the server exactly as the engine loads it),
// enable/disable/delete, and each loaded plugin's metrics and errors.
import { call, can, get, post } from "../api";
import { type Page, act, errorBox, panel } from "../ui";
import { bytes, h, num } from "../util";

interface Plugins {
  status: { plugins?: Record<string, unknown>[]; errors?: Record<string, string> } | null;
  files: { name: string; enabled: boolean; bytes: number }[];
}

export async function pluginsPage(pg: Page): Promise<void> {
  const files = h("div");
  const loaded = h("div");
  const errors = h("div");
  const err = errorBox();
  const name = h("input", { name: "name", placeholder: "name (a-z, 0-9, _ -)", pattern: "[a-z0-9_\\-]{1,64}", required: true, disabled: !can("admin"), "aria-label": "Plugin name" });
  const manifest = h("input", { type: "file", name: "manifest", accept: ".toml", required: true, disabled: !can("admin"), "aria-label": "Manifest" });
  const wasm = h("input", { type: "file", name: "wasm", accept: ".wasm", required: true, disabled: !can("admin"), "aria-label": "Module" });
  const upload = h(
    "form",
    {
      class: "toolbar",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        err.clear();
        const m = manifest.files?.[0];
        const w = wasm.files?.[0];
        if (!m || !w) return;
        const b64 = await new Promise<string>((res, rej) => {
          const r = new FileReader();
          r.onload = () => res(String(r.result).split(",")[1] ?? "");
          r.onerror = () => rej(r.error);
          r.readAsDataURL(w);
        });
        try {
          await post("/api/plugins", { name: name.value.trim(), manifest: await m.text(), wasm: b64 });
          await load();
        } catch (x) {
          err.show(x);
        }
      },
    },
    name,
    h("label", { class: "field" }, h("span", null, "manifest.toml"), manifest),
    h("label", { class: "field" }, h("span", null, "module.wasm"), wasm),
    h("button", { class: "btn primary", type: "submit", disabled: !can("admin"), title: can("admin") ? undefined : "needs the admin role" }, "Upload"),
  );
  pg.root.append(
    h("div", { class: "page-head" }, h("h2", null, "Plugins")),
    h("p", { class: "muted small" }, "WASM detectors run sandboxed (memory cap, per-call deadline, crash isolation). The engine picks changes up within its poll interval."),
    upload,
    err,
    h("div", { class: "grid" }, Object.assign(panel("Plugin files", files), { className: "panel w2 h2" }), Object.assign(panel("Load errors", errors), { className: "panel w2 h2" }), Object.assign(panel("Loaded plugins and metrics", loaded), { className: "panel w4 h3" })),
  );
  async function load() {
    const p = await get<Plugins>("/api/plugins");
    files.replaceChildren(
      p.files.length
        ? h(
            "table",
            { class: "tbl" },
            h("thead", null, h("tr", null, h("th", null, "name"), h("th", null, "size"), h("th", null, "state"), h("th", null, ""))),
            h(
              "tbody",
              null,
              ...p.files.map((f) =>
                h(
                  "tr",
                  null,
                  h("td", null, f.name),
                  h("td", { class: "num" }, bytes(f.bytes)),
                  h("td", null, f.enabled ? "enabled" : "disabled"),
                  h(
                    "td",
                    null,
                    can("admin")
                      ? [
                          h("button", { class: "btn small", onclick: () => void act(`${f.enabled ? "Disabled" : "Enabled"} ${f.name}`, () => post(`/api/plugins/${f.name}/${f.enabled ? "disable" : "enable"}`)).then(load) }, f.enabled ? "Disable" : "Enable"),
                          h("button", { class: "icon danger", title: "delete", onclick: () => void act(`Deleted ${f.name}`, () => call("DELETE", `/api/plugins/${f.name}`)).then(load) }, "✕"),
                        ]
                      : null,
                  ),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No plugin files."),
    );
    const errs = Object.entries(p.status?.errors ?? {});
    errors.replaceChildren(errs.length ? h("ul", null, ...errs.map(([f, e]) => h("li", null, h("b", null, f), ": ", e))) : h("p", { class: "muted" }, "None."));
    const pl = p.status?.plugins ?? [];
    loaded.replaceChildren(
      pl.length
        ? h(
            "table",
            { class: "tbl" },
            h("thead", null, h("tr", null, ...["plugin", "version", "state", "calls", "records", "alerts", "errors", "traps", "restarts", "p99 call", "last crash"].map((c) => h("th", null, c)))),
            h(
              "tbody",
              null,
              ...pl.map((x) => {
                const m = (x.metrics ?? {}) as Record<string, unknown> & { call_ns?: { p99: number } };
                return h(
                  "tr",
                  null,
                  h("td", null, String(x.name), h("div", { class: "muted small" }, String(x.description ?? ""))),
                  h("td", null, String(x.version ?? "")),
                  h("td", null, String(m.state ?? "idle")),
                  ...["calls", "records", "alerts", "errors", "traps", "restarts"].map((k) => h("td", { class: "num" }, num(Number(m[k] ?? 0)))),
                  h("td", { class: "num" }, `${((m.call_ns?.p99 ?? 0) / 1000).toFixed(1)} µs`),
                  h("td", { class: "small" }, String(m.last_crash ?? "")),
                );
              }),
            ),
          )
        : h("p", { class: "muted" }, "No plugin is loaded."),
    );
  }
  await load().catch((e) => err.show(e));
  pg.every(5000, () => void load().catch(() => {}));
}
