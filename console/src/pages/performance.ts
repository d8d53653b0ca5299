// System performance: CPU per core, memory, disk and engine rates over the
// last ten minutes, kept current from the live stream.
import { get } from "../api";
import { mount, timeOption } from "../charts";
import * as stream from "../stream";
import type { Sample } from "../stream";
import { type Page, panel, errorBox } from "../ui";
import { bits, bytes, h, si } from "../util";
import { interfacesTable } from "../views";

export async function performancePage(pg: Page): Promise<void> {
  const err = errorBox();
  const boxes = { cpu: h("div", { class: "panel-body" }), mem: h("div", { class: "panel-body" }), disk: h("div", { class: "panel-body" }), rates: h("div", { class: "panel-body" }), drops: h("div", { class: "panel-body" }) };
  const ifaces = interfacesTable();
  const summary = h("div", { class: "stats-row" });
  const p = (t: string, b: HTMLElement, c: string) => Object.assign(panel(t, b), { className: `panel ${c}` });
  pg.root.append(
    h("div", { class: "page-head" }, h("h2", null, "System performance")),
    err,
    summary,
    h("div", { class: "grid" }, p("CPU per core (%)", boxes.cpu, "w2 h2"), p("Memory", boxes.mem, "w2 h2"), p("Engine rates", boxes.rates, "w2 h2"), p("Drops per second", boxes.drops, "w2 h2"), p("Data directory & disk", boxes.disk, "w2 h2"), p("Interfaces", h("div", { class: "panel-body" }, ifaces.el), "w2 h2")),
  );
  const charts = Object.fromEntries(Object.entries(boxes).map(([k, el]) => [k, mount(el)])) as Record<keyof typeof boxes, ReturnType<typeof mount>>;
  pg.onLeave(() => Object.values(charts).forEach((c) => c.dispose()));
  let samples: Sample[] = [];
  try {
    samples = (await get<{ history: Sample[] }>("/api/performance?seconds=600")).history;
  } catch (e) {
    err.show(e);
  }
  const draw = () => {
    const t = (s: Sample) => s.ts * 1000;
    const cores = samples[samples.length - 1]?.host.cpu_per_core.length ?? 0;
    charts.cpu.chart.setOption(timeOption(Array.from({ length: cores }, (_, i) => ({ name: `cpu${i}`, points: samples.map((s) => [t(s), s.host.cpu_per_core[i] ?? 0]) })), (n) => `${n.toFixed(0)}%`), { notMerge: true });
    charts.mem.chart.setOption(timeOption([{ name: "used", points: samples.map((s) => [t(s), s.host.memory_used]), area: true }, { name: "tapstream RSS", points: samples.map((s) => [t(s), s.host.process_rss]), area: true }], bytes), { notMerge: true });
    charts.disk.chart.setOption(timeOption([{ name: "data dir", points: samples.map((s) => [t(s), s.host.data_dir_bytes]), area: true }, { name: "free", points: samples.map((s) => [t(s), s.host.disk_free]) }], bytes), { notMerge: true });
    charts.rates.chart.setOption(timeOption([{ name: "bit/s", points: samples.map((s) => [t(s), s.rates.bps]), area: true }], bits), { notMerge: true });
    charts.drops.chart.setOption(timeOption([{ name: "drops/s", points: samples.map((s) => [t(s), s.rates.drops_per_s]), area: true }], (n) => si(n, "/s")), { notMerge: true });
    boxes.cpu.dataset.points = String(samples.length);
    const s = samples[samples.length - 1];
    if (s) {
      ifaces.update(s);
      const stat = (k: string, v: string) => h("div", { class: "stat" }, h("span", null, k), h("b", null, v));
      summary.replaceChildren(
        stat("source", s.engine.source),
        stat("packets", si(s.engine.packets)),
        stat("rate", `${si(s.rates.pps, "pkt/s")} · ${bits(s.rates.bps)}`),
        stat("drops", si(s.engine.drops)),
        stat("memory", `${bytes(s.host.memory_used)} / ${bytes(s.host.memory_total)}`),
        stat("disk free", `${bytes(s.host.disk_free)} / ${bytes(s.host.disk_total)}`),
      );
    }
  };
  draw();
  const unsub = stream.subscribe({
    stats: (s) => {
      if (samples.length && samples[samples.length - 1].ts >= s.ts) return;
      samples.push(s);
      if (samples.length > 600) samples.shift();
      draw();
    },
  });
  pg.onLeave(unsub);
}
