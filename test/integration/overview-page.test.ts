import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { escapeHtml, renderOverviewPage } from "../../src/http/overview-page.js";
import { VERSION } from "../../src/shared/version.js";
import {
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
  console.warn(`overview-page: skipping the browser test, ${CHROMIUM} is missing (apt-get install chromium)`);
}

let mirror: Mirror;
let api: TestServer;
let browser: Browser | undefined;

beforeAll(async () => {
  mirror = await startMirror();
  api = await startTestServer(mirror, { role: "api" });
});

afterAll(async () => {
  await browser?.close();
  await api?.close();
  if (api) await flushPrefix(api.prefix);
  await mirror?.close();
});

describe("GET /", () => {
  it("serves a self-contained HTML page", async () => {
    const res = await request(api.url, "GET", "/?1696506154265");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/html/);
    expect(res.headers.get("content-security-policy")).toContain("default-src 'none'");
    expect(res.text).toContain(VERSION);
    expect(res.text).toContain('href="/docs"');
    expect(res.text).toContain('href="/openapi.json"');
    // no scripts, no external resources
    expect(res.text).not.toMatch(/<script|<link|src=/i);
  });

  it("escapes everything it renders", () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe("&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    const html = renderOverviewPage({
      server: {
        version: "<b>1</b>",
        allow_defaults: true,
        repository_allow_list: ['https://x.example/"><script>alert(1)</script>'],
        max_custom_rootfs_size_mb: 1024,
        max_defaults_length: 100,
      },
      upstreamUrl: 'https://up.example/"onmouseover="x',
      maxPendingJobs: 5,
      branches: [
        {
          name: "<i>b</i>",
          enabled: true,
          snapshot: false,
          path: "releases/{version}",
          path_packages: "releases/{version}/packages",
          versions: ["<v>"],
          targets: { "a/b": "c" },
          package_changes: [],
        },
      ],
      latest: ["<v>"],
    });
    expect(html).not.toContain("<script>");
    expect(html).not.toContain("<b>1</b>");
    expect(html).not.toContain("<i>b</i>");
    expect(html).not.toContain('"onmouseover="');
    expect(html).toContain("&lt;i&gt;b&lt;/i&gt;");
  });

  it.skipIf(!hasChromium)(
    "renders in headless Chromium without console errors and shows version and branches",
    async () => {
      browser = await chromium.launch({
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
      const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
      const problems: string[] = [];
      page.on("console", (msg) => {
        if (msg.type() === "error") problems.push(msg.text());
      });
      page.on("pageerror", (err) => problems.push(err.message));
      const outside: string[] = [];
      page.on("request", (req) => {
        if (!req.url().startsWith(api.url)) outside.push(req.url());
      });

      const response = await page.goto(`${api.url}/`, { waitUntil: "load" });
      expect(response?.status()).toBe(200);
      await expect.poll(() => page.locator("#server-version").textContent()).toBe(VERSION);
      expect(await page.locator("h1").isVisible()).toBe(true);
      const text = await page.locator("main").innerText();
      expect(text).toContain("24.10");
      expect(text).toContain("24.10.4");
      expect(text).toContain("SNAPSHOT");
      expect(text).toContain("23.05.4");
      // 23.05 publishes ath79/generic, x86/64 and ramips/mt7621
      const row2305 = page.locator("tr", { hasText: "23.05.4" });
      expect(await row2305.locator("td.num").innerText()).toBe("3");
      expect(await page.locator('a[href="/docs"]').isVisible()).toBe(true);
      expect(await page.locator('a[href="/openapi.json"]').isVisible()).toBe(true);
      expect(text).toMatch(/1024 MB/);

      await mkdir(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: path.join(ARTIFACTS, "overview.png"), fullPage: true });
      expect(existsSync(path.join(ARTIFACTS, "overview.png"))).toBe(true);
      expect(problems).toEqual([]);
      expect(outside).toEqual([]);
    },
    60_000,
  );
});
