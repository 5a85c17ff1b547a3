import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  build,
  flushPrefix,
  request,
  startMirror,
  startTestServer,
  type Mirror,
  type TestServer,
} from "./harness.js";

const CHROMIUM = "/usr/bin/chromium";
const hasChromium = existsSync(CHROMIUM);
const ARTIFACTS = path.resolve(import.meta.dirname, "../../artifacts");

if (!hasChromium) {
  console.warn(`stats-page: skipping the browser test, ${CHROMIUM} is missing (apt-get install chromium)`);
}

let mirror: Mirror;
let server: TestServer;
let worker: TestServer;
let browser: Browser | undefined;

const archer = { target: "ath79/generic", profile: "tplink_archer-c7-v5" };

beforeAll(async () => {
  mirror = await startMirror();
  // An API and a worker as separate servers sharing only Redis (and the local store's folder):
  // the history the worker writes for real builds on the synthetic mirror is what the API shows.
  worker = await startTestServer(mirror, { role: "worker" });
  server = await startTestServer(mirror, { role: "api", prefix: worker.prefix, workDir: worker.workDir });
  const builds = [
    { ...archer, version: "24.10.4", packages: ["tcpdump"] },
    { ...archer, version: "24.10.4", packages: ["tcpdump"] }, // the same request again: a cache hit
    { ...archer, version: "24.10.4", packages: ["tcpdump", "htop"] },
    { ...archer, version: "23.05.4", packages: ["tcpdump"] },
    // dnsmasq-full conflicts with the default dnsmasq: a failed build.
    { ...archer, version: "24.10.4", packages: ["dnsmasq-full"], diff_packages: false },
  ];
  const statuses: number[] = [];
  for (const body of builds) statuses.push((await build(server.url, body)).status);
  expect(statuses).toEqual([200, 200, 200, 200, 500]);
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await worker?.close();
  if (worker) await flushPrefix(worker.prefix);
  await mirror?.close();
});

async function openStats(
  colorScheme: "light" | "dark",
): Promise<{ page: Page; problems: string[]; outside: string[] }> {
  browser ??= await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1200, height: 1000 }, colorScheme });
  const problems: string[] = [];
  // CSP violations and script errors both end up here.
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`${msg.text()} (${msg.location().url})`);
  });
  page.on("pageerror", (err) => problems.push(err.message));
  const outside: string[] = [];
  page.on("request", (req) => {
    if (!req.url().startsWith(server.url)) outside.push(req.url());
  });
  const response = await page.goto(`${server.url}/stats`, { waitUntil: "load" });
  expect(response?.status()).toBe(200);
  await page.waitForSelector("body[data-state]");
  expect(await page.getAttribute("body", "data-state")).toBe("ready");
  return { page, problems, outside };
}

interface ChartSnapshot {
  labels: string[];
  datasets: { label: string; data: number[] }[];
}

// The test's tsconfig has no DOM types: page code is passed as text.
function chartData(page: Page, id: string): Promise<ChartSnapshot> {
  return page.evaluate(`(() => {
    const chart = window.Chart.getChart(${JSON.stringify(id)});
    if (!chart) throw new Error("no chart on #${id}");
    return {
      labels: chart.data.labels.map(String),
      datasets: chart.data.datasets.map((d) => ({ label: d.label, data: d.data.map(Number) })),
    };
  })()`);
}

const series = (chart: ChartSnapshot) => Object.fromEntries(chart.datasets.map((d) => [d.label, d.data]));
const total = (data: number[] | undefined) => (data ?? []).reduce((a, b) => a + b, 0);

describe("GET /stats in a browser", () => {
  it.skipIf(!hasChromium)(
    "draws the charts and tables from real builds, with no console errors and nothing from elsewhere",
    async () => {
      const { page, problems, outside } = await openStats("light");

      expect(await page.locator("#queue-length").innerText()).toBe("0");
      expect(await page.locator("#active-workers").innerText()).toBe("1");
      expect(await page.locator("#builds-24h").innerText()).toBe("4");
      expect(await page.locator("#failures-24h").innerText()).toBe("1");
      // Five requests, one answered from the cache.
      expect(await page.locator("#cache-hit-rate-today").innerText()).toBe("20 %");
      expect(await page.locator("#cache-hit-rate").innerText()).toBe("20 %");

      const perDay = await chartData(page, "builds-per-day");
      expect(perDay.labels).toHaveLength(30);
      expect(perDay.labels.at(-1)).toBe(new Date().toISOString().slice(0, 10));
      const day = series(perDay);
      expect(day.Successes?.at(-1)).toBe(3);
      expect(day.Failures?.at(-1)).toBe(1);
      expect(day.Requests?.at(-1)).toBe(5);
      expect(day["Cache-Hits"]?.at(-1)).toBe(1);
      expect(total(day.Successes)).toBe(3);

      const byVersion = series(await chartData(page, "builds-by-version"));
      expect(Object.keys(byVersion).sort()).toEqual(["23.05", "24.10"]);
      expect(total(byVersion["24.10"])).toBe(3);
      expect(total(byVersion["23.05"])).toBe(1);

      const packages = await chartData(page, "top-packages");
      expect(packages.labels[0]).toBe("tcpdump");
      expect(Object.fromEntries(packages.labels.map((l, i) => [l, packages.datasets[0]?.data[i]]))).toEqual({
        tcpdump: 3,
        htop: 1,
        "dnsmasq-full": 1,
      });
      const targets = await chartData(page, "top-targets");
      expect(targets.labels).toEqual(["ath79/generic"]);
      expect(targets.datasets[0]?.data).toEqual([4]);

      // Every chart actually painted something on its canvas.
      for (const id of ["builds-per-day", "builds-by-version", "top-packages", "top-targets"]) {
        const painted = await page.evaluate<{ opaque: number; width: number }>(`(() => {
          const canvas = document.getElementById(${JSON.stringify(id)});
          const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
          let opaque = 0;
          for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) opaque++;
          return { opaque, width: canvas.width };
        })()`);
        expect(painted.width, id).toBeGreaterThan(100);
        expect(painted.opaque, id).toBeGreaterThan(500);
      }

      const rows = page.locator("#build-errors tr");
      expect(await rows.count()).toBe(1);
      const cells = await rows.first().locator("td").allInnerTexts();
      expect(cells.slice(1, 4)).toEqual(["24.10.4", "ath79/generic", "tplink_archer-c7-v5"]);
      expect(cells[4]).toMatch(/^Error: Impossible package selection/);

      await mkdir(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: path.join(ARTIFACTS, "stats.png"), fullPage: true });
      expect(existsSync(path.join(ARTIFACTS, "stats.png"))).toBe(true);
      expect(problems).toEqual([]);
      expect(outside).toEqual([]);
      await page.close();
    },
    90_000,
  );

  it.skipIf(!hasChromium)(
    "follows prefers-color-scheme: dark",
    async () => {
      const { page, problems } = await openStats("dark");
      const background = await page.evaluate<string>("getComputedStyle(document.body).backgroundColor");
      expect(background).toBe("rgb(22, 26, 33)");
      const chartText = await page.evaluate<string>("window.Chart.defaults.color");
      expect(chartText).toBe("#e6e9ef");
      await page.screenshot({ path: path.join(ARTIFACTS, "stats-dark.png"), fullPage: true });
      expect(problems).toEqual([]);
      await page.close();
    },
    60_000,
  );

  it("shows the failure in /api/v1/build-errors without the request hash", async () => {
    const errors = await request(server.url, "GET", "/api/v1/build-errors");
    expect(errors.body.total).toBe(1);
    expect(errors.text).not.toMatch(/[0-9a-f]{64}/);
  });
});
