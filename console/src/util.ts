// Small DOM and formatting helpers shared by every page.

type Child = Node | string | number | null | undefined | false | Child[];
type Attrs = Record<string, unknown> & { class?: string; style?: string };

/** Build an element: h("button", {class: "x", onclick: f}, "text", child…). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs | null = null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") {
        el.addEventListener(k.slice(2), v as EventListener);
      } else if (k === "style") {
        el.style.cssText = String(v);
      } else if (k === "value" && "value" in el) {
        (el as HTMLInputElement).value = String(v);
      } else if (k === "checked" || k === "disabled" || k === "selected") {
        (el as unknown as Record<string, boolean>)[k] = Boolean(v);
      } else if (v === true) {
        el.setAttribute(k, "");
      } else {
        el.setAttribute(k, String(v));
      }
    }
  }
  append(el, children);
  return el;
}

export function append(el: Element, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

const UNITS = ["", "k", "M", "G", "T", "P"];

/** 1234567 → "1.23 M" (SI). */
export function si(n: number, unit = ""): string {
  if (!isFinite(n)) return "–";
  let i = 0;
  let v = Math.abs(n);
  while (v >= 1000 && i < UNITS.length - 1) {
    v /= 1000;
    i++;
  }
  const s = v >= 100 || Number.isInteger(v) ? v.toFixed(0) : v.toFixed(v >= 10 ? 1 : 2);
  return `${n < 0 ? "-" : ""}${s}${i || unit ? " " : ""}${UNITS[i]}${unit}`;
}

export const bytes = (n: number) => si(n, "B");
export const bits = (n: number) => si(n, "bit/s");
export const pps = (n: number) => si(n, "pkt/s");
export const num = (n: number) => (isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–");

export function time(ts: string | number | null | undefined): string {
  if (ts === null || ts === undefined || ts === "") return "";
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  if (isNaN(d.getTime())) return String(ts);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace("Z", "");
}

/** "2026-11-30T10:00" (for datetime-local inputs) ↔ RFC 3339. */
export function localInput(d: Date): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

export function ago(seconds: number): string {
  return new Date(Date.now() - seconds * 1000).toISOString();
}

/** Render any cell value as text. */
export function cell(v: unknown): string {
  if (v === null || v === undefined) return "";
  if (Array.isArray(v)) return v.map(cell).join(", ");
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export function debounce<A extends unknown[]>(f: (...a: A) => void, ms: number): (...a: A) => void {
  let t: number | undefined;
  return (...a: A) => {
    clearTimeout(t);
    t = window.setTimeout(() => f(...a), ms);
  };
}

/** A small inline SVG sparkline. */
export function sparkline(values: number[], w = 90, hgt = 20): SVGSVGElement {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", String(hgt));
  svg.setAttribute("class", "spark");
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) => `${((i / Math.max(1, values.length - 1)) * w).toFixed(1)},${(hgt - 1 - (v / max) * (hgt - 2)).toFixed(1)}`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.append(line);
  return svg;
}

export function severityClass(s: string): string {
  return `sev sev-${s}`;
}

/** A pill showing a severity or status. */
export function badge(text: string, kind = text): HTMLElement {
  return h("span", { class: `badge b-${kind}` }, text);
}
