// The world map: traffic by country (GeoIP), hover for packets and IPs,
// countries named in threat alerts outlined in red.
import { get } from "../api";
import { countryName } from "../charts";
import { filterBar, fromHash, resolve, toQuery } from "../filter";
import type { Alert } from "../stream";
import { type Page, panel, errorBox } from "../ui";
import { bytes, h, num } from "../util";
import { traffic, view } from "../views";
import { clean } from "./history";

export async function mapPage(pg: Page): Promise<void> {
  const { filter, range } = fromHash();
  if (!range.preset) range.preset = "1h";
  const err = errorBox();
  const body = h("div", { class: "panel-body map-body" });
  const side = h("div", { class: "panel-body" });
  const drill = (q: Record<string, string>) => (location.hash = `#/flows?${new URLSearchParams({ ...clean(toQuery(filter, range)), ...q })}`);
  pg.root.append(
    h("div", { class: "page-head" }, h("h2", null, "World map")),
    filterBar(filter, range, ["15m", "1h", "24h", "7d", "30d"], (f, r) => (location.hash = `#/map?${new URLSearchParams(clean(toQuery(f, r)))}`)),
    err,
    h("div", { class: "grid" }, Object.assign(panel("Traffic by country", body), { className: "panel w3 h4" }), Object.assign(panel("Countries", side), { className: "panel w1 h4" })),
  );
  const v = view(body, "map", "map", drill);
  pg.onLeave(v.dispose);
  const { from, to } = resolve(range);
  try {
    const [t, threatsList] = await Promise.all([traffic(from, to, "country", filter, 100), get<Alert[]>("/api/threats?limit=1000")]);
    const threats = new Map<string, number>();
    for (const a of threatsList) for (const c of (a.countries as string[]) ?? []) threats.set(c, (threats.get(c) ?? 0) + 1);
    v.update(t, { threats });
    side.append(
      h(
        "table",
        { class: "tbl" },
        h("thead", null, h("tr", null, h("th", null, "country"), h("th", null, "packets"), h("th", null, "bytes"), h("th", null, "IPs"))),
        h(
          "tbody",
          null,
          ...t.top.filter((x) => x.key !== "??").map((x) =>
            h("tr", { class: `link ${threats.has(x.key) ? "threat" : ""}`, onclick: () => drill({ country: x.key }) }, h("td", null, `${countryName(x.key)} (${x.key})`), h("td", { class: "num" }, num(x.packets)), h("td", { class: "num" }, bytes(x.bytes)), h("td", { class: "num" }, num(x.hosts ?? 0))),
          ),
        ),
      ),
    );
  } catch (e) {
    err.show(e);
  }
}
