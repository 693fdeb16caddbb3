// The agreement dashboard: reader x reader heatmaps and the histogram of agreement per item (plotly.js).
// Data comes from <script type="application/json" id="agreement-data">; nothing inline runs.
(function () {
  "use strict";
  var INK = "#1c2b36";
  var CONFIG = { displaylogo: false, responsive: true, displayModeBar: false };
  // Red (disagreement) through pale yellow to green (agreement); kappa may go below 0.
  var SCALE = [[0, "#c4574f"], [0.5, "#f7f1c8"], [1, "#2e9a62"]];

  function layout(extra) {
    var base = {
      margin: { l: 80, r: 16, t: 8, b: 64 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { family: "system-ui, sans-serif", size: 12, color: INK }
    };
    Object.keys(extra).forEach(function (key) { base[key] = extra[key]; });
    return base;
  }

  function heatmap(target, m) {
    var text = m.values.map(function (row, i) {
      return row.map(function (v, j) {
        return (v === null ? "n/a" : v.toFixed(2)) + "<br>n=" + m.shared[i][j];
      });
    });
    var flat = [].concat.apply([], m.values).filter(function (v) { return v !== null; });
    var low = Math.min.apply(null, flat.concat([0]));
    window.Plotly.newPlot(target, [{
      type: "heatmap",
      x: m.readers,
      y: m.readers,
      z: m.values,
      text: text,
      texttemplate: "%{text}",
      hovertemplate: "%{y} × %{x}: %{text}<extra>" + m.metric + "</extra>",
      zmin: low,
      zmax: 1,
      colorscale: SCALE,
      hoverongaps: false,
      xgap: 2,
      ygap: 2
    }], layout({ yaxis: { autorange: "reversed", type: "category" }, xaxis: { type: "category" } }), CONFIG);
  }

  function histogram(target, values) {
    window.Plotly.newPlot(target, [{
      type: "histogram",
      x: values,
      xbins: { start: 0, end: 1.05, size: 0.05 },
      marker: { color: "#0f6e7a" },
      hovertemplate: "%{x}: %{y} items<extra></extra>"
    }], layout({
      margin: { l: 48, r: 16, t: 8, b: 40 },
      bargap: 0.05,
      xaxis: { title: { text: "agreement" }, range: [0, 1.05] },
      yaxis: { title: { text: "items" }, gridcolor: "#eaf0f3" }
    }), CONFIG);
  }

  // One line per reader over the periods of their scorecards; gaps where a period has no value.
  var PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];

  function lines(target, cards, key, title, range) {
    var readers = Object.keys(cards).filter(function (r) {
      return cards[r][key].some(function (v) { return v !== null; });
    });
    if (!readers.length) {
      target.textContent = "No values yet.";
      target.classList.add("empty");
      return;
    }
    window.Plotly.newPlot(target, readers.map(function (r, i) {
      return {
        type: "scatter",
        mode: "lines+markers",
        name: r,
        x: cards[r].x,
        y: cards[r][key],
        line: { color: PALETTE[i % PALETTE.length] },
        connectgaps: false
      };
    }), layout({
      margin: { l: 48, r: 16, t: 8, b: 40 },
      showlegend: true,
      legend: { orientation: "h", y: -0.25 },
      xaxis: { type: "date", tickformat: "%Y-%m", dtick: "M1" },
      yaxis: { title: { text: title }, gridcolor: "#eaf0f3", range: range, rangemode: "tozero" }
    }), CONFIG);
  }

  function draw() {
    var source = document.getElementById("agreement-data");
    if (!source || typeof window.Plotly === "undefined") { return; }
    var data = JSON.parse(source.textContent);
    data.matrices.forEach(function (m, i) {
      var target = document.getElementById("matrix-" + i);
      if (target) { heatmap(target, m); }
    });
    var items = document.getElementById("chart-items");
    if (items && data.items.length) { histogram(items, data.items); }
    var seconds = document.getElementById("chart-seconds");
    if (seconds) { lines(seconds, data.scorecards, "seconds", "seconds", null); }
    var sensitivity = document.getElementById("chart-sensitivity");
    if (sensitivity) { lines(sensitivity, data.scorecards, "sensitivity", "sensitivity", [0, 1.02]); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
