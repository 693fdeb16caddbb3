// The monitoring dashboard's charts (plotly.js, through MedcycleRunCharts): requests by outcome, error rate,
// latency, OOD refusals, and each drift signal's statistic over its threshold per window. Data comes from
// <script type="application/json" id="monitoring-data">; nothing inline runs.
(function () {
  "use strict";
  var charts = window.MedcycleRunCharts;
  if (!charts) { return; }
  var OUTCOME_COLOURS = { ok: "#2e9a62", error: "#c4574f", timeout: "#d9822b", refused: "#c08a2c" };

  function line(x, y, name, color, dash) {
    return { type: "scatter", mode: x.length > 1 ? "lines" : "markers", name: name, x: x, y: y,
      connectgaps: false, line: { color: color, width: 1.8, dash: dash || "solid" }, marker: { color: color, size: 6 },
      hovertemplate: name + ": %{y:.4g}<extra></extra>" };
  }

  function dates(values) { return values.map(function (t) { return new Date(t); }); }

  function timeline(target, data, kind) {
    var t = data.timeline;
    var x = dates(t.buckets);
    var legend = { showlegend: true, legend: { orientation: "h", x: 0, y: 1.18 }, margin: { l: 56, r: 16, t: 30, b: 40 },
      xaxis: { type: "date", automargin: true } };
    if (kind === "requests") {
      var bars = Object.keys(t.counts).map(function (outcome) {
        return { type: "bar", name: outcome, x: x, y: t.counts[outcome], marker: { color: OUTCOME_COLOURS[outcome] },
          hovertemplate: outcome + ": %{y}<extra></extra>" };
      });
      legend.barmode = "stack";
      charts.plot(target, bars, legend);
    } else if (kind === "errors") {
      charts.plot(target, [line(x, t.error_rate, "error rate", "#c4574f")],
        { xaxis: { type: "date" }, yaxis: { tickformat: ".0%", rangemode: "tozero" } });
    } else if (kind === "latency") {
      charts.plot(target, [line(x, t.latency_p50_ms, "p50 ms", charts.PALETTE[0]),
        line(x, t.latency_p95_ms, "p95 ms", charts.PALETTE[1])], legend);
    } else if (kind === "ood") {
      charts.plot(target, [line(x, t.ood_rate, "refused", "#c08a2c")],
        { xaxis: { type: "date" }, yaxis: { tickformat: ".0%", rangemode: "tozero" } });
    }
  }

  function drift(target, data) {
    var series = data.drift[target.dataset.version];
    if (!series) { return; }
    var x = dates(series.at);
    var traces = Object.keys(series.signals).map(function (name, i) {
      // a log axis: ratios at or below 0 (an MMD estimate can be negative) are drawn at 0.01
      var y = series.signals[name].map(function (v) { return v === null ? null : Math.max(v, 0.01); });
      return line(x, y, name, charts.PALETTE[i % charts.PALETTE.length]);
    });
    traces.push(line([x[0], x[x.length - 1]], [1, 1], "threshold", "#1c2b36", "dot"));
    if (series.paged.length) {
      traces.push({ type: "scatter", mode: "markers", name: "paged", x: dates(series.paged.map(function (p) { return p.at; })),
        y: series.paged.map(function () { return 1; }), text: series.paged.map(function (p) { return p.signal; }),
        marker: { color: "#c4574f", size: 12, symbol: "triangle-up" }, hovertemplate: "paged: %{text}<extra></extra>" });
    }
    charts.plot(target, traces, { showlegend: true, legend: { orientation: "h", x: 0, y: 1.12 },
      margin: { l: 56, r: 16, t: 30, b: 40 }, xaxis: { type: "date" },
      yaxis: { type: "log", title: { text: "statistic / threshold" } } });
  }

  function start() {
    charts.autoSubmit();
    var data = charts.readJson("monitoring-data");
    if (!data) { return; }
    document.querySelectorAll("[data-mchart]").forEach(function (target) {
      if (target.dataset.mchart === "drift") { drift(target, data); } else { timeline(target, data, target.dataset.mchart); }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
