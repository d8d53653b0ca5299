// Console measurements for benches/console.rs (not a test): the dashboard's
// first paint and time to data over repeated loads, and scrolling a
// 10,000-row table refreshed once a second, ours (virtualised) against a
// plain HTML table rebuilt at each refresh, in the same browser and run.
// Env: BASE, USER, PASSWORD, LOADS (default 10), SECS (default 10).
import { chromium } from "playwright-core";

const BASE = process.env.BASE;
const LOADS = Number(process.env.LOADS ?? 10);
const SECS = Number(process.env.SECS ?? 10);
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
const page = await (await browser.newContext({ viewport: { width: 1440, height: 1000 } })).newPage();

const q = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
};

await page.goto(BASE + "/");
await page.fill("input[name=username]", process.env.USER);
await page.fill("input[name=password]", process.env.PASSWORD);
await page.click("form.login button[type=submit]");
await page.waitForSelector(".page-dashboard .grid .panel");

// Dashboard loads: the session is kept in sessionStorage, so each reload
// goes straight to the dashboard.
const fcp = [];
const data = [];
for (let i = 0; i < LOADS; i++) {
  await page.reload();
  await page.waitForFunction(() => [...document.querySelectorAll(".page-dashboard .panel-body")].length > 0 && [...document.querySelectorAll(".page-dashboard .panel-body")].filter((e) => !e.closest('[data-kind="alerts"]')).every((e) => Number(e.dataset.points ?? e.querySelector("[data-points]")?.dataset.points ?? 0) > 0), null, { timeout: 60_000 });
  const t = await page.evaluate(() => ({
    fcp: performance.getEntriesByType("paint").find((e) => e.name === "first-contentful-paint")?.startTime ?? NaN,
    data: performance.now(),
  }));
  fcp.push(t.fcp);
  data.push(t.data);
}

// A 10,000-row table refreshed every second while scrolling: frame times.
async function scrollFrames(selector) {
  return page.evaluate(
    async ({ selector, secs }) => {
      const box = document.querySelector(selector);
      const frames = [];
      let last = performance.now();
      const end = last + secs * 1000;
      await new Promise((resolve) => {
        const tick = (now) => {
          frames.push(now - last);
          last = now;
          box.scrollTop = (box.scrollTop + 37) % Math.max(1, box.scrollHeight - box.clientHeight);
          if (now < end) requestAnimationFrame(tick);
          else resolve();
        };
        requestAnimationFrame(tick);
      });
      return frames.slice(1);
    },
    { selector, secs: SECS },
  );
}

await page.evaluate(() => (location.hash = "#/flows?range=1h&limit=10000&follow=1"));
await page.waitForFunction(() => /following/.test(document.querySelector("[data-testid=rows-info]")?.textContent ?? ""), null, { timeout: 60_000 });
const rows = Number((await page.textContent("[data-testid=rows-info]")).split(" ")[0].replace(/,/g, ""));
const ours = await scrollFrames(".vt-body");

// The peer: the same rows (the same API call, once a second) as a plain
// <table> rebuilt at each refresh, as consoles without virtualisation do.
await page.evaluate(async () => {
  location.hash = "#/performance"; // leave the explorer (its refresh stops)
  const s = JSON.parse(sessionStorage.getItem("tapstream.session"));
  const cols = ["ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto", "service", "duration", "orig_bytes", "resp_bytes", "conn_state", "orig_pkts", "resp_pkts", "orig_cc", "resp_cc"];
  const wrap = document.createElement("div");
  wrap.id = "plain";
  wrap.style.cssText = "position:fixed;inset:60px 20px 20px 200px;overflow:auto;background:#121c29;z-index:50";
  document.body.append(wrap);
  const load = async () => {
    const to = new Date().toISOString();
    const from = new Date(Date.now() - 3600e3).toISOString();
    const r = await fetch(`/api/records?limit=10000&from=${from}&to=${to}`, { headers: { authorization: `Bearer ${s.access}` } });
    const b = await r.json();
    const top = wrap.scrollTop;
    const t = document.createElement("table");
    t.innerHTML = `<thead><tr>${cols.map((c) => `<th>${c}</th>`).join("")}</tr></thead><tbody>${b.rows.map((row) => `<tr>${cols.map((c) => `<td>${row[c] ?? ""}</td>`).join("")}</tr>`).join("")}</tbody>`;
    wrap.replaceChildren(t);
    wrap.scrollTop = top;
  };
  await load();
  window.__plain = setInterval(load, 1000);
});
const plain = await scrollFrames("#plain");
await page.evaluate(() => clearInterval(window.__plain));
await browser.close();

const stats = (f) => ({ frames: f.length, p50_ms: +q(f, 0.5).toFixed(1), p99_ms: +q(f, 0.99).toFixed(1), max_ms: +Math.max(...f).toFixed(1), over_50ms: f.filter((x) => x > 50).length });
console.log(
  JSON.stringify(
    {
      loads: LOADS,
      first_contentful_paint_ms: { p50: +q(fcp, 0.5).toFixed(0), max: +Math.max(...fcp).toFixed(0) },
      all_panels_with_data_ms: { p50: +q(data, 0.5).toFixed(0), max: +Math.max(...data).toFixed(0) },
      table_rows: rows,
      scroll_secs: SECS,
      virtualised: stats(ours),
      plain_table: stats(plain),
    },
    null,
    2,
  ),
);
