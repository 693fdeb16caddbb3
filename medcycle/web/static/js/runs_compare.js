// The compare page: one chart per metric with a line per run, parallel coordinates over the differing
// params and final metrics, and the "only those that differ" switch of the params table.
// Data comes from <script type="application/json" id="compare-data">; nothing inline runs.
(function () {
  "use strict";
  var charts = window.MedcycleRunCharts;

  function drawCurves(data) {
    document.querySelectorAll("[data-curve]").forEach(function (target) {
      var curve = data.curves[Number(target.dataset.curve)];
      if (!curve) { return; }
      var traces = curve.series.map(function (series) {
        var run = data.runs[series.run];
        return charts.trace(series, { name: run.name, color: run.color });
      });
      charts.plot(target, traces, {
        showlegend: true,
        legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" },
        margin: { l: 56, r: 16, t: 32, b: 40 },
        xaxis: { gridcolor: "#eaf0f3", automargin: true, title: { text: "step" } }
      });
    });
  }

  function drawParcoords(data) {
    var target = document.getElementById("parcoords");
    var dims = data.parcoords.dimensions;
    if (!target || !dims.length || typeof window.Plotly === "undefined") { return; }
    var colorBy = dims.filter(function (d) { return d.metric; })[0];
    var runs = data.runs.map(function (_, i) { return i; });
    var dimensions = dims.map(function (d) {
      var out = { label: d.label, values: d.values.map(function (v) { return v === null ? NaN : v; }) };
      if (d.tickvals) { out.tickvals = d.tickvals; out.ticktext = d.ticktext; }
      if (d.range) { out.range = d.range; }
      return out;
    });
    var line = colorBy ? {
      color: colorBy.values.map(function (v) { return v === null ? NaN : v; }),
      colorscale: [[0, "#c4574f"], [0.5, "#c08a2c"], [1, "#0f6e7a"]],
      showscale: true,
      colorbar: { title: { text: colorBy.label }, thickness: 12 }
    } : { color: runs, colorscale: [[0, "#0f6e7a"], [1, "#c08a2c"]] };
    window.Plotly.newPlot(target, [{ type: "parcoords", line: line, dimensions: dimensions }],
      charts.layout({ margin: { l: 64, r: 64, t: 48, b: 24 }, hovermode: false }),
      { displaylogo: false, responsive: true, displayModeBar: false });
  }

  function wireOnlyDiffering() {
    document.querySelectorAll("input[data-table]").forEach(function (box) {
      var table = document.getElementById(box.dataset.table);
      if (!table) { return; }
      box.addEventListener("change", function () { table.classList.toggle("only-differing", box.checked); });
    });
  }

  function start() {
    var data = charts.readJson("compare-data");
    wireOnlyDiffering();
    if (!data) { return; }
    drawCurves(data);
    drawParcoords(data);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
