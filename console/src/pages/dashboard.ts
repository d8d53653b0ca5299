// The live dashboard: panels the user arranges (add, remove, resize, move,
// pick metric, chart type and range), saved per user on the server, kept
// up to date from the live stream.
import { get, call } from "../api";
import { mount, timeOption } from "../charts";
import * as stream from "../stream";
import { type Alert, type Sample } from "../stream";
import { type Page, panel, toast, message, dialog, field } from "../ui";
import { badge, bits, h, si, time } from "../util";
import { METRICS, type ChartType, type Metric, traffic, view, interfacesTable, type View } from "../views";

type Kind = Metric | "live" | "alerts" | "interfaces";

interface PanelSpec {
  id: string;
  kind: Kind;
  chart: ChartType | "list";
  range: string; // live (stream), 15m, 1h, 24h, 7d
  w: number; // columns of 4
  h: number; // rows
}

interface Layout {
  version: 1;
  panels: PanelSpec[];
}

const KINDS: Record<Kind, { title: string; charts: (ChartType | "list")[] }> = {
  live: { title: "Live bandwidth & packet rate", charts: ["area", "line"] },
  alerts: { title: "Live alerts", charts: ["list"] },
  interfaces: { title: "Interfaces: capture & drops", charts: ["table"] },
  ...(Object.fromEntries(Object.entries(METRICS).map(([k, v]) => [k, { title: v.title, charts: v.charts }])) as Record<Metric, { title: string; charts: ChartType[] }>),
};

const RANGES = ["15m", "1h", "24h", "7d"];
const SECS: Record<string, number> = { "15m": 900, "1h": 3600, "24h": 86400, "7d": 604800 };

let seq = 0;
const id = () => `p${Date.now().toString(36)}${(seq++).toString(36)}`;
const p = (kind: Kind, chart: PanelSpec["chart"], w: number, hh: number, range = "15m"): PanelSpec => ({ id: id(), kind, chart, range, w, h: hh });

export function defaultLayout(): Layout {
  return {
    version: 1,
    panels: [
      p("live", "area", 4, 2, "live"),
      p("protocols", "donut", 1, 2),
      p("src", "bar", 1, 2),
      p("dst", "bar", 1, 2),
      p("ports", "bar", 1, 2),
      p("states", "bar", 1, 2),
      p("sizes", "histogram", 1, 2),
      p("alerts", "list", 2, 2, "live"),
      p("interfaces", "table", 2, 2, "live"),
      p("talkers", "sankey", 2, 2),
      p("heatmap", "heatmap", 2, 2, "1h"),
      p("map", "map", 2, 3),
    ],
  };
}

function valid(l: unknown): l is Layout {
  const x = l as Layout;
  return !!x && x.version === 1 && Array.isArray(x.panels) && x.panels.every((q) => q && typeof q.id === "string" && q.kind in KINDS);
}

export async function dashboardPage(pg: Page): Promise<void> {
  const root = pg.root;
  let layout: Layout = defaultLayout();
  try {
    const saved = await get<{ layout: unknown }>("/api/me/layout");
    if (valid(saved?.layout)) layout = saved.layout;
  } catch (e) {
    toast(`Could not load your layout: ${message(e)}`, "error");
  }
  let editing = false;
  const grid = h("div", { class: "grid" });
  // Each change is saved at once; changes made while a save is in flight
  // are sent together after it, so the server ends with the latest layout.
  let inFlight = false;
  let pending = false;
  const save = async () => {
    if (inFlight) {
      pending = true;
      return;
    }
    inFlight = true;
    try {
      await call("PUT", "/api/me/layout", { layout }, { keepalive: true });
    } catch (e) {
      toast(`Layout not saved: ${message(e)}`, "error");
    } finally {
      inFlight = false;
      if (pending) {
        pending = false;
        void save();
      }
    }
  };
  const editBtn = h("button", { class: "btn", type: "button", onclick: () => { editing = !editing; editBtn.textContent = editing ? "Done" : "Customize"; root.classList.toggle("editing", editing); render(); } }, "Customize");
  const addBtn = h("button", { class: "btn", type: "button", onclick: async () => { const spec = await editSpec(p("protocols", "donut", 1, 2)); if (spec) { layout.panels.push(spec); save(); render(); } } }, "Add panel");
  const resetBtn = h("button", { class: "btn", type: "button", onclick: () => { layout = defaultLayout(); save(); render(); } }, "Reset");
  root.append(h("div", { class: "page-head" }, h("h2", null, "Dashboard"), h("span", { class: "grow" }), addBtn, resetBtn, editBtn), grid);

  // Live data shared by the panels.
  const samples: Sample[] = [];
  try {
    const perf = await get<{ history: Sample[] }>("/api/performance?seconds=600");
    samples.push(...perf.history);
  } catch {
    /* the stream fills it */
  }
  let alerts: Alert[] = [];
  try {
    alerts = await get<Alert[]>("/api/alerts?limit=50");
  } catch (e) {
    toast(`Alerts: ${message(e)}`, "error");
  }
  const threats = new Map<string, number>();
  const countThreats = (list: Alert[]) => {
    threats.clear();
    for (const a of list) if (a.category !== "system") for (const c of (a.countries as string[]) ?? []) threats.set(c, (threats.get(c) ?? 0) + 1);
  };
  countThreats(alerts);

  interface Live {
    spec: PanelSpec;
    tick(n: number): void;
    onAlert?(): void;
    dispose(): void;
  }
  let live: Live[] = [];

  function render(): void {
    live.forEach((l) => l.dispose());
    live = [];
    // Panels go into the page first, then their charts start: a chart
    // made in a detached (zero-sized) element cannot lay out a map.
    const built = layout.panels.map((s, i) => build(s, i));
    grid.replaceChildren(...built.map((b) => b.el));
    live = built.map((b) => start(b.spec, b.body));
  }

  function build(spec: PanelSpec, index: number): { el: HTMLElement; spec: PanelSpec; body: HTMLElement } {
    const body = h("div", { class: "panel-body" });
    const title = `${KINDS[spec.kind].title}${spec.range !== "live" && !["alerts", "interfaces", "live"].includes(spec.kind) ? ` · ${spec.range}` : ""}`;
    const tools: HTMLElement[] = [];
    if (editing) {
      const move = (d: number) => () => {
        const j = index + d;
        if (j < 0 || j >= layout.panels.length) return;
        [layout.panels[index], layout.panels[j]] = [layout.panels[j], layout.panels[index]];
        save();
        render();
      };
      const size = (k: "w" | "h", d: number) => () => {
        spec[k] = Math.min(k === "w" ? 4 : 4, Math.max(1, spec[k] + d));
        save();
        render();
      };
      tools.push(
        h("button", { class: "icon", title: "move earlier", onclick: move(-1) }, "◀"),
        h("button", { class: "icon", title: "move later", onclick: move(1) }, "▶"),
        h("button", { class: "icon", title: "narrower", onclick: size("w", -1) }, "−w"),
        h("button", { class: "icon", title: "wider", onclick: size("w", 1) }, "+w"),
        h("button", { class: "icon", title: "shorter", onclick: size("h", -1) }, "−h"),
        h("button", { class: "icon", title: "taller", onclick: size("h", 1) }, "+h"),
        h("button", { class: "icon", title: "settings", onclick: async () => { const s = await editSpec({ ...spec }); if (s) { layout.panels[index] = s; save(); render(); } } }, "⚙"),
        h("button", { class: "icon danger", title: "remove", onclick: () => { layout.panels.splice(index, 1); save(); render(); } }, "✕"),
      );
    }
    const el = panel(title, body, ...tools);
    el.classList.add(`w${spec.w}`, `h${spec.h}`);
    el.dataset.kind = spec.kind;
    el.dataset.chart = spec.chart;
    return { el, spec, body };
  }

  const drill = (q: Record<string, string>) => {
    const table = q.table;
    delete q.table;
    const s = new URLSearchParams({ range: "1h", ...q, ...(table ? { table } : {}) });
    location.hash = `#/flows?${s}`;
  };

  function start(spec: PanelSpec, body: HTMLElement): Live {
    if (spec.kind === "live") {
      const { chart, dispose } = mount(body);
      const draw = () => {
        const s = samples.slice(-600);
        chart.setOption(
          {
            ...timeOption(
              [
                { name: "bit/s", points: s.map((x) => [x.ts * 1000, x.rates.bps]), area: spec.chart === "area" },
                { name: "pkt/s", points: s.map((x) => [x.ts * 1000, x.rates.pps]) },
              ],
              bits,
            ),
            yAxis: [
              { type: "value", axisLabel: { color: "#8fa3bf", formatter: (v: number) => bits(v) }, splitLine: { lineStyle: { color: "#1e2836" } } },
              { type: "value", axisLabel: { color: "#8fa3bf", formatter: (v: number) => si(v, "pkt/s") }, splitLine: { show: false } },
            ],
            series: [
              { name: "bit/s", type: "line", showSymbol: false, areaStyle: spec.chart === "area" ? { opacity: 0.25 } : undefined, data: s.map((x) => [x.ts * 1000, x.rates.bps]), yAxisIndex: 0 },
              { name: "pkt/s", type: "line", showSymbol: false, data: s.map((x) => [x.ts * 1000, x.rates.pps]), yAxisIndex: 1 },
            ],
            tooltip: { trigger: "axis", backgroundColor: "#111a26", borderColor: "#2b3a4f", textStyle: { color: "#dce6f2" } },
          },
          { notMerge: true, lazyUpdate: true },
        );
        body.dataset.points = String(s.length);
      };
      draw();
      return { spec, tick: draw, dispose };
    }
    if (spec.kind === "alerts") {
      const list = h("ul", { class: "feed" });
      body.append(list);
      const draw = () => {
        list.replaceChildren(
          ...alerts.slice(0, 50).map((a) =>
            h("li", { class: "link", onclick: () => (location.hash = `#/alerts?id=${a.id}`) }, badge(a.severity), " ", h("b", null, a.rule), " ", h("span", { class: "muted" }, time(a.timestamp)), h("div", { class: "small" }, a.explanation)),
          ),
        );
        if (!alerts.length) list.append(h("li", { class: "muted" }, "No alerts yet."));
        body.dataset.points = String(alerts.length);
      };
      draw();
      return { spec, tick: () => {}, onAlert: draw, dispose: () => {} };
    }
    if (spec.kind === "interfaces") {
      const t = interfacesTable();
      body.append(t.el);
      const draw = () => {
        const s = samples[samples.length - 1];
        if (s) t.update(s);
      };
      draw();
      return { spec, tick: draw, dispose: () => {} };
    }
    const metric = spec.kind as Metric;
    const v: View = view(body, metric, spec.chart as ChartType, drill);
    let busy = false;
    const refresh = async () => {
      if (busy) return;
      busy = true;
      try {
        const secs = SECS[spec.range] ?? 900;
        const from = new Date(Date.now() - secs * 1000).toISOString();
        const top = metric === "talkers" ? 15 : metric === "map" || metric === "countries" ? 100 : 10;
        const t = await traffic(from, undefined, METRICS[metric].by, {}, top);
        v.update(t, { threats });
        body.classList.remove("failed");
      } catch (e) {
        body.classList.add("failed");
        body.title = message(e);
      } finally {
        busy = false;
      }
    };
    void refresh();
    // Short ranges follow the stream every 2 s; long ones every minute.
    const every = (SECS[spec.range] ?? 900) > 3600 ? 60 : 2;
    return { spec, tick: (n) => n % every === 0 && void refresh(), dispose: v.dispose };
  }

  render();
  let n = 0;
  const unsub = stream.subscribe({
    stats: (s) => {
      if (samples.length && samples[samples.length - 1].ts >= s.ts) return;
      samples.push(s);
      if (samples.length > 600) samples.shift();
      n++;
      live.forEach((l) => l.tick(n));
    },
    alert: (a) => {
      alerts = [a, ...alerts.filter((x) => x.id !== a.id)].slice(0, 200);
      countThreats(alerts);
      live.forEach((l) => l.onAlert?.());
    },
  });
  pg.onLeave(() => {
    unsub();
    live.forEach((l) => l.dispose());
  });
}

async function editSpec(spec: PanelSpec): Promise<PanelSpec | null> {
  const kind = h("select", { name: "kind" }, ...Object.entries(KINDS).map(([k, v]) => h("option", { value: k, selected: spec.kind === k }, v.title)));
  const chart = h("select", { name: "chart" });
  const range = h("select", { name: "range" });
  const fill = () => {
    const k = kind.value as Kind;
    chart.replaceChildren(...KINDS[k].charts.map((c) => h("option", { value: c, selected: spec.chart === c }, c)));
    const rs = ["live", "alerts", "interfaces"].includes(k) ? ["live"] : RANGES;
    range.replaceChildren(...rs.map((r) => h("option", { value: r, selected: spec.range === r }, r === "live" ? "live (stream)" : `last ${r}`)));
  };
  kind.addEventListener("change", fill);
  fill();
  const w = h("input", { name: "w", type: "number", min: 1, max: 4, value: spec.w });
  const hh = h("input", { name: "h", type: "number", min: 1, max: 4, value: spec.h });
  const f = await dialog("Panel", h("div", { class: "form-grid" }, field("Metric", kind), field("Chart type", chart), field("Time range", range), field("Width (1–4 columns)", w), field("Height (rows)", hh)));
  if (!f) return null;
  const clamp = (v: FormDataEntryValue | null) => Math.min(4, Math.max(1, Number(v) || 1));
  return { ...spec, kind: f.get("kind") as Kind, chart: f.get("chart") as ChartType, range: String(f.get("range")), w: clamp(f.get("w")), h: clamp(f.get("h")) };
}
