import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import type { FastifyInstance, FastifyReply } from "fastify";
import { VERSION } from "../shared/version.js";
import { escapeHtml } from "./overview-page.js";
import { STATS_PAGE_SCRIPT } from "./stats-page-script.js";

/**
 * No inline script and nothing from another origin: the page, its script, its style sheet and
 * Chart.js all come from this server; the script reads the JSON endpoints of the same origin.
 */
export const STATS_PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const STATS_PAGE_CSS = `
:root { color-scheme: light dark; --fg: #1d2330; --muted: #5b6475; --line: #d7dce5; --accent: #00618f; --bg: #fff; --card: #f5f7fa; --bad: #b3261e; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e9ef; --muted: #9aa3b2; --line: #3a4150; --accent: #6cc4ee; --bg: #161a21; --card: #1f242d; --bad: #f2b8b5; } }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
main { max-width: 70rem; margin: 0 auto; padding: 2rem 1.25rem 3rem; }
h1 { font-size: 1.8rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .75rem; border-bottom: 1px solid var(--line); padding-bottom: .3rem; }
p.lead, .muted { color: var(--muted); }
a { color: var(--accent); }
code { font: .9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(10rem, 1fr)); gap: .75rem; }
.tile { background: var(--card); border: 1px solid var(--line); border-radius: .5rem; padding: .75rem 1rem; }
.tile .value { font-size: 1.7rem; font-weight: 600; font-variant-numeric: tabular-nums; }
.tile .label { color: var(--muted); font-size: .85rem; }
.chart { position: relative; height: 20rem; }
.chart.tall { height: 26rem; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(22rem, 1fr)); gap: 1.5rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: .9rem; }
td.detail { font: .85rem ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap; word-break: break-word; }
.problem { color: var(--bad); }
`;

/** A bar-chart icon, so browsers do not ask for a /favicon.ico this server does not have. */
const STATS_ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#00618f"/><path d="M3 13V8h2v5zm4 0V4h2v9zm4 0V6h2v7z" fill="#fff"/></svg>`;

function statsPageHtml(): string {
  const tile = (id: string, label: string) =>
    `<div class="tile"><div class="value" id="${id}">–</div><div class="label">${escapeHtml(label)}</div></div>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Statistics: OpenWrt Attended Sysupgrade server ${escapeHtml(VERSION)}</title>
<link rel="icon" href="/stats/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/stats/stats.css">
<script src="/stats/chart.umd.min.js" defer></script>
<script src="/stats/stats.js" defer></script>
</head>
<body>
<main>
<h1>Build statistics</h1>
<p class="lead">What this server built lately. Days are UTC; builds are counted when a worker finishes them, requests and cache hits when the API answers. <a href="/">Back to the overview</a>.</p>
<p id="problem" class="problem" role="alert" hidden></p>

<h2>Now</h2>
<div class="tiles">
${tile("queue-length", "builds waiting")}
${tile("builds-running", "builds running")}
${tile("active-workers", "active workers")}
${tile("builds-24h", "builds in 24 hours")}
${tile("failures-24h", "failed in 24 hours")}
${tile("cache-hit-rate", "cache hits, 30 days")}
${tile("cache-hit-rate-today", "cache hits, today")}
</div>

<h2>Builds per day</h2>
<div class="chart"><canvas id="builds-per-day" aria-label="Requests, cache hits, successful and failed builds per day over 30 days" role="img"></canvas></div>

<h2>Builds by version</h2>
<p class="muted">Per week over 26 weeks, one line per branch.</p>
<div class="chart"><canvas id="builds-by-version" aria-label="Builds per week by branch" role="img"></canvas></div>

<div class="cols">
<section>
<h2>Top packages</h2>
<p class="muted">Asked for in builds of the last 30 days.</p>
<div class="chart tall"><canvas id="top-packages" aria-label="Most requested packages" role="img"></canvas></div>
</section>
<section>
<h2>Top targets</h2>
<p class="muted">Built in the last 30 days.</p>
<div class="chart tall"><canvas id="top-targets" aria-label="Most built targets" role="img"></canvas></div>
</section>
</div>

<h2>Recent errors</h2>
<table>
<thead><tr><th>Time (UTC)</th><th>Version</th><th>Target</th><th>Profile</th><th>Error</th></tr></thead>
<tbody id="build-errors"><tr><td colspan="5" class="muted">Loading…</td></tr></tbody>
</table>
<p class="muted">The same data as JSON: <a href="/api/v1/stats/summary">summary</a>, <a href="/api/v1/builds-per-day">builds per day</a>, <a href="/api/v1/builds-by-version">by version</a>, <a href="/api/v1/top-packages">top packages</a>, <a href="/api/v1/top-targets">top targets</a>, <a href="/api/v1/build-errors">build errors</a>.</p>
</main>
</body>
</html>
`;
}

let chartJs: Promise<Buffer> | undefined;

/** Chart.js's own minified UMD build from node_modules, read once. */
function chartLibrary(): Promise<Buffer> {
  chartJs ??= (async () => {
    // The package's exports map hides dist/; resolve its entry point and take the UMD file beside it.
    const entry = createRequire(import.meta.url).resolve("chart.js");
    return readFile(path.join(path.dirname(entry), "chart.umd.min.js"));
  })();
  chartJs.catch(() => {
    chartJs = undefined;
  });
  return chartJs;
}

function asset(reply: FastifyReply, type: string, body: string | Buffer): FastifyReply {
  return reply
    .type(type)
    .header("Cache-Control", "public, max-age=3600")
    .header("X-Content-Type-Options", "nosniff")
    .send(body);
}

/** `GET /stats` and its three assets. */
export function registerStatsPage(app: FastifyInstance): void {
  const html = statsPageHtml();
  app.get(
    "/stats",
    { schema: { tags: ["stats"], summary: "An HTML page with charts of the build statistics" } },
    async (_request, reply) =>
      reply
        .type("text/html; charset=utf-8")
        .header("Content-Security-Policy", STATS_PAGE_CSP)
        .header("X-Content-Type-Options", "nosniff")
        .send(html),
  );
  app.get("/stats/stats.css", { schema: { hide: true } }, async (_request, reply) =>
    asset(reply, "text/css; charset=utf-8", STATS_PAGE_CSS),
  );
  app.get("/stats/stats.js", { schema: { hide: true } }, async (_request, reply) =>
    asset(reply, "text/javascript; charset=utf-8", STATS_PAGE_SCRIPT),
  );
  app.get("/stats/icon.svg", { schema: { hide: true } }, async (_request, reply) =>
    asset(reply, "image/svg+xml", STATS_ICON_SVG),
  );
  app.get("/stats/chart.umd.min.js", { schema: { hide: true } }, async (_request, reply) =>
    asset(reply, "text/javascript; charset=utf-8", await chartLibrary()),
  );
}
