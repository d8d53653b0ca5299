// History: the dashboard's views over 24 h, 7 days, 30 days or a custom
// range, with the filter bar; a click on any segment opens the flows behind it.
import { filterBar, fromHash, resolve, toQuery, type Filter, type Range } from "../filter";
import { type Page, panel, message } from "../ui";
import { h } from "../util";
import { METRICS, traffic, view, type ChartType, type Metric, type View } from "../views";

const VIEWS: [Metric, ChartType, number][] = [
  ["bandwidth", "area", 4],
  ["packets", "area", 2],
  ["heatmap", "heatmap", 2],
  ["protocols", "donut", 1],
  ["src", "bar", 1],
  ["dst", "bar", 1],
  ["ports", "bar", 1],
  ["countries", "bar", 1],
  ["states", "bar", 1],
  ["sizes", "histogram", 1],
  ["talkers", "sankey", 1],
];

export function historyPage(pg: Page): void {
  const { filter, range } = fromHash();
  if (!range.preset) range.preset = "24h";
  const grid = h("div", { class: "grid" });
  const status = h("span", { class: "muted" });
  pg.root.append(
    h("div", { class: "page-head" }, h("h2", null, "History"), h("span", { class: "grow" }), status),
    filterBar(filter, range, ["1h", "24h", "7d", "30d"], (f, r) => {
      location.hash = `#/history?${new URLSearchParams(clean(toQuery(f, r)))}`;
    }),
    grid,
  );
  const views: View[] = [];
  const { from, to } = resolve(range);
  const drill = (q: Record<string, string>) => {
    const table = q.table;
    delete q.table;
    const base = clean(toQuery(filter, range));
    if (q.range === "custom") delete base.range;
    const s = new URLSearchParams({ ...base, ...q, ...(table ? { table } : {}) });
    location.hash = `#/flows?${s}`;
  };
  for (const [metric, chart, w] of VIEWS) {
    const body = h("div", { class: "panel-body" });
    const el = panel(METRICS[metric].title, body);
    el.classList.add(`w${w}`, "h2");
    el.dataset.kind = metric;
    grid.append(el);
    const v = view(body, metric, chart, drill);
    views.push(v);
    const top = metric === "talkers" ? 15 : metric === "countries" ? 15 : 10;
    traffic(from, to, METRICS[metric].by, filter, top)
      .then((t) => {
        v.update(t);
        status.textContent = `${new Date(t.from).toLocaleString()} – ${new Date(t.to).toLocaleString()} · ${t.bucket} s per point`;
      })
      .catch((e) => {
        body.replaceChildren(h("div", { class: "error" }, message(e)));
      });
  }
  pg.onLeave(() => views.forEach((v) => v.dispose()));
}

export function clean(q: Record<string, string | undefined>): Record<string, string> {
  const o: Record<string, string> = {};
  for (const [k, v] of Object.entries(q)) if (v) o[k] = v;
  return o;
}

export type { Filter, Range };
