/**
 * The script of the /stats page, served as /stats/stats.js so the page's CSP needs no
 * 'unsafe-inline'. Plain browser JavaScript (ES2017, no modules, no build step): it reads the
 * stats endpoints of the same origin and draws them with Chart.js (window.Chart). Text from
 * the server goes into the page with textContent only.
 */
export const STATS_PAGE_SCRIPT = String.raw`"use strict";
(function () {
  var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  var palette = dark
    ? { text: "#e6e9ef", grid: "#3a4150", green: "#81c995", orange: "#fdd663", blue: "#8ab4f8", red: "#f28b82" }
    : { text: "#1d2330", grid: "#d7dce5", green: "#188038", orange: "#e37400", blue: "#1a73e8", red: "#c5221f" };
  var lineColors = [palette.blue, palette.green, palette.orange, palette.red, "#a142f4", "#12b5cb", "#f538a0", "#9aa0a6"];

  function $(id) { return document.getElementById(id); }
  function text(id, value) { $(id).textContent = String(value); }
  function day(label) { return String(label).replace(/Z$/, ""); }
  function sum(list) { return list.reduce(function (a, b) { return a + b; }, 0); }
  function percent(part, whole) { return whole > 0 ? Math.round((part / whole) * 100) + " %" : "–"; }

  function get(path) {
    return fetch(path, { headers: { accept: "application/json" } }).then(function (res) {
      if (!res.ok) {
        return res.json().catch(function () { return {}; }).then(function (body) {
          throw new Error(path + ": " + (body && body.detail ? body.detail : "HTTP " + res.status));
        });
      }
      return res.json();
    });
  }

  function chart(id, config) {
    config.options = config.options || {};
    config.options.maintainAspectRatio = false;
    config.options.animation = false;
    return new window.Chart($(id), config);
  }

  function ranking(id, rows, label, color) {
    return chart(id, {
      type: "bar",
      data: {
        labels: rows.map(function (r) { return r.name; }),
        datasets: [{ label: label, data: rows.map(function (r) { return r.count; }), backgroundColor: color, maxBarThickness: 28 }],
      },
      options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
  }

  function render(summary, perDay, byVersion, packages, targets, errors) {
    text("queue-length", summary.queue_length);
    text("builds-running", summary.builds_running);
    text("active-workers", summary.active_workers);
    text("builds-24h", summary.builds_24h);
    text("failures-24h", summary.failures_24h);
    text("cache-hit-rate-today", percent(summary.cache_hits_today, summary.requests_today));

    var series = {};
    perDay.datasets.forEach(function (d) { series[d.label] = d.data; });
    text("cache-hit-rate", percent(sum(series["Cache-Hits"] || []), sum(series.Requests || [])));
    var colors = { Requests: palette.green, "Cache-Hits": palette.orange, Successes: palette.blue, Failures: palette.red };
    chart("builds-per-day", {
      type: "bar",
      data: {
        labels: perDay.labels.map(day),
        datasets: perDay.datasets.map(function (d) {
          var builds = d.label === "Successes" || d.label === "Failures";
          return {
            type: builds ? "bar" : "line",
            label: d.label,
            data: d.data,
            stack: builds ? "builds" : d.label,
            backgroundColor: colors[d.label],
            borderColor: colors[d.label],
            order: builds ? 2 : 1,
          };
        }),
      },
      options: { scales: { x: { stacked: true }, y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });

    chart("builds-by-version", {
      type: "line",
      data: {
        labels: byVersion.labels.map(day),
        datasets: byVersion.datasets.map(function (d, i) {
          var color = lineColors[i % lineColors.length];
          return { label: d.label, data: d.data, borderColor: color, backgroundColor: color };
        }),
      },
      options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });

    ranking("top-packages", packages.packages, "Builds", palette.blue);
    ranking("top-targets", targets.targets, "Builds", palette.green);

    var body = $("build-errors");
    body.textContent = "";
    if (errors.errors.length === 0) {
      var empty = body.insertRow();
      var cell = empty.insertCell();
      cell.colSpan = 5;
      cell.className = "muted";
      cell.textContent = "No failed builds recorded.";
    }
    errors.errors.forEach(function (e) {
      var row = body.insertRow();
      [e.time.replace("T", " ").replace(/\.\d+Z$/, ""), e.version, e.target, e.profile, e.detail].forEach(function (v, i) {
        var c = row.insertCell();
        c.textContent = v;
        if (i === 4) c.className = "detail";
      });
    });
  }

  function start() {
    window.Chart.defaults.color = palette.text;
    window.Chart.defaults.borderColor = palette.grid;
    Promise.all([
      get("/api/v1/stats/summary"),
      get("/api/v1/builds-per-day"),
      get("/api/v1/builds-by-version"),
      get("/api/v1/top-packages?limit=15"),
      get("/api/v1/top-targets?limit=15"),
      get("/api/v1/build-errors?n_entries=20"),
    ])
      .then(function (all) {
        render(all[0], all[1], all[2], all[3], all[4], all[5]);
        document.body.setAttribute("data-state", "ready");
      })
      .catch(function (err) {
        var problem = $("problem");
        problem.textContent = "Statistics are unavailable right now: " + err.message + ". Reload the page in a minute.";
        problem.hidden = false;
        document.body.setAttribute("data-state", "failed");
      });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
`;
