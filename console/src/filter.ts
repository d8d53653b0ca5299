// The search/filter bar shared by history, explorer and exports: IP, CIDR,
// port, protocol, country, text in DNS/TLS/HTTP, and a time range.
import { h, localInput } from "./util";

export interface Filter {
  ip?: string;
  cidr?: string;
  port?: string;
  protocol?: string;
  country?: string;
  text?: string;
}

export interface Range {
  preset: string; // 1h, 24h, 7d, 30d, custom
  from?: string;
  to?: string;
}

export const PRESETS: Record<string, number> = { "15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };

/** The range as RFC 3339 `from`/`to`. */
export function resolve(r: Range): { from: string; to: string } {
  if (r.preset === "custom" && r.from && r.to) return { from: new Date(r.from).toISOString(), to: new Date(r.to).toISOString() };
  const secs = PRESETS[r.preset] ?? 3600;
  const to = new Date();
  return { from: new Date(to.getTime() - secs * 1000).toISOString(), to: to.toISOString() };
}

const FIELDS: [keyof Filter, string, string][] = [
  ["ip", "IP", "10.0.0.5"],
  ["cidr", "CIDR", "10.0.0.0/8"],
  ["port", "Port", "443"],
  ["country", "Country", "US"],
  ["text", "DNS/TLS/HTTP text", "example.com"],
];

/** Filter and range from the location hash's query (#/page?ip=…&range=7d). */
export function fromHash(): { filter: Filter; range: Range; params: URLSearchParams } {
  const q = new URLSearchParams(location.hash.split("?")[1] ?? "");
  const filter: Filter = {};
  for (const k of ["ip", "cidr", "port", "protocol", "country", "text"] as (keyof Filter)[]) {
    const v = q.get(k);
    if (v) filter[k] = v;
  }
  const range: Range = { preset: q.get("range") ?? "", from: q.get("from") ?? undefined, to: q.get("to") ?? undefined };
  if (range.from && range.to && !range.preset) range.preset = "custom";
  return { filter, range, params: q };
}

export function toQuery(f: Filter, r: Range): Record<string, string | undefined> {
  const q: Record<string, string | undefined> = { ...f };
  if (r.preset === "custom") {
    q.from = r.from;
    q.to = r.to;
    q.range = "custom";
  } else q.range = r.preset;
  return q;
}

/** The bar: calls `onApply` with the new filter and range. */
export function filterBar(
  filter: Filter,
  range: Range,
  presets: string[],
  onApply: (f: Filter, r: Range) => void,
): HTMLElement {
  const inputs = new Map<keyof Filter, HTMLInputElement | HTMLSelectElement>();
  const fields = FIELDS.map(([k, label, ph]) => {
    const i = h("input", { name: k, placeholder: ph, value: filter[k] ?? "", "aria-label": label, size: k === "text" ? 18 : 11 });
    inputs.set(k, i);
    return h("label", { class: "field" }, h("span", null, label), i);
  });
  const proto = h(
    "select",
    { name: "protocol", "aria-label": "Protocol" },
    ...["", "tcp", "udp", "icmp"].map((p) => h("option", { value: p, selected: filter.protocol === p }, p || "any")),
  );
  inputs.set("protocol", proto);
  const pre = h(
    "select",
    { name: "range", "aria-label": "Time range" },
    ...[...presets, "custom"].map((p) => h("option", { value: p, selected: range.preset === p }, p === "custom" ? "custom…" : `last ${p}`)),
  );
  const now = new Date();
  const from = h("input", { type: "datetime-local", name: "from", value: range.from ? localInput(new Date(range.from)) : localInput(new Date(now.getTime() - 86400_000)) });
  const to = h("input", { type: "datetime-local", name: "to", value: range.to ? localInput(new Date(range.to)) : localInput(now) });
  const custom = h("span", { class: "custom", hidden: range.preset !== "custom" }, from, "–", to);
  pre.addEventListener("change", () => (custom.hidden = pre.value !== "custom"));
  const apply = (e?: Event) => {
    e?.preventDefault();
    const f: Filter = {};
    for (const [k, i] of inputs) if (i.value.trim()) f[k] = i.value.trim();
    const r: Range = pre.value === "custom" ? { preset: "custom", from: new Date(from.value).toISOString(), to: new Date(to.value).toISOString() } : { preset: pre.value };
    onApply(f, r);
  };
  return h(
    "form",
    { class: "filterbar", onsubmit: apply },
    fields,
    h("label", { class: "field" }, h("span", null, "Protocol"), proto),
    h("label", { class: "field" }, h("span", null, "Range"), pre),
    custom,
    h("button", { class: "btn primary", type: "submit" }, "Apply"),
    h(
      "button",
      {
        class: "btn",
        type: "button",
        onclick: () => {
          inputs.forEach((i) => (i.value = ""));
          apply();
        },
      },
      "Clear",
    ),
  );
}
