// Drawing on the labels item page: boxes, polygons and brush/eraser masks on a canvas over the image, in the
// image's own pixels and on the slice shown (labels_viewer.js moves through slices and window presets).
// The configuration (the pixel grid, the classes each tool may draw and their colours) is the JSON in
// #ld-config; what is drawn goes into the form's hidden fields on submit:
//   boxes     [{"label", "box": [x0, y0, x1, y1], "z"}]
//   polygons  [{"label", "points": [[x, y], ...], "z"}]
//   masks     [{"label", "z", "rows", "columns", "counts": [background run, label run, ...]}]  (row-major)
// z is the slice index on a volume and null on a single image. A mask pixel (row j, column i) is painted when
// its centre (i + 0.5, j + 0.5) lies within the brush radius of the stroke.
(function () {
  "use strict";

  var configNode = document.getElementById("ld-config");
  var canvas = document.getElementById("ld-canvas");
  var img = document.getElementById("lv-image");
  var root = document.getElementById("lv");
  var form = document.getElementById("label-form");
  if (!configNode || !canvas || !img || !root || !form) { return; }

  var config = JSON.parse(configNode.textContent);
  var W = Number(config.width) || 0;
  var H = Number(config.height) || 0;
  var SLICES = Number(config.slices) || 1;
  if (W <= 0 || H <= 0) { return; }

  var KIND = { box: "box", polygon: "polygon", brush: "mask", eraser: "mask" };
  var HELP = {
    box: "Drag on the image to draw a box.",
    polygon: "Click to add points; click the first point, double-click or press Enter to close. " +
      "Drag a point to move it; Esc drops an unfinished polygon.",
    brush: "Paint the chosen class; the radius is in image pixels.",
    eraser: "Erase the chosen class's mask on this slice."
  };
  var SNAP = 7;  // display pixels: how near the first point a click closes the polygon, or grabs a vertex
  var MAX_UNDO = 100;

  var slider = document.getElementById("lv-slice");
  var classSelect = document.getElementById("ld-class");
  var radiusInput = document.getElementById("ld-radius");
  var radiusLabel = document.getElementById("ld-radius-label");
  var help = document.getElementById("ld-help");
  var undoButton = document.getElementById("ld-undo");
  var closeButton = document.getElementById("ld-close");
  var fields = {
    boxes: document.getElementById("lv-boxes"),
    polygons: document.getElementById("ld-polygons"),
    masks: document.getElementById("ld-masks")
  };
  var lists = {
    box: document.getElementById("ld-box-list"),
    polygon: document.getElementById("ld-polygon-list"),
    mask: document.getElementById("ld-mask-list")
  };
  var colors = {};
  config.classes.forEach(function (c) { colors[c.name] = c.color; });

  var toolInputs = Array.prototype.slice.call(document.querySelectorAll("input[name=ld-tool]"));
  var state = {
    tool: (toolInputs.filter(function (t) { return t.checked; })[0] || toolInputs[0] || { value: "box" }).value,
    slice: slider ? Number(slider.value) : (Number(root.dataset.slice) || 0)
  };
  var boxes = parseList(fields.boxes);
  var polygons = parseList(fields.polygons);
  var masks = {};  // key -> {label, z, data: Uint8Array(W * H), count, canvas, ctx, image}
  var draft = null;  // the polygon being outlined: {label, z, points}
  var undo = [];
  var drag = null;
  var pointer = null;

  function parseList(field) {
    if (!field || !field.value) { return []; }
    try {
      var value = JSON.parse(field.value);
      return Array.isArray(value) ? value : [];
    } catch (e) {
      return [];
    }
  }

  function currentZ() { return SLICES > 1 ? state.slice : null; }
  function onSlice(z) { return z === null || z === undefined || z === state.slice; }
  function chosenClass() { return classSelect ? classSelect.value : ""; }
  function colorOf(label) { return colors[label] || "#e6194b"; }
  function sliceText(z) { return z === null || z === undefined ? "" : " on slice " + (z + 1); }
  function say(text) { if (help) { help.textContent = text; } }
  function remember(action) {
    undo.push(action);
    if (undo.length > MAX_UNDO) { undo.shift(); }
  }

  // -- the canvas -------------------------------------------------------------------------------------------
  function fit() {
    var w = img.clientWidth;
    var h = img.clientHeight;
    if (w > 0 && h > 0 && (canvas.width !== w || canvas.height !== h)) {
      canvas.width = w;
      canvas.height = h;
    }
    render();
  }

  function scale() { return { x: canvas.width / W, y: canvas.height / H }; }

  function toImage(event) {
    var rect = canvas.getBoundingClientRect();
    var x = Math.min(Math.max(event.clientX - rect.left, 0), rect.width) * W / rect.width;
    var y = Math.min(Math.max(event.clientY - rect.top, 0), rect.height) * H / rect.height;
    return { x: x, y: y };
  }

  function rounded(p) { return { x: Math.round(p.x * 10) / 10, y: Math.round(p.y * 10) / 10 }; }

  function near(a, b) {
    var s = scale();
    var dx = (a.x - b.x) * s.x;
    var dy = (a.y - b.y) * s.y;
    return dx * dx + dy * dy <= SNAP * SNAP;
  }

  function hexRgb(color) {
    var m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color || "");
    return m ? [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)] : [230, 25, 75];
  }

  function render() {
    var ctx = canvas.getContext("2d");
    var s = scale();
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.imageSmoothingEnabled = false;
    Object.keys(masks).forEach(function (key) {
      var m = masks[key];
      if (m.count > 0 && onSlice(m.z)) { ctx.drawImage(m.canvas, 0, 0, canvas.width, canvas.height); }
    });
    ctx.lineWidth = 2;
    ctx.font = "12px system-ui, sans-serif";
    var shownBoxes = boxes.slice();
    if (drag && drag.kind === "box" && drag.to) {
      shownBoxes.push({ label: drag.label, box: rect(drag.from, drag.to), z: currentZ() });
    }
    shownBoxes.forEach(function (b) {
      if (!onSlice(b.z)) { return; }
      ctx.strokeStyle = colorOf(b.label);
      ctx.strokeRect(b.box[0] * s.x, b.box[1] * s.y, (b.box[2] - b.box[0]) * s.x, (b.box[3] - b.box[1]) * s.y);
      ctx.fillStyle = colorOf(b.label);
      ctx.fillText(b.label, b.box[0] * s.x + 3, Math.max(12, b.box[1] * s.y - 3));
    });
    polygons.forEach(function (p) {
      if (!onSlice(p.z)) { return; }
      outline(ctx, p.points, colorOf(p.label), true);
      if (state.tool === "polygon") { handles(ctx, p.points, colorOf(p.label)); }
    });
    if (draft && onSlice(draft.z)) {
      var points = draft.points.slice();
      if (pointer && state.tool === "polygon" && !drag) { points.push([pointer.x, pointer.y]); }
      outline(ctx, points, colorOf(draft.label), false);
      handles(ctx, draft.points, colorOf(draft.label));
    }
    if (pointer && (state.tool === "brush" || state.tool === "eraser")) {
      ctx.strokeStyle = state.tool === "eraser" ? "#ffffff" : colorOf(chosenClass());
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.ellipse(pointer.x * s.x, pointer.y * s.y, radius() * s.x, radius() * s.y, 0, 0, 2 * Math.PI);
      ctx.stroke();
    }
  }

  function outline(ctx, points, color, closed) {
    if (!points.length) { return; }
    var s = scale();
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach(function (p, i) {
      if (i === 0) { ctx.moveTo(p[0] * s.x, p[1] * s.y); } else { ctx.lineTo(p[0] * s.x, p[1] * s.y); }
    });
    if (closed) {
      ctx.closePath();
      ctx.globalAlpha = 0.18;
      ctx.fillStyle = color;
      ctx.fill();
      ctx.globalAlpha = 1;
    }
    ctx.stroke();
  }

  function handles(ctx, points, color) {
    var s = scale();
    ctx.fillStyle = color;
    points.forEach(function (p, i) {
      ctx.fillRect(p[0] * s.x - (i === 0 ? 4 : 3), p[1] * s.y - (i === 0 ? 4 : 3), i === 0 ? 8 : 6, i === 0 ? 8 : 6);
    });
  }

  function rect(a, b) {
    return [Math.min(a.x, b.x), Math.min(a.y, b.y), Math.max(a.x, b.x), Math.max(a.y, b.y)];
  }

  // -- masks --------------------------------------------------------------------------------------------------
  function maskKey(label, z) { return label + "\u0000" + (z === null ? "" : String(z)); }

  function mask(label, z, create) {
    var key = maskKey(label, z);
    if (!masks[key] && create) {
      var off = document.createElement("canvas");
      off.width = W;
      off.height = H;
      var ctx = off.getContext("2d");
      masks[key] = { label: label, z: z, data: new Uint8Array(W * H), count: 0, canvas: off, ctx: ctx,
                     image: ctx.createImageData(W, H), rgb: hexRgb(colorOf(label)) };
    }
    return masks[key] || null;
  }

  function radius() { return radiusInput ? Number(radiusInput.value) : 4; }

  // Set (value 1) or clear (0) every pixel whose centre is within r of the segment a-b; returns pixels changed.
  function paint(m, a, b, r, value) {
    var x0 = Math.max(0, Math.floor(Math.min(a.x, b.x) - r - 1));
    var x1 = Math.min(W - 1, Math.ceil(Math.max(a.x, b.x) + r + 1));
    var y0 = Math.max(0, Math.floor(Math.min(a.y, b.y) - r - 1));
    var y1 = Math.min(H - 1, Math.ceil(Math.max(a.y, b.y) + r + 1));
    if (x1 < x0 || y1 < y0) { return 0; }
    var dx = b.x - a.x;
    var dy = b.y - a.y;
    var length2 = dx * dx + dy * dy;
    var r2 = r * r;
    var changed = 0;
    var pixels = m.image.data;
    for (var j = y0; j <= y1; j++) {
      for (var i = x0; i <= x1; i++) {
        var px = i + 0.5 - a.x;
        var py = j + 0.5 - a.y;
        var t = length2 > 0 ? Math.max(0, Math.min(1, (px * dx + py * dy) / length2)) : 0;
        var ex = px - t * dx;
        var ey = py - t * dy;
        if (ex * ex + ey * ey > r2) { continue; }
        var k = j * W + i;
        if (m.data[k] === value) { continue; }
        m.data[k] = value;
        m.count += value ? 1 : -1;
        changed += 1;
        pixels[4 * k] = m.rgb[0];
        pixels[4 * k + 1] = m.rgb[1];
        pixels[4 * k + 2] = m.rgb[2];
        pixels[4 * k + 3] = value ? 115 : 0;
      }
    }
    if (changed) { m.ctx.putImageData(m.image, 0, 0, x0, y0, x1 - x0 + 1, y1 - y0 + 1); }
    return changed;
  }

  function restore(m, data) {
    m.data.set(data);
    var pixels = m.image.data;
    var count = 0;
    for (var k = 0; k < data.length; k++) {
      var on = data[k] ? 1 : 0;
      count += on;
      pixels[4 * k] = m.rgb[0];
      pixels[4 * k + 1] = m.rgb[1];
      pixels[4 * k + 2] = m.rgb[2];
      pixels[4 * k + 3] = on ? 115 : 0;
    }
    m.count = count;
    m.ctx.putImageData(m.image, 0, 0);
  }

  function encode(data) {
    var counts = [];
    var current = 0;
    var run = 0;
    for (var k = 0; k < data.length; k++) {
      var v = data[k] ? 1 : 0;
      if (v !== current) { counts.push(run); run = 0; current = v; }
      run += 1;
    }
    counts.push(run);
    return counts;
  }

  function decode(counts) {
    var data = new Uint8Array(W * H);
    var at = 0;
    counts.forEach(function (n, i) {
      if (i % 2 === 1) { data.fill(1, at, Math.min(at + n, data.length)); }
      at += n;
    });
    return data;
  }

  parseList(fields.masks).forEach(function (entry) {  // a refused submission comes back with its masks
    if (entry.rows !== H || entry.columns !== W || !Array.isArray(entry.counts)) { return; }
    var z = entry.z === undefined ? null : entry.z;
    restore(mask(entry.label, z, true), decode(entry.counts));
  });

  // -- polygons -------------------------------------------------------------------------------------------------
  function closeDraft() {
    if (!draft) { return true; }
    var points = [];
    draft.points.forEach(function (p) {  // a double-click adds the last point twice
      var last = points[points.length - 1];
      if (!last || Math.abs(last[0] - p[0]) > 0.5 || Math.abs(last[1] - p[1]) > 0.5) { points.push(p); }
    });
    if (points.length < 3) {
      say("A polygon needs at least 3 points: click more, or press Esc to drop it.");
      return false;
    }
    var polygon = { label: draft.label, points: points, z: draft.z };
    polygons.push(polygon);
    remember({ type: "polygon", polygon: polygon });
    draft = null;
    say(HELP.polygon);
    update();
    return true;
  }

  function dropDraft() {
    draft = null;
    render();
  }

  function grab(p) {
    for (var i = polygons.length - 1; i >= 0; i--) {
      if (!onSlice(polygons[i].z)) { continue; }
      for (var v = 0; v < polygons[i].points.length; v++) {
        var q = polygons[i].points[v];
        if (near(p, { x: q[0], y: q[1] })) { return { polygon: polygons[i], vertex: v, before: q.slice() }; }
      }
    }
    return null;
  }

  // -- pointer --------------------------------------------------------------------------------------------------
  canvas.addEventListener("pointerdown", function (event) {
    if (event.button !== 0) { return; }
    event.preventDefault();
    canvas.focus({ preventScroll: true });  // so Enter, Esc and Ctrl+Z reach the drawing
    var p = toImage(event);
    var label = chosenClass();
    if (!label) { say("Choose a class first."); return; }
    canvas.setPointerCapture(event.pointerId);
    if (state.tool === "box") {
      drag = { kind: "box", from: rounded(p), to: null, label: label };
    } else if (state.tool === "polygon") {
      if (draft && draft.points.length >= 3 && near(p, { x: draft.points[0][0], y: draft.points[0][1] })) {
        closeDraft();
        return;
      }
      var hit = draft ? null : grab(p);
      if (hit) {
        drag = { kind: "vertex", hit: hit };
        return;
      }
      if (!draft) { draft = { label: label, z: currentZ(), points: [] }; }
      var q = rounded(p);
      draft.points.push([q.x, q.y]);
      remember({ type: "vertex", draft: draft });
      render();
    } else {
      var erase = state.tool === "eraser";
      var m = mask(label, currentZ(), !erase);
      if (!m) { return; }
      drag = { kind: "paint", mask: m, last: p, before: m.data.slice(), changed: 0, value: erase ? 0 : 1 };
      drag.changed += paint(m, p, p, radius(), drag.value);
      render();
    }
  });

  canvas.addEventListener("pointermove", function (event) {
    var p = toImage(event);
    pointer = p;
    if (drag && drag.kind === "box") {
      drag.to = rounded(p);
    } else if (drag && drag.kind === "vertex") {
      var q = rounded(p);
      drag.hit.polygon.points[drag.hit.vertex] = [q.x, q.y];
    } else if (drag && drag.kind === "paint") {
      drag.changed += paint(drag.mask, drag.last, p, radius(), drag.value);
      drag.last = p;
    }
    render();
  });

  function finish(event) {
    if (!drag) { return; }
    var done = drag;
    drag = null;
    if (done.kind === "box") {
      var box = rect(done.from, rounded(toImage(event)));
      if (box[2] - box[0] >= 1 && box[3] - box[1] >= 1) {
        var b = { label: done.label, box: box, z: currentZ() };
        boxes.push(b);
        remember({ type: "box", box: b });
      }
    } else if (done.kind === "vertex") {
      remember({ type: "move", hit: done.hit });
    } else if (done.kind === "paint" && done.changed) {
      remember({ type: "paint", mask: done.mask, before: done.before });
    }
    update();
  }
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  canvas.addEventListener("pointerleave", function () { pointer = null; render(); });
  canvas.addEventListener("dblclick", function (event) {
    event.preventDefault();
    if (state.tool === "polygon" && draft) { closeDraft(); }
  });

  // -- undo -----------------------------------------------------------------------------------------------------
  function undoLast() {
    while (undo.length) {
      var a = undo.pop();
      if (a.type === "vertex") {
        if (a.draft !== draft) { continue; }  // a dropped polygon's points
        draft.points.pop();
        if (!draft.points.length) { draft = null; }
      } else if (a.type === "polygon") {
        polygons.splice(polygons.indexOf(a.polygon), 1);
        draft = { label: a.polygon.label, z: a.polygon.z, points: a.polygon.points.slice() };
        if (slider && draft.z !== null && draft.z !== state.slice) { draft = null; }
      } else if (a.type === "box") {
        boxes.splice(boxes.indexOf(a.box), 1);
      } else if (a.type === "move") {
        a.hit.polygon.points[a.hit.vertex] = a.hit.before;
      } else if (a.type === "paint") {
        restore(a.mask, a.before);
      } else if (a.type === "remove") {
        a.list.splice(Math.min(a.index, a.list.length), 0, a.item);
      }
      update();
      return;
    }
    say("Nothing to undo.");
  }
  if (undoButton) { undoButton.addEventListener("click", undoLast); }
  if (closeButton) { closeButton.addEventListener("click", function () { closeDraft(); }); }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (target && target !== canvas && target !== document.body) {
      var tag = target.tagName;
      if (tag === "TEXTAREA" || tag === "BUTTON" || tag === "SELECT" || (tag === "INPUT" && target.type === "text")) {
        return;  // their own keys (Enter on the submit button submits)
      }
    }
    if ((event.ctrlKey || event.metaKey) && (event.key === "z" || event.key === "Z")) {
      event.preventDefault();
      undoLast();
    } else if (event.key === "Enter" && draft) {
      event.preventDefault();
      closeDraft();
    } else if (event.key === "Escape" && draft) {
      dropDraft();
    }
  });

  // -- tools, class, radius, slices --------------------------------------------------------------------------
  function chooseTool(tool) {
    state.tool = tool;
    var kind = KIND[tool];
    if (classSelect) {
      var first = null;
      Array.prototype.forEach.call(classSelect.options, function (o) {
        o.disabled = (o.dataset.kinds || "").split(" ").indexOf(kind) < 0;
        if (!o.disabled && first === null) { first = o; }
      });
      var selected = classSelect.options[classSelect.selectedIndex];
      if ((!selected || selected.disabled) && first) { classSelect.value = first.value; }
    }
    say(HELP[tool] || "");
    render();
  }
  toolInputs.forEach(function (t) {
    t.addEventListener("change", function () { if (t.checked) { chooseTool(t.value); } });
  });
  if (radiusInput) {
    radiusInput.addEventListener("input", function () {
      if (radiusLabel) { radiusLabel.textContent = radiusInput.value + " px"; }
      render();
    });
  }
  if (slider) {
    slider.addEventListener("input", function () {
      state.slice = Number(slider.value);
      if (draft && draft.z !== currentZ()) {
        draft = null;
        say("The unfinished polygon was dropped: a polygon lies on one slice.");
      }
      render();
    });
  }
  img.addEventListener("load", fit);
  window.addEventListener("resize", fit);

  // -- the lists and the form --------------------------------------------------------------------------------
  function entry(list, text, color, action, onClick) {
    var li = document.createElement("li");
    var chip = document.createElement("span");
    chip.className = "ld-swatch";
    chip.style.background = color;
    li.appendChild(chip);
    li.appendChild(document.createTextNode(text + " "));
    var button = document.createElement("button");
    button.type = "button";
    button.className = "button button-quiet";
    button.textContent = action;
    button.addEventListener("click", onClick);
    li.appendChild(button);
    list.appendChild(li);
  }

  function removeFrom(list, item) {
    var index = list.indexOf(item);
    list.splice(index, 1);
    remember({ type: "remove", list: list, item: item, index: index });
    update();
  }

  function update() {
    if (lists.box) {
      lists.box.textContent = "";
      boxes.forEach(function (b) {
        var text = b.label + " [" + b.box.map(function (v) { return Math.round(v); }).join(", ") + "]" + sliceText(b.z);
        entry(lists.box, text, colorOf(b.label), "Remove", function () { removeFrom(boxes, b); });
      });
    }
    if (lists.polygon) {
      lists.polygon.textContent = "";
      polygons.forEach(function (p) {
        entry(lists.polygon, p.label + ", " + p.points.length + " points" + sliceText(p.z), colorOf(p.label),
              "Remove", function () { removeFrom(polygons, p); });
      });
    }
    if (lists.mask) {
      lists.mask.textContent = "";
      Object.keys(masks).sort().forEach(function (key) {
        var m = masks[key];
        if (!m.count) { return; }
        entry(lists.mask, m.label + sliceText(m.z) + ": " + m.count + " px", colorOf(m.label), "Clear", function () {
          remember({ type: "paint", mask: m, before: m.data.slice() });
          restore(m, new Uint8Array(W * H));
          update();
        });
      });
    }
    render();
  }

  function serialise() {
    if (fields.boxes) { fields.boxes.value = JSON.stringify(boxes); }
    if (fields.polygons) { fields.polygons.value = JSON.stringify(polygons); }
    if (fields.masks) {
      var out = [];
      Object.keys(masks).sort().forEach(function (key) {
        var m = masks[key];
        if (m.count > 0) { out.push({ label: m.label, z: m.z, rows: H, columns: W, counts: encode(m.data) }); }
      });
      fields.masks.value = JSON.stringify(out);
    }
  }

  // Capturing on the document runs before labels_viewer.js' submit handler on the form, so an unfinished
  // polygon can stop the submission before that handler disables the buttons.
  document.addEventListener("submit", function (event) {
    if (event.target !== form) { return; }
    if (draft && !closeDraft()) {
      event.preventDefault();
      event.stopPropagation();
      return;
    }
    serialise();
  }, true);

  chooseTool(state.tool);
  update();
  if (img.complete && img.naturalWidth) { fit(); }
  root.dataset.drawReady = "1";
})();
