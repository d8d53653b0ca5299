// Server logs: the tail of a day's file filtered by level, and downloads.
import { download, get, qs } from "../api";
import { type Page, act, errorBox } from "../ui";
import { bytes, h } from "../util";

export async function logsPage(pg: Page): Promise<void> {
  const err = errorBox();
  const out = h("pre", { class: "log" });
  const level = h("select", { "aria-label": "Level" }, ...["trace", "debug", "info", "warn", "error"].map((l) => h("option", { value: l, selected: l === "info" }, l)));
  const lines = h("select", { "aria-label": "Lines" }, ...[100, 500, 2000].map((n) => h("option", { value: n, selected: n === 500 }, `${n} lines`)));
  const file = h("select", { "aria-label": "File" });
  const follow = h("input", { type: "checkbox", checked: true });
  const files = h("ul", { class: "files" });
  pg.root.append(
    h("div", { class: "page-head" }, h("h2", null, "Server logs")),
    h("div", { class: "toolbar" }, h("label", { class: "field" }, h("span", null, "File"), file), h("label", { class: "field" }, h("span", null, "Level at least"), level), lines, h("label", { class: "field" }, follow, h("span", null, "follow")), h("button", { class: "btn", type: "button", onclick: () => void tail() }, "Refresh")),
    err,
    h("div", { class: "split wide-left" }, out, h("div", null, h("h4", null, "Download"), files)),
  );
  const list = await get<{ name: string; bytes: number }[] | { files: { name: string; bytes: number }[] }>("/api/logs").catch((e) => (err.show(e), []));
  const fl = Array.isArray(list) ? list : list.files;
  file.replaceChildren(h("option", { value: "" }, "today"), ...fl.map((f) => h("option", { value: f.name }, f.name)));
  files.replaceChildren(...fl.map((f) => h("li", null, h("button", { class: "link-btn", type: "button", onclick: () => void act(`Downloaded ${f.name}`, () => download("GET", `/api/logs/${encodeURIComponent(f.name)}`)) }, f.name), ` ${bytes(f.bytes)}`)));
  async function tail() {
    try {
      const r = await get<{ lines: string[] } | string[]>(`/api/logs/tail${qs({ lines: lines.value, level: level.value, file: file.value })}`);
      const ls = Array.isArray(r) ? r : r.lines;
      out.textContent = ls.join("\n");
      out.dataset.lines = String(ls.length);
      out.scrollTop = out.scrollHeight;
      err.clear();
    } catch (e) {
      err.show(e);
    }
  }
  for (const el of [level, lines, file]) el.addEventListener("change", () => void tail());
  await tail();
  pg.every(3000, () => follow.checked && void tail());
}
