// Charts (Apache ECharts, only the parts we use) in the console's theme.
import * as echarts from "echarts/core";
import { BarChart, HeatmapChart, LineChart, MapChart, PieChart, SankeyChart } from "echarts/charts";
import {
  DataZoomComponent,
  GridComponent,
  LegendComponent,
  TooltipComponent,
  VisualMapComponent,
} from "echarts/components";
import { CanvasRenderer } from "echarts/renderers";
import { feature } from "topojson-client";
import type { Topology, GeometryCollection } from "topojson-specification";
import world from "world-atlas/countries-110m.json";
import countries from "i18n-iso-countries";
import english from "i18n-iso-countries/langs/en.json";
import { bytes, si } from "./util";

echarts.use([
  BarChart,
  HeatmapChart,
  LineChart,
  MapChart,
  PieChart,
  SankeyChart,
  DataZoomComponent,
  GridComponent,
  LegendComponent,
  TooltipComponent,
  VisualMapComponent,
  CanvasRenderer,
]);

export const PALETTE = ["#3fb6ff", "#7ee081", "#ffb454", "#ff6b6b", "#b48cff", "#4dd0c8", "#f78fb3", "#c3d84c", "#8fa3bf", "#ff9f43"];
const AXIS = { axisLine: { lineStyle: { color: "#3a4658" } }, axisLabel: { color: "#8fa3bf" }, splitLine: { lineStyle: { color: "#1e2836" } } };
const TOOLTIP = { backgroundColor: "#111a26", borderColor: "#2b3a4f", textStyle: { color: "#dce6f2" } };

export type Chart = echarts.ECharts;

/** Has the element's content box an area? A chart is laid out only then:
 * ECharts cannot lay out a map in zero width (its view transform is
 * singular), and a panel may be that narrow for a moment while the grid
 * is laid out. */
export function hasArea(el: HTMLElement): boolean {
  const cs = getComputedStyle(el);
  const w = el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  const hh = el.clientHeight - parseFloat(cs.paddingTop) - parseFloat(cs.paddingBottom);
  return w >= 1 && hh >= 1;
}

/** A chart in an element that follows the element's size. */
export function mount(el: HTMLElement): { chart: Chart; dispose: () => void } {
  const chart = echarts.init(el, null, { renderer: "canvas" });
  // A hidden (zero-sized) chart is not laid out; it is when it shows again.
  const ro = new ResizeObserver(() => hasArea(el) && chart.resize());
  ro.observe(el);
  return {
    chart,
    dispose: () => {
      ro.disconnect();
      chart.dispose();
    },
  };
}

export interface Series {
  name: string;
  points: [number | string, number][];
  area?: boolean;
}

export function timeOption(series: Series[], unit: (n: number) => string, stacked = false, range?: [number, number]): echarts.EChartsCoreOption {
  return {
    color: PALETTE,
    animation: false,
    grid: { left: 58, right: 12, top: 26, bottom: 24 },
    tooltip: { ...TOOLTIP, trigger: "axis", valueFormatter: (v: number) => unit(v) },
    legend: { textStyle: { color: "#8fa3bf" }, top: 0, itemHeight: 8 },
    xAxis: { type: "time", ...AXIS, axisLabel: { color: "#8fa3bf", hideOverlap: true }, splitLine: { show: false }, min: range?.[0], max: range?.[1] },
    yAxis: { type: "value", ...AXIS, axisLabel: { color: "#8fa3bf", formatter: (v: number) => unit(v) } },
    series: series.map((s) => ({
      name: s.name,
      type: "line",
      // A few points are drawn as dots too (one point makes no line).
      showSymbol: s.points.length < 20,
      symbolSize: 4,
      stack: stacked ? "all" : undefined,
      areaStyle: s.area || stacked ? { opacity: 0.25 } : undefined,
      data: s.points,
      lineStyle: { width: 1.5 },
    })),
  };
}

export interface Item {
  name: string;
  value: number;
}

export function barOption(items: Item[], unit: (n: number) => string, horizontal = true): echarts.EChartsCoreOption {
  const names = items.map((i) => i.name);
  const cat = { type: "category", data: horizontal ? [...names].reverse() : names, ...AXIS, axisLabel: { color: "#b8c6d8", width: 120, overflow: "truncate" } };
  const val = { type: "value", ...AXIS, splitNumber: 3, axisLabel: { color: "#8fa3bf", hideOverlap: true, formatter: (v: number) => unit(v) } };
  return {
    color: PALETTE,
    animation: false,
    grid: { left: horizontal ? 128 : 48, right: 16, top: 8, bottom: 24 },
    tooltip: { ...TOOLTIP, trigger: "item", valueFormatter: (v: number) => unit(v) },
    xAxis: horizontal ? val : cat,
    yAxis: horizontal ? cat : val,
    series: [{ type: "bar", data: horizontal ? items.map((i) => i.value).reverse() : items.map((i) => i.value), itemStyle: { borderRadius: 2 } }],
  };
}

export function donutOption(items: Item[], unit: (n: number) => string): echarts.EChartsCoreOption {
  return {
    color: PALETTE,
    animation: false,
    tooltip: { ...TOOLTIP, trigger: "item", valueFormatter: (v: number) => unit(v) },
    legend: { type: "scroll", orient: "vertical", right: 0, top: "middle", textStyle: { color: "#b8c6d8" } },
    series: [{ type: "pie", radius: ["45%", "72%"], center: ["38%", "50%"], label: { show: false }, data: items }],
  };
}

/** Bars over ordered classes, touching (a histogram). */
export function histogramOption(items: Item[], unit: (n: number) => string): echarts.EChartsCoreOption {
  return {
    color: ["#b48cff"],
    animation: false,
    grid: { left: 52, right: 12, top: 10, bottom: 36 },
    tooltip: { ...TOOLTIP, trigger: "item", valueFormatter: (v: number) => unit(v) },
    xAxis: { type: "category", data: items.map((i) => i.name), ...AXIS, name: "mean packet size (bytes)", nameLocation: "middle", nameGap: 22, nameTextStyle: { color: "#8fa3bf" } },
    yAxis: { type: "value", ...AXIS, axisLabel: { color: "#8fa3bf", formatter: (v: number) => unit(v) } },
    series: [{ type: "bar", barCategoryGap: "2%", data: items.map((i) => i.value) }],
  };
}

export function heatmapOption(xs: string[], ys: string[], cells: [number, number, number][], unit: (n: number) => string): echarts.EChartsCoreOption {
  const max = Math.max(1, ...cells.map((c) => c[2]));
  return {
    animation: false,
    grid: { left: 52, right: 12, top: 8, bottom: 46 },
    tooltip: { ...TOOLTIP, valueFormatter: (v: number) => unit(v) },
    xAxis: { type: "category", data: xs, ...AXIS, splitArea: { show: false } },
    yAxis: { type: "category", data: ys, ...AXIS },
    visualMap: { min: 0, max, calculable: false, orient: "horizontal", left: "center", bottom: 0, itemHeight: 120, itemWidth: 10, textStyle: { color: "#8fa3bf" }, inRange: { color: ["#0f1722", "#1f4f7a", "#3fb6ff", "#ffb454", "#ff6b6b"] } },
    series: [{ type: "heatmap", data: cells, progressive: 0 }],
  };
}

export interface Link {
  source: string;
  target: string;
  value: number;
}

/** Talkers as a sankey: originators on the left, responders on the right. */
export function sankeyOption(links: Link[]): echarts.EChartsCoreOption {
  // The same address may talk both ways: keep the two sides apart.
  const ls = links.map((l) => ({ source: `${l.source} ›`, target: `› ${l.target}`, value: l.value }));
  const names = new Set<string>();
  ls.forEach((l) => (names.add(l.source), names.add(l.target)));
  return {
    color: PALETTE,
    animation: false,
    tooltip: { ...TOOLTIP, trigger: "item", valueFormatter: (v: number) => bytes(v) },
    series: [
      {
        type: "sankey",
        left: 4,
        right: 110,
        top: 6,
        bottom: 6,
        nodeGap: 6,
        data: [...names].map((name) => ({ name })),
        links: ls,
        label: { color: "#b8c6d8", fontSize: 11 },
        lineStyle: { color: "gradient", opacity: 0.35 },
        emphasis: { focus: "adjacency" },
      },
    ],
  };
}

let mapReady = false;

/** The world's countries (world-atlas, shipped with the console), keyed by ISO alpha-2. */
function registerWorld(): void {
  if (mapReady) return;
  countries.registerLocale(english);
  const topo = world as unknown as Topology<{ countries: GeometryCollection<{ name: string }> }>;
  const geo = feature(topo, topo.objects.countries);
  for (const f of geo.features) {
    // Rings that cross the antimeridian (Russia, Fiji) would be drawn as
    // bands across the map: continue them past 180° instead.
    const g = f.geometry as { type: string; coordinates: number[][][] | number[][][][] };
    const polys = (g.type === "Polygon" ? [g.coordinates] : g.type === "MultiPolygon" ? g.coordinates : []) as number[][][][];
    if (f.id !== "010") {
      for (const ring of polys.flat()) {
        if (ring.some((p, i) => i > 0 && Math.abs(p[0] - ring[i - 1][0]) > 180)) for (const p of ring) if (p[0] < 0) p[0] += 360;
      }
    }
    const id = String(f.id ?? "").padStart(3, "0");
    (f.properties as Record<string, string>).iso = countries.numericToAlpha2(id) ?? f.properties?.name ?? id;
  }
  echarts.registerMap("world", geo as unknown as Parameters<typeof echarts.registerMap>[1]);
  mapReady = true;
}

export interface CountryStat {
  code: string;
  packets: number;
  bytes: number;
  hosts: number;
  threats: number;
}

export function countryName(code: string): string {
  return countries.getName(code, "en") ?? code;
}

export function mapOption(stats: CountryStat[]): echarts.EChartsCoreOption {
  registerWorld();
  const max = Math.max(1, ...stats.map((s) => s.packets));
  const by = new Map(stats.map((s) => [s.code, s]));
  return {
    animation: false,
    tooltip: {
      ...TOOLTIP,
      trigger: "item",
      formatter: (p: { name: string }) => {
        const s = by.get(p.name);
        const n = countryName(p.name);
        if (!s) return `${n}<br>no traffic`;
        return `<b>${n}</b> (${s.code})<br>${si(s.packets)} packets, ${bytes(s.bytes)}<br>${s.hosts} IPs${s.threats ? `<br><span style="color:#ff6b6b">${s.threats} threat alert(s)</span>` : ""}`;
      },
    },
    visualMap: { min: 0, max, left: 8, bottom: 8, itemHeight: 90, itemWidth: 10, calculable: false, text: ["packets", ""], textStyle: { color: "#8fa3bf" }, inRange: { color: ["#17314d", "#2a6fa8", "#3fb6ff"] }, seriesIndex: 0 },
    series: [
      {
        type: "map",
        map: "world",
        nameProperty: "iso",
        roam: true,
        itemStyle: { areaColor: "#1a2230", borderColor: "#2f3b4d" },
        emphasis: { itemStyle: { areaColor: "#ffb454" }, label: { show: false } },
        select: { disabled: true },
        data: stats.map((s) => ({
          name: s.code,
          value: s.packets,
          itemStyle: s.threats ? { borderColor: "#ff6b6b", borderWidth: 2 } : undefined,
        })),
      },
    ],
  };
}

export { echarts };
