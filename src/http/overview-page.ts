import type { BranchOverview } from "../upstream/catalog.js";
import type { ServerInfo } from "./metadata-routes.js";

export interface OverviewPageData {
  server: ServerInfo;
  upstreamUrl: string;
  maxPendingJobs: number;
  /** Missing when the download server could not be read; `problem` says why. */
  branches?: BranchOverview[];
  latest?: string[];
  problem?: string;
  queueLength?: number;
}

const ENTITIES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Escapes text for HTML element content and double- or single-quoted attributes. */
export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ENTITIES[c] ?? c);
}

const STYLE = `
:root { color-scheme: light dark; --fg: #1d2330; --muted: #5b6475; --line: #d7dce5; --accent: #00618f; --bg: #fff; --card: #f5f7fa; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e9ef; --muted: #9aa3b2; --line: #3a4150; --accent: #6cc4ee; --bg: #161a21; --card: #1f242d; } }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
main { max-width: 60rem; margin: 0 auto; padding: 2rem 1.25rem 3rem; }
h1 { font-size: 1.8rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .75rem; border-bottom: 1px solid var(--line); padding-bottom: .3rem; }
p.lead { color: var(--muted); margin: 0 0 1rem; }
a { color: var(--accent); }
code { font: .9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: .9rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.tag { display: inline-block; font-size: .75rem; padding: 0 .4rem; border-radius: .6rem; background: var(--card); border: 1px solid var(--line); margin-left: .3rem; }
.warn { background: #fff3cd; color: #5c4400; border: 1px solid #e6c65c; padding: .75rem 1rem; border-radius: .4rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1.2rem; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; }
ul.links { padding-left: 1.2rem; }
.muted { color: var(--muted); }
`;

function branchRow(branch: BranchOverview, latest: string[]): string {
  const versions = branch.versions.length
    ? branch.versions
        .map(
          (v) =>
            `<code>${escapeHtml(v)}</code>${latest.includes(v) ? '<span class="tag">latest</span>' : ""}`,
        )
        .join(", ")
    : '<span class="muted">none published</span>';
  const targets = Object.keys(branch.targets).length;
  return `<tr>
<td><strong>${escapeHtml(branch.name)}</strong>${branch.snapshot ? '<span class="tag">snapshot</span>' : ""}</td>
<td>${versions}</td>
<td class="num">${escapeHtml(targets)}</td>
<td><code>${escapeHtml(branch.path)}</code></td>
</tr>`;
}

/** The page at `/`: plain server-rendered HTML, no scripts, no external resources. */
export function renderOverviewPage(data: OverviewPageData): string {
  const { server } = data;
  const branches = data.branches ?? [];
  const latest = data.latest ?? [];
  const allowList = server.repository_allow_list.length
    ? server.repository_allow_list.map((u) => `<code>${escapeHtml(u)}</code>`).join("<br>")
    : "none (only the official feeds)";
  const branchSection = data.branches
    ? branches.length
      ? `<table>
<thead><tr><th>Branch</th><th>Versions</th><th>Targets</th><th>Path</th></tr></thead>
<tbody>
${branches.map((b) => branchRow(b, latest)).join("\n")}
</tbody>
</table>`
      : "<p>No branch is enabled on this server.</p>"
    : `<p class="warn" role="alert">Branch information is unavailable right now: ${escapeHtml(data.problem ?? "the upstream download server could not be read")}</p>`;

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>OpenWrt Attended Sysupgrade server ${escapeHtml(server.version)}</title>
<style>${STYLE}</style>
</head>
<body>
<main>
<h1>OpenWrt Attended Sysupgrade server</h1>
<p class="lead">asu-ts version <strong id="server-version">${escapeHtml(server.version)}</strong> builds OpenWrt firmware images with the packages you choose.
Images come from <a href="${escapeHtml(data.upstreamUrl)}">${escapeHtml(data.upstreamUrl)}</a>.</p>

<h2>Branches</h2>
${latest.length ? `<p>Latest releases: ${latest.map((v) => `<code>${escapeHtml(v)}</code>`).join(", ")}</p>` : ""}
${branchSection}

<h2>Limits</h2>
<dl>
<dt>Custom first-boot script (<code>defaults</code>)</dt><dd>${server.allow_defaults ? `allowed, up to ${escapeHtml(server.max_defaults_length)} bytes` : "not allowed"}</dd>
<dt>Largest custom root filesystem</dt><dd>${escapeHtml(server.max_custom_rootfs_size_mb)} MB</dd>
<dt>Extra repositories allowed</dt><dd>${allowList}</dd>
<dt>Queued builds before new ones are refused</dt><dd>${escapeHtml(data.maxPendingJobs)}</dd>
${data.queueLength !== undefined ? `<dt>Builds waiting now</dt><dd>${escapeHtml(data.queueLength)}</dd>` : ""}
</dl>

<h2>API</h2>
<ul class="links">
<li><a href="/docs">Interactive API documentation</a> (<a href="/openapi.json">OpenAPI document</a>)</li>
<li><a href="/json/v1/overview.json">/json/v1/overview.json</a>: branches, versions, targets and limits as JSON</li>
<li><a href="/stats">Build statistics</a>: builds per day, by version, top packages, recent errors</li>
<li><a href="/api/v1/stats">/api/v1/stats</a>: queue length and build counters</li>
</ul>
</main>
</body>
</html>
`;
}
