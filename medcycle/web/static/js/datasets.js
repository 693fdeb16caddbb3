// A dataset version page: class balance per split as stacked bars (plotly.js), from the page's
// <script type="application/json" id="balance-data"> block; nothing inline runs.
(function () {
  "use strict";
  var PALETTE = ["#0f6e7a", "#c08a2c", "#5b6fb0", "#2e9a62", "#8a5a9e", "#c4574f", "#4f8fa8", "#7a8b3a",
    "#b06b8f", "#9aa7b0"];

  function draw() {
    var target = document.getElementById("chart-balance");
    var source = document.getElementById("balance-data");
    if (!target || !source || typeof window.Plotly === "undefined") {
      return;
    }
    var data = JSON.parse(source.textContent);
    var traces = data.classes.map(function (c, i) {
      return {
        type: "bar",
        name: c.name,
        x: data.splits,
        y: c.counts,
        marker: { color: c.name === "(unlabeled)" ? "#c9d3d9" : PALETTE[i % PALETTE.length] },
        hovertemplate: "%{x}: %{y} images " + c.name + "<extra></extra>"
      };
    });
    var layout = {
      barmode: "stack",
      bargap: 0.45,
      showlegend: true,
      margin: { l: 48, r: 16, t: 8, b: 32 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { family: "system-ui, sans-serif", size: 12, color: "#1c2b36" },
      legend: { orientation: "h", y: -0.2 },
      xaxis: { type: "category" },
      yaxis: { title: { text: "images" }, rangemode: "tozero", gridcolor: "#eaf0f3" }
    };
    window.Plotly.newPlot(target, traces, layout, { displaylogo: false, responsive: true, displayModeBar: false });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
