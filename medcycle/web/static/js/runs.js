// The runs table: forms that submit on change, and the selection of runs to compare (two or more).
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function wireAutoSubmit() {
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  }

  function wireCompare() {
    var form = document.getElementById("compare-form");
    if (!form) { return; }
    var button = document.getElementById("compare-button");
    var count = document.getElementById("compare-count");
    var boxes = Array.prototype.slice.call(form.querySelectorAll("input[name=ids]"));
    function update() {
      var n = boxes.filter(function (box) { return box.checked; }).length;
      boxes.forEach(function (box) { box.closest("tr").classList.toggle("selected", box.checked); });
      button.disabled = n < 2 || n > 20;
      count.textContent = n === 0 ? "Tick two or more runs." :
        n === 1 ? "1 run selected; tick one more." :
          n > 20 ? n + " runs selected; compare at most 20." : n + " runs selected.";
    }
    boxes.forEach(function (box) { box.addEventListener("change", update); });
    update();
  }

  function start() {
    wireAutoSubmit();
    wireCompare();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
