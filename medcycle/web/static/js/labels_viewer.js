// The labels viewer: slice slider and window preset (the server renders each slice as a PNG), layer
// toggles on the review page, box drawing on a canvas over the image, and the time spent on the item.
// Everything it needs is in data- attributes of #lv; the forms work without it (class labels only).
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  var root = document.getElementById("lv");
  if (!root) { return; }
  var img = document.getElementById("lv-image");
  var canvas = document.getElementById("lv-canvas");
  var slider = document.getElementById("lv-slice");
  var sliceLabel = document.getElementById("lv-slice-label");
  var preset = document.getElementById("lv-preset");
  var slices = Number(root.dataset.slices) || 1;
  var state = {
    slice: Number(root.dataset.slice) || 0,
    preset: preset ? preset.value : "auto",
    layers: root.dataset.layers || ""
  };
  var timer = null;

  // -- the image ----------------------------------------------------------------------------------------
  function imageUrl() {
    var params = new URLSearchParams({ slice: String(state.slice), preset: state.preset, size: root.dataset.size });
    if (state.layers) { params.set("layers", state.layers); }
    return root.dataset.src + "?" + params.toString();
  }

  function load() {
    var next = imageUrl();
    if (img.getAttribute("src") === next) { return; }
    root.classList.add("lv-loading");
    img.setAttribute("src", next);
  }

  function later() {
    window.clearTimeout(timer);
    timer = window.setTimeout(load, 60);
  }

  function loaded() {
    root.classList.remove("lv-loading");
    root.dataset.loaded = img.getAttribute("src");
    fitCanvas();
  }
  img.addEventListener("load", loaded);

  if (slider) {
    slider.addEventListener("input", function () {
      state.slice = Number(slider.value);
      if (sliceLabel) { sliceLabel.textContent = (state.slice + 1) + " / " + slices; }
      draw();
      later();
    });
  }
  if (preset) {
    preset.addEventListener("change", function () { state.preset = preset.value; load(); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("input[data-layer]"), function (box) {
    box.addEventListener("change", function () {
      state.layers = Array.prototype.filter.call(document.querySelectorAll("input[data-layer]"), function (b) {
        return b.checked;
      }).map(function (b) { return b.dataset.layer; }).join(",");
      load();
    });
  });

  // -- boxes --------------------------------------------------------------------------------------------
  var field = document.getElementById("lv-boxes");
  var list = document.getElementById("lv-box-list");
  var boxClass = document.getElementById("lv-box-class");
  var drawing = Boolean(field && list && boxClass);
  var boxes = [];
  var color = "#e6194b";
  var drag = null;
  if (drawing) {
    try { boxes = JSON.parse(field.value || "[]"); } catch (e) { boxes = []; }
    var holder = list.closest("[data-color]");
    if (holder) { color = holder.dataset.color; }
    root.classList.add("lv-drawing");
  }

  function native() {
    var w = Number(root.dataset.width) || img.naturalWidth;
    var h = Number(root.dataset.height) || img.naturalHeight;
    return { w: w, h: h };
  }

  function fitCanvas() {
    canvas.width = img.clientWidth;
    canvas.height = img.clientHeight;
    draw();
  }

  function toImage(event) {
    var rect = canvas.getBoundingClientRect();
    var n = native();
    var x = Math.min(Math.max(event.clientX - rect.left, 0), rect.width) * n.w / rect.width;
    var y = Math.min(Math.max(event.clientY - rect.top, 0), rect.height) * n.h / rect.height;
    return { x: Math.round(x * 10) / 10, y: Math.round(y * 10) / 10 };
  }

  function onSlice(z) { return z === null || z === undefined || z === state.slice; }

  function draw() {
    if (!drawing) { return; }
    var ctx = canvas.getContext("2d");
    var n = native();
    var sx = canvas.width / (n.w || 1);
    var sy = canvas.height / (n.h || 1);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.lineWidth = 2;
    ctx.font = "12px system-ui, sans-serif";
    var shown = boxes.slice();
    if (drag && drag.to) { shown.push({ label: boxClass.value, box: rect(drag.from, drag.to), z: currentZ() }); }
    shown.forEach(function (b) {
      if (!onSlice(b.z)) { return; }
      ctx.strokeStyle = color;
      ctx.strokeRect(b.box[0] * sx, b.box[1] * sy, (b.box[2] - b.box[0]) * sx, (b.box[3] - b.box[1]) * sy);
      ctx.fillStyle = color;
      ctx.fillText(b.label, b.box[0] * sx + 3, Math.max(12, b.box[1] * sy - 3));
    });
  }

  function rect(a, b) {
    return [Math.min(a.x, b.x), Math.min(a.y, b.y), Math.max(a.x, b.x), Math.max(a.y, b.y)];
  }

  function currentZ() { return slices > 1 ? state.slice : null; }

  function renderList() {
    list.textContent = "";
    boxes.forEach(function (b, i) {
      var item = document.createElement("li");
      var text = b.label + " [" + b.box.map(function (v) { return Math.round(v); }).join(", ") + "]";
      if (b.z !== null && b.z !== undefined) { text += " on slice " + (b.z + 1); }
      item.appendChild(document.createTextNode(text + " "));
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "button button-quiet";
      remove.textContent = "Remove";
      remove.addEventListener("click", function () { boxes.splice(i, 1); renderList(); draw(); });
      item.appendChild(remove);
      list.appendChild(item);
    });
    field.value = JSON.stringify(boxes);
  }

  if (drawing) {
    canvas.addEventListener("pointerdown", function (event) {
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      drag = { from: toImage(event), to: null };
    });
    canvas.addEventListener("pointermove", function (event) {
      if (!drag) { return; }
      drag.to = toImage(event);
      draw();
    });
    canvas.addEventListener("pointerup", function (event) {
      if (!drag) { return; }
      var to = toImage(event);
      var box = rect(drag.from, to);
      drag = null;
      if (box[2] - box[0] >= 1 && box[3] - box[1] >= 1) {
        boxes.push({ label: boxClass.value, box: box, z: currentZ() });
        renderList();
      }
      draw();
    });
    renderList();
  }
  window.addEventListener("resize", fitCanvas);
  if (img.complete && img.naturalWidth) { loaded(); }  // the first image may arrive before this script runs

  // -- time on the item ---------------------------------------------------------------------------------
  var seconds = document.getElementById("lv-seconds");
  var clock = document.getElementById("lv-clock");
  var spent = 0;
  var since = document.hidden ? null : performance.now();

  function elapsed() { return (spent + (since === null ? 0 : performance.now() - since)) / 1000; }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden && since !== null) { spent += performance.now() - since; since = null; }
    else if (!document.hidden && since === null) { since = performance.now(); }
  });
  if (clock) {
    window.setInterval(function () { clock.textContent = Math.floor(elapsed()) + " s"; }, 1000);
  }

  Array.prototype.forEach.call(document.querySelectorAll("form.lv-form"), function (form) {
    form.addEventListener("submit", function () {
      var own = form.querySelector("input[name=seconds]");
      if (own) { own.value = elapsed().toFixed(1); }
      var ownBoxes = form.querySelector("input[name=boxes]");
      if (ownBoxes && drawing) { ownBoxes.value = JSON.stringify(boxes); }
      Array.prototype.forEach.call(form.querySelectorAll("button[type=submit]"), function (b) {
        window.setTimeout(function () { b.disabled = true; }, 0);  // after the clicked button's value is sent
      });
    });
  });
  if (seconds && !seconds.value) { seconds.value = ""; }
})();
