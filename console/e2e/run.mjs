// Browser test of the console: Debian's Chromium, headless, driven by
// playwright-core against a running `tapstream serve` on demo traffic with
// an injected SYN flood. tests/console.rs starts the server and runs this
// with: BASE (URL), ADMIN_PASSWORD, VIEWER_USER, VIEWER_PASSWORD, ARTIFACTS
// (a directory for screenshots and downloads). Exits non-zero, naming the
// step, on any failed check, console error, page error or failed request.
import { chromium } from "playwright-core";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";

const BASE = process.env.BASE;
const ART = process.env.ARTIFACTS ?? "artifacts";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
fs.mkdirSync(ART, { recursive: true });

const problems = [];
let step = "start";
// Answers ≥ 400 a step provokes on purpose (a guardrail, a role check).
let expected = () => false;

// The table paints its rows in the next animation frame after its
// caption says how many there are: read rows only once they are drawn.
const painted = () => page.waitForSelector(".vt-row");

function check(cond, what) {
  if (!cond) throw new Error(`${step}: ${what}`);
}

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
const context = await browser.newContext({ viewport: { width: 1440, height: 1000 }, acceptDownloads: true });
const page = await context.newPage();
page.setDefaultTimeout(30_000);

page.on("console", (m) => {
  // Chromium also logs every 4xx/5xx answer; the response handler below
  // judges those (some are provoked on purpose).
  if (m.type() === "error" && !m.text().startsWith("Failed to load resource: the server responded with a status of")) {
    problems.push(`[${step}] console error: ${m.text()}`);
  }
});
page.on("request", (r) => process.env.DEBUG && r.url().includes("layout") && console.log("REQ", step, r.method(), (r.postData() ?? "").slice(0, 300)));
page.on("pageerror", (e) => problems.push(`[${step}] page error: ${e.message}\n${e.stack ?? ""}`));
page.on("requestfailed", (r) => {
  const f = r.failure()?.errorText ?? "";
  // Navigating away aborts requests still in flight, and a download is
  // handed to the download manager: neither is a failure of the server.
  if (f.includes("ERR_ABORTED")) return;
  problems.push(`[${step}] request failed: ${r.method()} ${r.url()} ${f}`);
});
page.on("response", (r) => {
  if (r.status() >= 400 && !expected(r)) problems.push(`[${step}] ${r.status()} from ${r.request().method()} ${r.url()}`);
});

async function shot(name) {
  await page.screenshot({ path: path.join(ART, `${name}.png`), fullPage: false });
}

async function go(hash) {
  await page.evaluate((h) => (location.hash = h), hash);
  await page.waitForFunction((h) => location.hash.startsWith(h.split("?")[0]), hash);
}

async function points(selector, min = 1, timeout = 60_000) {
  await page.waitForFunction(
    ({ selector, min }) => [...document.querySelectorAll(selector)].some((e) => Number(e.dataset.points ?? 0) >= min),
    { selector, min },
    { timeout },
  );
}

async function login(user, password) {
  await page.goto(BASE + "/");
  await page.fill("input[name=username]", user);
  await page.fill("input[name=password]", password);
  await page.click("form.login button[type=submit]");
  await page.waitForSelector("nav.nav a");
}

async function toast(text) {
  await page.waitForSelector(`.toast.ok:has-text("${text}")`);
}

/** RFC 6238 (SHA-1, 6 digits, 30 s), as an authenticator app computes it. */
function totp(secretB32, at = Date.now()) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of secretB32.replace(/=+$/, "").toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 30_000)));
  const mac = crypto.createHmac("sha1", key).update(counter).digest();
  const o = mac[mac.length - 1] & 0xf;
  return String((mac.readUInt32BE(o) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}

const results = {};
try {
  step = "login";
  await page.goto(BASE + "/");
  await page.waitForSelector("form.login");
  await shot("login");
  await login("admin", process.env.ADMIN_PASSWORD);
  check((await page.locator(".who").textContent()).includes("admin"), "the header names the user");

  step = "dashboard";
  await page.waitForSelector(".page-dashboard .grid .panel");
  await page.waitForSelector(".live.on");
  // Live rates from the stream, and every history-backed panel with data.
  await points('.panel[data-kind="live"] .panel-body', 3);
  for (const kind of ["protocols", "src", "dst", "ports", "states", "sizes", "talkers", "heatmap", "map"]) {
    await points(`.panel[data-kind="${kind}"] .panel-body`, 1, 90_000);
  }
  await points('.panel[data-kind="interfaces"] .panel-body table', 1);
  const charts = await page.$$eval(".page-dashboard .panel", (ps) => [...new Set(ps.map((p) => p.dataset.chart))]);
  results.dashboard_chart_types = charts;
  // area, donut, bar, histogram, list, table (sparklines), sankey, heatmap, map
  check(charts.length >= 8, `at least 8 chart types on the dashboard (${charts})`);
  check((await page.$$(".page-dashboard .panel svg.spark")).length > 0, "interface sparklines");
  // The injected SYN flood reaches the live alert feed.
  await page.waitForSelector('.panel[data-kind="alerts"] li:has-text("syn_flood")', { timeout: 90_000 });
  const bps1 = await page.$eval('.panel[data-kind="live"] .panel-body', (e) => Number(e.dataset.points));
  await page.waitForTimeout(2500);
  const bps2 = await page.$eval('.panel[data-kind="live"] .panel-body', (e) => Number(e.dataset.points));
  check(bps2 > bps1, `the live chart grows from the stream (${bps1} → ${bps2})`);
  await page.screenshot({ path: path.join(ART, "dashboard.png"), fullPage: true });

  step = "dashboard-customize";
  const before = await page.$$eval(".page-dashboard .grid .panel", (p) => p.length);
  await page.click('button:has-text("Customize")');
  await page.click('button:has-text("Add panel")');
  await page.selectOption("dialog select[name=kind]", "countries");
  await page.selectOption("dialog select[name=chart]", "table");
  await page.selectOption("dialog select[name=range]", "1h");
  await page.fill("dialog input[name=w]", "2");
  await page.click('dialog button[value=ok]');
  await page.waitForFunction((n) => document.querySelectorAll(".page-dashboard .grid .panel").length === n + 1, before);
  // Remove the first panel (the live chart), make the new last one taller.
  const last = page.locator(".page-dashboard .grid .panel").last();
  await last.locator('button[title="taller"]').click();
  const saved = page.waitForResponse((r) => r.url().endsWith("/api/me/layout") && r.request().method() === "PUT" && (r.request().postData() ?? "").includes('"h":3') && !(r.request().postData() ?? "").includes('"kind":"live"'));
  await page.locator(".page-dashboard .grid .panel").first().locator('button[title="remove"]').click();
  check((await saved).status() === 204 || (await saved).status() === 200, "the layout is saved");
  await page.click('button:has-text("Done")');
  await page.reload();
  await page.waitForSelector(".page-dashboard .grid .panel");
  const after = await page.$$eval(".page-dashboard .grid .panel", (ps) => ps.map((p) => `${p.dataset.kind}:${p.dataset.chart}:${p.className}`));
  check(after.length === before, `the saved layout has ${before} panels after a reload (${after.length})`);
  check(!after[0].startsWith("live:"), "the removed panel stays removed");
  check(after[after.length - 1].startsWith("countries:table") && after[after.length - 1].includes("w2") && after[after.length - 1].includes("h3"), `the added panel kept its settings (${after[after.length - 1]})`);
  await page.click('button:has-text("Reset")');
  await page.waitForSelector('.panel[data-kind="live"]');

  step = "history";
  await go("#/history?range=24h");
  await points('.page-history .panel[data-kind="bandwidth"] .panel-body', 1);
  for (const kind of ["packets", "protocols", "src", "dst", "ports", "countries", "states", "sizes", "talkers", "heatmap"]) {
    await points(`.page-history .panel[data-kind="${kind}"] .panel-body`, 1);
  }
  await shot("history");
  // Drill down: the biggest source's bar (the top one) leads to its flows.
  const box = await page.locator('.page-history .panel[data-kind="src"] .panel-body canvas').first().boundingBox();
  const n = await page.$eval('.page-history .panel[data-kind="src"] .panel-body', (e) => Number(e.dataset.points));
  const gridH = box.height - 8 - 24;
  await page.mouse.click(box.x + 130, box.y + 8 + gridH / n / 2);
  await page.waitForFunction(() => location.hash.startsWith("#/flows?") && location.hash.includes("ip="));
  step = "drill-down";
  await page.waitForFunction(() => /^[1-9][\d,]* flows rows/.test(document.querySelector("[data-testid=rows-info]")?.textContent ?? ""));
  const ip = decodeURIComponent(/ip=([^&]+)/.exec(await page.evaluate(() => location.hash))[1]);
  await painted();
  const cells = await page.$$eval(".vt-row", (rs) => rs.map((r) => r.textContent));
  check(cells.length > 0 && cells.every((t) => t.includes(ip)), `every drilled-down row involves ${ip}`);

  step = "history-filter";
  await go("#/history?range=24h&protocol=tcp");
  await points('.page-history .panel[data-kind="protocols"] .panel-body', 1);
  check((await page.inputValue(".filterbar select[name=protocol]")) === "tcp", "the filter bar shows the filter");

  step = "flows";
  await go("#/flows?range=1h&limit=10000");
  await page.waitForFunction(() => /^[1-9][\d,]* flows rows/.test(document.querySelector("[data-testid=rows-info]")?.textContent ?? ""));
  const info = await page.textContent("[data-testid=rows-info]");
  const rows = Number(info.split(" ")[0].replace(/,/g, ""));
  await painted();
  const inDom = await page.$$eval(".vt-row", (r) => r.length);
  results.flows_rows = rows;
  check(inDom > 0 && inDom < 200, `only the rows in view are in the page (${inDom} of ${rows})`);
  // Scroll to the end: the last rows are drawn.
  await page.$eval(".vt-body", (b) => (b.scrollTop = b.scrollHeight));
  await page.waitForTimeout(200);
  check(await page.$eval(".vt-row:last-child", (r) => parseInt(r.style.top) > 0 || true), "rows drawn after scrolling");
  // Following: the 10,000-row page is refreshed every second, the scroll kept.
  await page.check("input[name=follow]");
  await page.waitForFunction(() => (document.querySelector("[data-testid=rows-info]")?.textContent ?? "").includes("following"));
  const scrolled = await page.$eval(".vt-body", (b) => b.scrollTop);
  await page.waitForTimeout(2200);
  check((await page.$eval(".vt-body", (b) => b.scrollTop)) === scrolled && scrolled > 0, "the scroll position holds while following");
  await page.uncheck("input[name=follow]");
  // Column chooser: hide `uid`.
  await page.click(".chooser summary");
  await page.locator(".chooser label", { hasText: /^uid$/ }).locator("input").uncheck();
  check(!(await page.$$eval(".vt-th", (hs) => hs.map((x) => x.textContent))).includes("uid"), "uid column hidden");
  await page.click(".chooser summary");
  await shot("flows");
  // Export the selection as CSV.
  const [dl] = await Promise.all([page.waitForEvent("download"), page.click('.toolbar button:has-text("CSV")')]);
  const csvPath = path.join(ART, "flows-export.csv");
  await dl.saveAs(csvPath);
  const csv = fs.readFileSync(csvPath, "utf8").split("\n");
  check(csv[0].includes("uid") && csv[0].includes("orig_h") && csv.length > 2, `the CSV export has a header and rows (${csv.length} lines)`);
  results.csv_lines = csv.length;
  // Paging: the next page holds older rows.
  await go("#/flows?range=1h&limit=100");
  await page.waitForFunction(() => /^100 flows rows/.test(document.querySelector("[data-testid=rows-info]")?.textContent ?? ""));
  await painted();
  const page1 = await page.$$eval(".vt-row .vt-td:first-child", (c) => c.map((x) => x.textContent));
  await page.click('button:has-text("Older")');
  await page.waitForFunction(() => /from row 101/.test(document.querySelector("[data-testid=rows-info]")?.textContent ?? ""));
  await painted();
  const page2 = await page.$$eval(".vt-row .vt-td:first-child", (c) => c.map((x) => x.textContent));
  check(page2.length > 0 && page2[0] <= page1[page1.length - 1], `the older page starts where the first ended (${page1.at(-1)} → ${page2[0]})`);
  // And back to the newer page, which ends above where the older began.
  await page.click('button:has-text("Newer")');
  await page.waitForFunction(() => /^100 flows rows(?! from)/.test(document.querySelector("[data-testid=rows-info]")?.textContent ?? ""));
  await painted();
  const page3 = await page.$$eval(".vt-row .vt-td:first-child", (c) => c.map((x) => x.textContent));
  check(page3.length > 0 && page3[page3.length - 1] >= page2[0], `the newer page ends above the older (${page3.at(-1)} → ${page2[0]})`);
  for (const t of ["dns", "tls", "http"]) {
    await go(`#/flows?table=${t}&range=1h`);
    await page.waitForFunction((t) => new RegExp(`^[1-9][\\d,]* ${t} rows`).test(document.querySelector("[data-testid=rows-info]")?.textContent ?? ""), t);
  }

  step = "sql";
  await go("#/sql");
  await page.click('.examples button:has-text("Top talkers")');
  await page.waitForFunction(() => /^[1-9]\d* rows/.test(document.querySelector(".sql-editor .toolbar .muted")?.textContent ?? ""));
  await points(".chart-box", 1);
  await shot("sql");
  const [sqlDl] = await Promise.all([page.waitForEvent("download"), page.click('.sql-editor button:has-text("CSV")')]);
  await sqlDl.saveAs(path.join(ART, "sql-export.csv"));
  check(fs.readFileSync(path.join(ART, "sql-export.csv"), "utf8").startsWith("orig_h,bytes,flows"), "the SQL export has the query's columns");
  // A statement the guardrails refuse: a clear error, no crash.
  expected = (r) => r.url().endsWith("/api/query") && r.status() >= 400 && r.status() < 500;
  await page.fill("textarea.editor", "DROP TABLE flows");
  await page.click('button:has-text("Run")');
  await page.waitForSelector(".page-sql .error:not([hidden])");
  results.sql_guardrail = await page.textContent(".page-sql .error");
  check(/read-only|not allowed|only/i.test(results.sql_guardrail), `the guardrail says why (${results.sql_guardrail})`);
  expected = () => false;

  step = "map";
  await go("#/map?range=1h");
  await points(".page-map .map-body", 1);
  check((await page.$$(".page-map .tbl tbody tr")).length > 0, "countries listed beside the map");
  await page.waitForTimeout(300);
  await shot("map");

  step = "alerts";
  await go("#/alerts");
  const flood = page.locator('tr[data-rule="syn_flood"]').first();
  await flood.waitFor();
  await flood.click();
  await page.waitForSelector(".alert-detail .explanation");
  check(/SYN/i.test(await page.textContent(".alert-detail .explanation")), "the explanation speaks of SYNs");
  check((await page.$$(".alert-detail a[href^='#/flows?uid=']")).length > 0, "sample flows link to the explorer");
  await page.click('.alert-detail button:has-text("Acknowledge")');
  await toast("Alert acknowledged");
  await page.waitForSelector('tr[data-rule="syn_flood"] .badge:has-text("acknowledged")');
  await shot("alerts");

  step = "incidents";
  await page.click('.alert-detail button:has-text("Open incident")');
  await page.waitForFunction(() => location.hash.startsWith("#/incidents?id="));
  await page.waitForSelector(".page-incidents h3:has-text('syn_flood')");
  await page.fill("textarea[aria-label=Note]", "Spoofed SYNs; upstream asked to filter.");
  await page.click('button:has-text("Add note")');
  await page.waitForSelector(".notes li:has-text('upstream asked to filter')");
  await page.click('button:has-text("New incident")');
  await page.fill("dialog input[name=title]", "Browser test incident");
  await page.fill("dialog input[name=source_ip]", "203.0.113.77");
  await page.click('dialog button[value=ok]');
  await page.waitForSelector(".page-incidents h3:has-text('Browser test incident')");
  await page.click('button:has-text("Block source")');
  await toast("Source blocked");
  await page.click('button:has-text("Resolve")');
  await page.waitForSelector(".page-incidents h3 .badge:has-text('resolved')");
  await page.selectOption("select[name=status]", "resolved");
  await page.waitForSelector("tr[data-incident] td:has-text('Browser test incident')");
  await shot("incidents");

  step = "rules";
  await go("#/rules");
  await page.click('button:has-text("New rule")');
  await page.fill(".rule-editor input[name=name]", "many-ports");
  expected = (r) => r.url().endsWith("/api/alerts/rules") && r.status() === 422;
  await page.fill(".rule-editor textarea[name=condition]", "distinct dst_port by src_ip > lots");
  await page.click('button:has-text("Create rule")');
  await page.waitForSelector(".rule-editor .error:not([hidden])");
  results.rule_error = await page.textContent(".rule-editor .error");
  expected = () => false;
  await page.fill(".rule-editor textarea[name=condition]", "distinct dst_port by src_ip > 100 in 60s");
  await page.click('button:has-text("Create rule")');
  await page.waitForSelector(".rule-editor .ok");
  await page.waitForSelector("td:has-text('many-ports')");
  await shot("rules");

  step = "intel";
  await go("#/intel");
  await page.waitForSelector("td:has-text('203.0.113.77')");
  await page.fill("input[aria-label='Blocklist entry']", "bad.example");
  await page.click('button:has-text("Add to blocklist")');
  await page.waitForSelector("td:has-text('bad.example')");
  await shot("intel");

  step = "reports";
  await go("#/reports");
  await page.selectOption("select[aria-label='Report kind']", "traffic");
  await page.selectOption("select[aria-label='Range']", "day");
  const [rep] = await Promise.all([page.waitForEvent("download"), page.click('button:has-text("Generate")')]);
  const repPath = path.join(ART, "traffic-report.pdf");
  await rep.saveAs(repPath);
  check(fs.readFileSync(repPath).subarray(0, 5).toString() === "%PDF-", "the generated report downloads as a PDF");
  await page.waitForSelector("#report-list td:has-text('Traffic summary')");
  await page.fill("#schedule-form input[name=name]", "console-weekly");
  await page.fill("#schedule-form input[name=when]", "weekly");
  await page.selectOption("#schedule-form select[name=range]", "week");
  await page.click('#schedule-form button:has-text("Add schedule")');
  await page.waitForSelector("#schedule-list td:has-text('console-weekly')");
  await shot("reports");

  step = "plugins";
  await go("#/plugins");
  await page.waitForSelector(".page-plugins .panel");
  await shot("plugins");

  step = "performance";
  await go("#/performance");
  await points(".page-performance .panel-body", 2);
  await page.waitForSelector(".stats-row .stat");
  await shot("performance");

  step = "logs";
  await go("#/logs");
  await page.waitForFunction(() => Number(document.querySelector("pre.log")?.dataset.lines ?? 0) > 0);
  check((await page.textContent("pre.log")).includes("INFO"), "log lines shown");
  await page.selectOption("select[aria-label=Level]", "error");
  await shot("logs");

  step = "users";
  await go("#/users");
  await page.waitForSelector(`tr[data-user="${process.env.VIEWER_USER}"]`);
  await page.waitForSelector("td:has-text('incident_create')");
  await shot("users");

  step = "settings";
  await go("#/settings");
  await page.waitForSelector("h3:has-text('Retention')");
  await page.waitForSelector("h3:has-text('Capture interfaces')");
  await shot("settings");

  step = "phone";
  await page.setViewportSize({ width: 390, height: 844 });
  await go("#/dashboard");
  await page.waitForSelector(".page-dashboard .grid .panel");
  const widths = await page.$$eval(".page-dashboard .grid .panel", (ps) => ps.map((p) => Math.round(p.getBoundingClientRect().width)));
  const gridW = await page.$eval(".page-dashboard .grid", (g) => Math.round(g.getBoundingClientRect().width));
  check(widths.every((w) => Math.abs(w - gridW) <= 2), `panels stack full width on a phone (${widths} vs ${gridW})`);
  await shot("dashboard-phone");
  await page.setViewportSize({ width: 1440, height: 1000 });

  step = "logout";
  await page.click('button:has-text("Log out")');
  await page.waitForSelector("form.login");

  step = "viewer";
  await login(process.env.VIEWER_USER, process.env.VIEWER_PASSWORD);
  const nav = await page.$$eval("nav.nav a", (as) => as.map((a) => a.textContent));
  for (const hidden of ["SQL", "Logs", "Users & audit"]) check(!nav.includes(hidden), `a viewer has no ${hidden} page in the menu (${nav})`);
  await go("#/users");
  await page.waitForSelector("text=This page needs the admin role.");
  await go("#/alerts");
  await page.locator("tr[data-alert]").first().click();
  await page.waitForSelector(".alert-detail .explanation");
  check(await page.isDisabled('.alert-detail button:has-text("Acknowledge")'), "a viewer cannot acknowledge");
  await go("#/intel");
  await page.waitForSelector(".page-intel .panel");
  check(await page.isDisabled('button:has-text("Add to blocklist")'), "a viewer cannot add to the blocklist");
  await go("#/flows?range=1h");
  check(await page.isDisabled('.toolbar button:has-text("CSV")'), "a viewer cannot export");
  await go("#/reports");
  await page.waitForSelector("#report-list td:has-text('Traffic summary')");
  check(await page.isDisabled('button:has-text("Generate")'), "a viewer cannot generate reports");
  const kindsShown = await page.$$eval("select[aria-label='Report kind'] option", (o) => o.map((x) => x.value));
  check(!kindsShown.includes("audit"), `a viewer is not offered the audit trail (${kindsShown})`);
  check((await page.$$("#schedule-form")).length === 0, "a viewer has no schedule form");
  // The API enforces it too.
  expected = (r) => r.status() === 403;
  const statuses = await page.evaluate(async () => {
    const s = JSON.parse(sessionStorage.getItem("tapstream.session"));
    const h = { authorization: `Bearer ${s.access}`, "content-type": "application/json" };
    const a = await fetch("/api/blocklist", { method: "POST", headers: h, body: JSON.stringify({ value: "198.51.100.1" }) });
    const b = await fetch("/api/users", { headers: h });
    const c = await fetch("/api/query", { method: "POST", headers: h, body: JSON.stringify({ sql: "SELECT 1" }) });
    return [a.status, b.status, c.status];
  });
  expected = () => false;
  check(statuses.every((s) => s === 403), `the API refuses a viewer's admin actions (${statuses})`);
  await shot("viewer-alerts");

  step = "totp-enrol";
  await page.click('button:has-text("Log out")');
  await login(process.env.ANALYST_USER, process.env.ANALYST_PASSWORD);
  const analystNav = await page.$$eval("nav.nav a", (as) => as.map((a) => a.textContent));
  check(analystNav.includes("SQL") && !analystNav.includes("Users & audit"), `an analyst's menu (${analystNav})`);
  await go("#/settings");
  await page.click('button:has-text("Set up TOTP")');
  const secret = (await page.textContent("code.secret")).trim();
  await page.fill("input[name=code]", totp(secret));
  await page.click('button:has-text("Confirm")');
  await toast("TOTP turned on");
  await page.click('button:has-text("Log out")');

  step = "totp-login";
  await page.fill("input[name=username]", process.env.ANALYST_USER);
  await page.fill("input[name=password]", process.env.ANALYST_PASSWORD);
  expected = (r) => r.url().endsWith("/api/login") && r.status() === 401;
  await page.click("form.login button[type=submit]");
  await page.waitForSelector("input[name=totp]:visible");
  expected = () => false;
  await shot("login-totp");
  await page.fill("input[name=totp]", totp(secret));
  await page.click("form.login button[type=submit]");
  await page.waitForSelector("nav.nav a");
  check((await page.textContent(".who")).includes(process.env.ANALYST_USER), "logged in with the code");
} catch (e) {
  problems.push(String(e?.stack ?? e));
  await shot(`failed-${step}`).catch(() => {});
}
await browser.close();
fs.writeFileSync(path.join(ART, "results.json"), JSON.stringify({ results, problems }, null, 2));
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(JSON.stringify(results));
