// The review gallery: save a verdict or pin a case through the REST API (same origin, session cookie).
"use strict";
(function () {
  const gallery = document.querySelector("[data-testid=gallery]");
  if (!gallery) return;
  const report = gallery.dataset.report;

  function url(key, action) {
    const path = key.split("/").map(encodeURIComponent).join("/");
    return `/v1/models/reports/${encodeURIComponent(report)}/cases/${path}/${action}`;
  }

  async function send(method, target, body, status) {
    status.textContent = "saving…";
    try {
      const response = await fetch(target, {
        method, credentials: "same-origin",
        headers: { "Content-Type": "application/json", "Accept": "application/json" },
        body: JSON.stringify(body),
      });
      const data = await response.json().catch(() => ({}));
      if (!response.ok) {
        const error = data.error || {};
        status.textContent = (error.message || `failed (${response.status})`) + (error.hint ? ` — ${error.hint}` : "");
        status.classList.add("status-bad");
        return null;
      }
      status.classList.remove("status-bad");
      return data;
    } catch (err) {
      status.textContent = `failed: ${err}`;
      status.classList.add("status-bad");
      return null;
    }
  }

  gallery.addEventListener("submit", async (event) => {
    const form = event.target;
    const card = form.closest("[data-testid=case]");
    if (!card) return;
    event.preventDefault();
    const key = card.dataset.key;
    if (form.matches("[data-testid=verdict-form]")) {
      const status = form.querySelector("[data-testid=verdict-status]");
      const choice = form.querySelector("input[name=verdict]:checked");
      if (!choice) { status.textContent = "choose a verdict first"; return; }
      const data = await send("PUT", url(key, "verdict"), { verdict: choice.value, note: form.note.value }, status);
      if (data) status.textContent = `${data.verdict} by ${data.reviewer} — saved`;
    } else if (form.matches("[data-testid=pin-form]")) {
      const status = form.querySelector("[data-testid=pin-status]");
      const data = await send("POST", url(key, "pin"), { expected: form.expected.value }, status);
      if (data) {
        status.textContent = `pinned (expects ${data.expected})`;
        form.querySelector("button").textContent = "Pinned — update";
      }
    }
  });
})();
