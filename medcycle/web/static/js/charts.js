// Draws the overview's "jobs per state per queue" chart with plotly.js (served from the plotly package).
(function () {
  "use strict";
  var COLORS = {
    queued: "#5b6fb0",
    running: "#0f6e7a",
    succeeded: "#2e9a62",
    failed: "#c4574f",
    dead: "#7d2420",
    cancelled: "#9aa7b0"
  };

  function draw() {
    var target = document.getElementById("queue-chart");
    var source = document.getElementById("queue-chart-data");
    if (!target || !source || typeof window.Plotly === "undefined") {
      return;
    }
    var data = JSON.parse(source.textContent);
    var traces = data.series.map(function (s) {
      return {
        type: "bar",
        name: s.state,
        x: data.queues,
        y: s.counts,
        marker: { color: COLORS[s.state] || "#888888" },
        hovertemplate: "%{x}: %{y} " + s.state + "<extra></extra>"
      };
    });
    var most = Math.max.apply(null, data.queues.map(function (_, i) {
      return data.series.reduce(function (sum, s) { return sum + s.counts[i]; }, 0);
    }).concat([1]));
    var layout = {
      barmode: "stack",
      bargap: 0.55,
      showlegend: true,
      margin: { l: 48, r: 16, t: 8, b: 40 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { family: "system-ui, sans-serif", size: 12, color: "#1c2b36" },
      legend: { orientation: "h", y: -0.18 },
      yaxis: {
        title: { text: "jobs" },
        rangemode: "tozero",
        gridcolor: "#eaf0f3",
        dtick: most <= 10 ? 1 : null
      },
      xaxis: { type: "category" }
    };
    window.Plotly.newPlot(target, traces, layout, { displaylogo: false, responsive: true, displayModeBar: false });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
