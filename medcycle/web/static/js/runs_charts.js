// Shared by the run pages: line charts of metric series with plotly.js (served from the plotly package),
// in the UI's colours. Exposes window.MedcycleRunCharts; draws nothing by itself.
(function () {
  "use strict";
  var PALETTE = ["#0f6e7a", "#c08a2c", "#5b6fb0", "#2e9a62", "#8a5a9e", "#c4574f", "#4f8fa8", "#7a8b3a",
    "#b06b8f", "#3d4f86", "#d9822b", "#1c2b36"];
  var INK = "#1c2b36";
  var GRID = "#eaf0f3";
  var CONFIG = { displaylogo: false, responsive: true, displayModeBar: false };

  document.documentElement.classList.add("js");

  function layout(extra) {
    var base = {
      margin: { l: 56, r: 16, t: 8, b: 40 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { family: "system-ui, sans-serif", size: 12, color: INK },
      showlegend: false,
      hovermode: "x unified",
      xaxis: { gridcolor: GRID, zeroline: false, automargin: true },
      yaxis: { gridcolor: GRID, zeroline: false, automargin: true, exponentformat: "e" }
    };
    Object.keys(extra || {}).forEach(function (key) { base[key] = extra[key]; });
    return base;
  }

  // One series {x, y, key, count, downsampled} as a plotly trace; times (UNIX seconds) become dates.
  function trace(series, options) {
    var opts = options || {};
    var x = opts.time ? series.x.map(function (t) { return new Date(t * 1000); }) : series.x;
    return {
      type: "scatter",
      mode: series.x.length > 1 ? "lines" : "markers",
      name: opts.name || series.key,
      x: x,
      y: series.y,
      connectgaps: false,
      line: { color: opts.color || PALETTE[0], width: 1.6 },
      marker: { color: opts.color || PALETTE[0], size: 6 },
      hovertemplate: (opts.name ? opts.name + ": " : "") + "%{y:.4g}<extra></extra>"
    };
  }

  function plot(target, traces, extra) {
    if (!target || typeof window.Plotly === "undefined") { return; }
    window.Plotly.newPlot(target, traces, layout(extra), CONFIG);
  }

  function readJson(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function autoSubmit() {
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  }

  window.MedcycleRunCharts = {
    PALETTE: PALETTE, layout: layout, trace: trace, plot: plot, readJson: readJson, autoSubmit: autoSubmit
  };
})();
