// One run's page: metric charts by step, resource charts over time, and the step slider of each logged
// image. Data comes from <script type="application/json" id="run-data">; nothing inline runs.
(function () {
  "use strict";
  var charts = window.MedcycleRunCharts;

  function drawCharts(data) {
    document.querySelectorAll("[data-chart]").forEach(function (target) {
      var kind = target.dataset.chart;
      var series = (data.charts[kind] || [])[Number(target.dataset.index)];
      if (!series) { return; }
      var time = kind === "system";
      charts.plot(target, [charts.trace(series, { time: time, color: charts.PALETTE[time ? 2 : 0] })], {
        xaxis: { gridcolor: "#eaf0f3", automargin: true, title: { text: time ? "" : "step" },
          type: time ? "date" : "linear" }
      });
    });
  }

  function wireSliders(images) {
    document.querySelectorAll("figure[data-image-key]").forEach(function (figure) {
      var entries = images[figure.dataset.imageKey];
      var slider = figure.querySelector("input[type=range]");
      if (!entries || !slider) { return; }
      var img = figure.querySelector("img");
      var label = figure.querySelector(".step-value");
      var panels = figure.querySelector(".image-panels");
      slider.addEventListener("input", function () {
        var entry = entries[Number(slider.value)];
        if (!entry) { return; }
        img.src = entry.src;
        img.alt = figure.dataset.imageKey + " at step " + entry.step + ": " + entry.panels.join(", ");
        if (entry.width) { img.width = entry.width; img.height = entry.height; }
        label.textContent = entry.step === null ? "—" : String(entry.step);
        panels.textContent = entry.panels.join(" · ");
      });
    });
  }

  // The first page of output is its end: show the newest lines.
  function scrollLogToEnd() {
    var log = document.querySelector("pre.log[data-tail]");
    if (log) { log.scrollTop = log.scrollHeight; }
  }

  function start() {
    charts.autoSubmit();
    scrollLogToEnd();
    var data = charts.readJson("run-data");
    if (!data) { return; }
    drawCharts(data);
    wireSliders(data.images || {});
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
