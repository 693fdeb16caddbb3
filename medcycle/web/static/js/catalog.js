// The data catalog page: breakdown and distribution charts (plotly.js), the CT window preset of the
// thumbnails, the range sliders of the distribution, and forms that submit on change.
// Data comes from the page's <script type="application/json" id="catalog-data"> block; nothing inline runs.
(function () {
  "use strict";
  var PALETTE = ["#0f6e7a", "#5b6fb0", "#c08a2c", "#2e9a62", "#8a5a9e", "#c4574f", "#4f8fa8", "#7a8b3a",
    "#b06b8f", "#9aa7b0"];
  var INK = "#1c2b36";
  var GRID = "#eaf0f3";
  var CONFIG = { displaylogo: false, responsive: true, displayModeBar: false };
  var NOUN = { instances: "instances", series: "series", bytes: "" };

  document.documentElement.classList.add("js");

  function formatBytes(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? n + " B" : n.toFixed(1) + " " + units[i];
  }

  function formatCount(metric, n) {
    return metric === "bytes" ? formatBytes(n) : n.toLocaleString("en") + " " + NOUN[metric];
  }

  function formatNumber(x) {
    if (x === 0) { return "0"; }
    var a = Math.abs(x);
    return a >= 1e5 || a < 1e-3 ? x.toExponential(2) : String(Number(x.toPrecision(4)));
  }

  function layout(extra) {
    var base = {
      margin: { l: 56, r: 16, t: 8, b: 44 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { family: "system-ui, sans-serif", size: 12, color: INK },
      showlegend: false,
      hoverlabel: { font: { family: "system-ui, sans-serif" } }
    };
    Object.keys(extra).forEach(function (key) { base[key] = extra[key]; });
    return base;
  }

  function plot(id, traces, extra) {
    var target = document.getElementById(id);
    if (!target) { return; }
    window.Plotly.react(target, traces, layout(extra), CONFIG);
  }

  // A value axis for a metric: bytes in SI steps with a B (500MB), counts as they are.
  function axis(metric, extra) {
    var out = { gridcolor: GRID, automargin: true, title: { text: metric, standoff: 8 } };
    if (metric === "bytes") { out.ticksuffix = "B"; out.exponentformat = "SI"; }
    Object.keys(extra).forEach(function (key) { out[key] = extra[key]; });
    return out;
  }

  // -- where the data comes from ----------------------------------------------------------------------
  function drawBreakdown(data, metric) {
    var sun = data.sunburst;
    plot("chart-sources", [{
      type: "sunburst",
      ids: sun.ids,
      labels: sun.labels,
      parents: sun.parents,
      values: sun[metric],
      customdata: sun[metric].map(function (v) { return formatCount(metric, v); }),
      branchvalues: "total",
      maxdepth: 3,
      insidetextorientation: "radial",
      hovertemplate: "<b>%{label}</b><br>%{customdata}<br>%{percentRoot:.1%} of all<extra></extra>",
      marker: { line: { color: "#ffffff", width: 1 } }
    }], { margin: { l: 8, r: 8, t: 8, b: 8 }, sunburstcolorway: PALETTE, extendsunburstcolors: true });

    // Largest at the top: plotly draws the first category at the bottom.
    var man = data.manufacturer;
    var order = man.labels.map(function (_, i) { return i; })
      .sort(function (a, b) { return man[metric][a] - man[metric][b]; });
    plot("chart-manufacturers", [{
      type: "bar",
      orientation: "h",
      y: order.map(function (i) { return man.labels[i]; }),
      x: order.map(function (i) { return man[metric][i]; }),
      customdata: order.map(function (i) { return formatCount(metric, man[metric][i]); }),
      marker: { color: PALETTE[1] },
      hovertemplate: "%{y}: %{customdata}<extra></extra>"
    }], {
      margin: { l: 160, r: 16, t: 8, b: 40 },
      bargap: order.length < 4 ? 0.6 : 0.35,
      xaxis: axis(metric, { rangemode: "tozero" }),
      yaxis: { automargin: true, type: "category" }
    });

    var year = data.year;
    plot("chart-years", [{
      type: "bar",
      x: year.labels,
      y: year[metric],
      customdata: year[metric].map(function (v) { return formatCount(metric, v); }),
      marker: { color: PALETTE[0] },
      hovertemplate: "%{x}: %{customdata}<extra></extra>"
    }], {
      bargap: year.labels.length < 4 ? 0.6 : 0.3,
      xaxis: { type: "category" },
      yaxis: axis(metric, { rangemode: "tozero" })
    });
  }

  // -- distribution of one field ------------------------------------------------------------------------
  function drawDistribution(d) {
    if (!d || d.kind === "empty") { return; }
    var yaxis = { gridcolor: GRID, rangemode: "tozero", title: { text: "instances" } };
    if (d.kind === "histogram") {
      plot("chart-distribution", [{
        type: "bar",
        x: d.x,
        y: d.counts,
        width: d.widths,
        offset: 0,
        customdata: d.x.map(function (x, i) { return formatNumber(x) + " – " + formatNumber(x + d.widths[i]); }),
        marker: { color: PALETTE[0], line: { color: "#ffffff", width: 1 } },
        hovertemplate: "%{customdata}: %{y} instances<extra></extra>"
      }], { xaxis: { title: { text: d.field }, gridcolor: GRID }, yaxis: yaxis, bargap: 0 });
    } else if (d.kind === "values") {
      plot("chart-distribution", [{
        type: "bar",
        x: d.x.map(formatNumber),
        y: d.counts,
        marker: { color: PALETTE[0] },
        hovertemplate: d.field + " %{x}: %{y} instances<extra></extra>"
      }], { xaxis: { title: { text: d.field }, type: "category" }, yaxis: yaxis, bargap: 0.35 });
    } else if (d.kind === "dates") {
      plot("chart-distribution", [{
        type: "histogram",
        x: d.x,
        y: d.counts,
        histfunc: "sum",
        nbinsx: 48,
        marker: { color: PALETTE[0], line: { color: "#ffffff", width: 1 } },
        hovertemplate: "%{x}: %{y} instances<extra></extra>"
      }], { xaxis: { title: { text: d.field }, type: "date" }, yaxis: yaxis, bargap: 0.05 });
    } else {
      var labels = d.x.slice().reverse();
      var counts = d.counts.slice().reverse();
      var target = document.getElementById("chart-distribution");
      if (target) { target.style.height = Math.max(220, 26 * labels.length + 70) + "px"; }
      plot("chart-distribution", [{
        type: "bar",
        orientation: "h",
        y: labels,
        x: counts,
        marker: { color: PALETTE[1] },
        hovertemplate: "%{y}: %{x} instances<extra></extra>"
      }], {
        margin: { l: 160, r: 16, t: 8, b: 44 },
        bargap: labels.length < 4 ? 0.6 : 0.3,
        xaxis: { gridcolor: GRID, rangemode: "tozero", title: { text: "instances" } },
        yaxis: { automargin: true, type: "category" }
      });
    }
  }

  // -- forms ----------------------------------------------------------------------------------------------
  function wireAutoSubmit() {
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  }

  function wireRange() {
    var form = document.querySelector(".range-form");
    if (!form) { return; }
    var min = parseFloat(form.dataset.min);
    var max = parseFloat(form.dataset.max);
    var step = (max - min) / 200;
    var lo = document.getElementById("range-lo");
    var hi = document.getElementById("range-hi");
    var loNum = form.querySelector("input[name=lo]");
    var hiNum = form.querySelector("input[name=hi]");
    [lo, hi].forEach(function (slider) { slider.step = String(step); });
    lo.value = loNum.value;
    hi.value = hiNum.value;
    function fromSlider(event) {
      var a = parseFloat(lo.value);
      var b = parseFloat(hi.value);
      if (a > b) {
        if (event.target === lo) { hi.value = String(a); b = a; } else { lo.value = String(b); a = b; }
      }
      loNum.value = formatNumber(a === min ? min : a);
      hiNum.value = formatNumber(b === max ? max : b);
    }
    function fromNumber() {
      lo.value = loNum.value;
      hi.value = hiNum.value;
    }
    lo.addEventListener("input", fromSlider);
    hi.addEventListener("input", fromSlider);
    loNum.addEventListener("input", fromNumber);
    hiNum.addEventListener("input", fromNumber);
  }

  // Thumbnails load when they come into view, one at a time: each is a full decode on the server and
  // an audited read, and SQLite takes one writer at a time. PARALLEL can grow on PostgreSQL.
  var PARALLEL = 1;
  var queue = [];
  var busy = 0;

  function settle(img, ok) {
    var frame = img.closest(".thumb-frame");
    var note = frame ? frame.querySelector(".thumb-error") : null;
    if (ok && note) { note.remove(); }
    if (!ok && frame && !note) {
      note = document.createElement("span");
      note.className = "thumb-empty thumb-error";
      note.textContent = "could not be shown";
      frame.appendChild(note);
    }
    img.hidden = !ok;
  }

  function pump() {
    while (busy < PARALLEL && queue.length) {
      start(queue.shift());
    }
  }

  function start(img) {
    busy += 1;
    img.dataset.state = "loading";
    function finished(event) {
      img.removeEventListener("load", finished);
      img.removeEventListener("error", finished);
      busy -= 1;
      settle(img, event.type === "load");
      img.dataset.state = "done";
      if (img.getAttribute("src") !== img.dataset.src) { enqueue(img); }  // the preset changed meanwhile
      pump();
    }
    img.addEventListener("load", finished);
    img.addEventListener("error", finished);
    img.src = img.dataset.src;
  }

  function enqueue(img) {
    if (img.dataset.state === "queued" || img.dataset.state === "loading") { return; }
    img.dataset.state = "queued";
    queue.push(img);
    pump();
  }

  function wireImages() {
    var images = Array.prototype.slice.call(document.querySelectorAll(".thumb-frame img[data-src]"));
    if (!images.length) { return; }
    if (!("IntersectionObserver" in window)) { images.forEach(enqueue); return; }
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) {
          observer.unobserve(entry.target);
          enqueue(entry.target);
        }
      });
    }, { rootMargin: "240px 0px" });
    images.forEach(function (img) { observer.observe(img); });
  }

  // The CT window preset: swap the images in place (no reload) and keep links and forms in step.
  function wirePreset() {
    var select = document.querySelector("select[data-preset]");
    if (!select) { return; }
    select.addEventListener("change", function () {
      var preset = select.value;
      document.querySelectorAll("img[data-ct]").forEach(function (img) {
        var url = new URL(img.dataset.src, window.location.href);
        url.searchParams.set("preset", preset);
        img.dataset.src = url.pathname + url.search;
        if (img.dataset.state === "done") { enqueue(img); }
      });
      document.querySelectorAll("a[href^='/ui/data']").forEach(function (link) {
        var url = new URL(link.href, window.location.href);
        if (preset === "auto") { url.searchParams.delete("preset"); } else { url.searchParams.set("preset", preset); }
        link.href = url.pathname + url.search + url.hash;
      });
      document.querySelectorAll("input[type=hidden][name=preset]").forEach(function (input) { input.value = preset; });
      var here = new URL(window.location.href);
      if (preset === "auto") { here.searchParams.delete("preset"); } else { here.searchParams.set("preset", preset); }
      window.history.replaceState(null, "", here.pathname + here.search + here.hash);
    });
  }

  function init() {
    wireAutoSubmit();
    wireRange();
    wirePreset();
    wireImages();
    var source = document.getElementById("catalog-data");
    if (!source || typeof window.Plotly === "undefined") { return; }
    var data = JSON.parse(source.textContent);
    var metric = document.getElementById("breakdown-metric");
    if (document.getElementById("chart-sources")) {
      drawBreakdown(data.breakdown, metric ? metric.value : "instances");
      if (metric) {
        metric.addEventListener("change", function () { drawBreakdown(data.breakdown, metric.value); });
      }
    }
    drawDistribution(data.distribution);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
