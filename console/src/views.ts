// The traffic views shared by the dashboard and the history page: what
// each metric fetches, which chart types suit it, and where a click on a
// segment drills down to.
import { get, qs } from "./api";
import {
  hasArea,
  barOption,
  countryName,
  donutOption,
  heatmapOption,
  histogramOption,
  mapOption,
  mount,
  sankeyOption,
  timeOption,
  type CountryStat,
  type Item,
} from "./charts";
import type { Filter } from "./filter";
import { bits, bytes, h, num, si, sparkline, time } from "./util";

export interface Point {
  ts: string;
  packets: number;
  bytes: number;
  tcp: number;
  udp: number;
  icmp: number;
  other: number;
}
export interface Top {
  key: string;
  packets: number;
  bytes: number;
  flows: number;
  hosts?: number;
}
export interface Traffic {
  from: string;
  to: string;
  bucket: number;
  by: string;
  series: Point[];
  top: Top[];
}

export type Metric = "bandwidth" | "packets" | "protocols" | "src" | "dst" | "ports" | "countries" | "states" | "sizes" | "talkers" | "heatmap" | "map";
export type ChartType = "area" | "line" | "bar" | "donut" | "table" | "histogram" | "heatmap" | "sankey" | "map";

export const METRICS: Record<Metric, { title: string; by: string; charts: ChartType[] }> = {
  bandwidth: { title: "Bandwidth", by: "src", charts: ["area", "line"] },
  packets: { title: "Packet rate by protocol", by: "src", charts: ["area", "line"] },
  protocols: { title: "Protocols", by: "protocol", charts: ["donut", "bar", "table"] },
  src: { title: "Top sources", by: "src", charts: ["bar", "table", "donut"] },
  dst: { title: "Top destinations", by: "dst", charts: ["bar", "table", "donut"] },
  ports: { title: "Top ports / services", by: "port", charts: ["bar", "donut", "table"] },
  countries: { title: "Countries", by: "country", charts: ["bar", "donut", "table"] },
  states: { title: "TCP connection states", by: "state", charts: ["bar", "donut", "table"] },
  sizes: { title: "Packet size distribution", by: "size", charts: ["histogram", "table"] },
  talkers: { title: "Talkers", by: "pair", charts: ["sankey", "table"] },
  heatmap: { title: "Protocol activity", by: "src", charts: ["heatmap"] },
  map: { title: "Traffic by country", by: "country", charts: ["map", "table"] },
};

/** Fetch the traffic answer for a range, metric and filter (answers are
 * shared for a second, on the client as on the server). */
const recent = new Map<string, { at: number; p: Promise<Traffic> }>();
export function traffic(from: string, to: string | undefined, by: string, filter: Filter, top = 10, bucket?: number): Promise<Traffic> {
  const url = `/api/traffic${qs({ from, to, by, top, bucket, ...filter })}`;
  const hit = recent.get(url);
  if (hit && Date.now() - hit.at < 1000) return hit.p;
  const p = get<Traffic>(url);
  recent.set(url, { at: Date.now(), p });
  if (recent.size > 64) recent.delete(recent.keys().next().value!);
  p.catch(() => recent.delete(url));
  return p;
}

/** Where a click on a segment leads: the explorer, filtered. */
export interface Drill {
  (q: Record<string, string>): void;
}

function drillFor(by: string, key: string): Record<string, string> | null {
  switch (by) {
    case "src":
    case "dst":
      return { ip: key };
    case "pair":
      return { ip: key.split(" → ")[0] };
    case "country":
      return key === "??" ? null : { country: key };
    case "port": {
      const [port, protocol] = key.split("/");
      return { port, protocol };
    }
    case "protocol":
      if (["tcp", "udp", "icmp"].includes(key)) return { protocol: key };
      if (key === "dns") return { table: "dns" };
      if (key === "ssl") return { table: "tls" };
      if (key === "http") return { table: "http" };
      return null;
    default:
      return null;
  }
}

export function sizeLabel(k: string): string {
  return k.replace(/^\d: /, "");
}

function items(t: Traffic, by: string): Item[] {
  let tops = t.top;
  if (by === "size") tops = [...tops].sort((a, b) => a.key.localeCompare(b.key));
  return tops.map((x) => ({ name: by === "size" ? sizeLabel(x.key) : by === "country" ? x.key : x.key, value: by === "size" ? x.flows : x.bytes }));
}

/** A view in an element; returns a function that updates it with new data. */
export interface View {
  update(t: Traffic, extra?: { threats?: Map<string, number> }): void;
  dispose(): void;
  hasData(): boolean;
}

export function view(el: HTMLElement, metric: Metric, chart: ChartType, drill: Drill): View {
  const by = METRICS[metric].by;
  let points = 0;
  if (chart === "table") {
    const tbl = h("table", { class: "tbl" });
    el.append(tbl);
    return {
      update(t) {
        const rows = metric === "sizes" ? [...t.top].sort((a, b) => a.key.localeCompare(b.key)) : t.top;
        points = rows.length;
        tbl.replaceChildren(
          h("thead", null, h("tr", null, h("th", null, METRICS[metric].title.replace(/^Top /, "")), h("th", null, "bytes"), h("th", null, "packets"), h("th", null, "flows"), by === "country" ? h("th", null, "IPs") : null)),
          h(
            "tbody",
            null,
            ...rows.map((r) => {
              const d = drillFor(by, r.key);
              const label = by === "size" ? sizeLabel(r.key) : by === "country" ? `${countryName(r.key)} (${r.key})` : r.key;
              return h(
                "tr",
                { class: d ? "link" : undefined, onclick: d ? () => drill(d) : undefined },
                h("td", null, label),
                h("td", { class: "num" }, bytes(r.bytes)),
                h("td", { class: "num" }, num(r.packets)),
                h("td", { class: "num" }, num(r.flows)),
                by === "country" ? h("td", { class: "num" }, num(r.hosts ?? 0)) : null,
              );
            }),
          ),
        );
      },
      dispose() {},
      hasData: () => points > 0,
    };
  }
  const { chart: c, dispose } = mount(el);
  c.on("click", (p: { name?: string; dataIndex?: number; data?: unknown; seriesType?: string; value?: unknown }) => {
    if (metric === "bandwidth" || metric === "packets" || metric === "heatmap") {
      // A point in time: the flows of that bucket.
      const v = Array.isArray(p.value) ? p.value[0] : p.value;
      const at = typeof v === "number" ? v : Date.parse(String(v ?? ""));
      const bucket = (c as unknown as { __bucket?: number }).__bucket ?? 60;
      const ts = metric === "heatmap" ? (c as unknown as { __xs: number[] }).__xs[(p.value as number[])[0]] : at;
      if (isFinite(ts)) drill({ from: new Date(ts).toISOString(), to: new Date(ts + bucket * 1000).toISOString(), range: "custom" });
      return;
    }
    if (p.seriesType === "sankey") {
      const d = p.data as { source?: string; target?: string; name?: string };
      const ip = (d.source ?? d.name ?? "").replace(/[›\s]/g, "");
      if (ip) drill({ ip });
      return;
    }
    let key = p.name ?? "";
    if (by === "size") return;
    const d = drillFor(by, key);
    if (d) drill(d);
  });
  return {
    update(t, extra) {
      const ts = (p: Point) => Date.parse(p.ts.endsWith("Z") ? p.ts : `${p.ts}Z`);
      (c as unknown as { __bucket: number }).__bucket = t.bucket;
      let opt;
      const span: [number, number] = [Date.parse(t.from), Date.parse(t.to)];
      if (metric === "bandwidth") {
        points = t.series.length;
        opt = timeOption([{ name: "bit/s", points: t.series.map((p) => [ts(p), (p.bytes * 8) / t.bucket]), area: chart === "area" }], bits, false, span);
      } else if (metric === "packets") {
        points = t.series.length;
        const s = (k: "tcp" | "udp" | "icmp" | "other") => ({ name: k, points: t.series.map((p): [number, number] => [ts(p), p[k] / t.bucket]) });
        opt = timeOption([s("tcp"), s("udp"), s("icmp"), s("other")], (n) => si(n, "pkt/s"), chart === "area", span);
      } else if (metric === "heatmap") {
        const xs = t.series.map(ts);
        (c as unknown as { __xs: number[] }).__xs = xs;
        const ys = ["tcp", "udp", "icmp", "other"] as const;
        const cells: [number, number, number][] = [];
        t.series.forEach((p, i) => ys.forEach((y, j) => cells.push([i, j, p[y]])));
        points = cells.length;
        const label = (x: number) => time(x / 1000).slice(t.bucket >= 86400 ? 5 : 11, t.bucket >= 86400 ? 10 : 16);
        opt = heatmapOption(xs.map(label), [...ys], cells, (n) => `${si(n)} packets`);
      } else if (chart === "map") {
        const threats = extra?.threats ?? new Map<string, number>();
        const stats: CountryStat[] = t.top.filter((x) => x.key !== "??").map((x) => ({ code: x.key, packets: x.packets, bytes: x.bytes, hosts: x.hosts ?? 0, threats: threats.get(x.key) ?? 0 }));
        for (const [code, n] of threats) if (!stats.some((s) => s.code === code)) stats.push({ code, packets: 0, bytes: 0, hosts: 0, threats: n });
        points = stats.length;
        opt = mapOption(stats);
      } else if (chart === "sankey") {
        const links = t.top.map((x) => {
          const [source, target] = x.key.split(" → ");
          return { source, target, value: x.bytes };
        });
        points = links.length;
        opt = sankeyOption(links);
      } else {
        const it = items(t, by);
        points = it.length;
        const unit = by === "size" ? (n: number) => `${si(n)} flows` : bytes;
        opt = chart === "donut" ? donutOption(it, unit) : chart === "histogram" ? histogramOption(it, unit) : barOption(it, unit);
      }
      // A map waits until its panel has an area (see `hasArea`); the next
      // refresh draws it.
      if (chart === "map" && !(hasArea(el) && c.getWidth() > 0 && c.getHeight() > 0)) return;
      c.setOption(opt, { notMerge: true, lazyUpdate: true });
      el.dataset.points = String(points);
    },
    dispose,
    hasData: () => points > 0,
  };
}

/** The interfaces' capture and drop counters with a packet-rate sparkline each. */
export function interfacesTable(): { el: HTMLElement; update(s: import("./stream").Sample): void } {
  const hist = new Map<string, { last: number; rates: number[] }>();
  const el = h("table", { class: "tbl" });
  return {
    el,
    update(s) {
      const rows = s.engine.interfaces.map((i) => {
        const e = hist.get(i.name) ?? { last: i.packets, rates: [] };
        e.rates.push(Math.max(0, i.packets - e.last));
        if (e.rates.length > 60) e.rates.shift();
        e.last = i.packets;
        hist.set(i.name, e);
        return h(
          "tr",
          null,
          h("td", null, i.name, h("div", { class: "muted small" }, i.mode)),
          h("td", null, sparkline(e.rates)),
          h("td", { class: "num" }, si(e.rates[e.rates.length - 1] ?? 0, "pkt/s")),
          h("td", { class: "num" }, num(i.packets)),
          h("td", { class: "num" }, bytes(i.bytes)),
          h("td", { class: `num ${i.worker_drops + i.kernel_drops ? "bad" : ""}` }, num(i.worker_drops + i.kernel_drops)),
        );
      });
      el.replaceChildren(
        h("thead", null, h("tr", null, h("th", null, "interface"), h("th", null, "last 60 s"), h("th", null, "rate"), h("th", null, "packets"), h("th", null, "bytes"), h("th", null, "drops"))),
        h("tbody", null, ...rows),
      );
      el.dataset.points = String(rows.length);
    },
  };
}
