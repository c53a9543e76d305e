/* Herald's console: refresh the live figures of a page from its JSON twin, without reloading.
   The pages work without this file (they show their figures as of load). */
"use strict";
(function () {
  const live = document.querySelector("[data-live]");
  if (!live || !window.fetch) return;
  const every = Math.max(1, Number(live.dataset.every) || 5) * 1000;
  const rows = live.querySelector("[data-rows]");
  const cap = Number(live.dataset.cap) || 1000;
  const note = live.querySelector("[data-live-note]");
  const shown = new Map();
  let after = Number(live.dataset.after) || 0;
  let paused = false;
  let timer = null;

  // Content that updates by itself can be paused (WCAG 2.2.2).
  const toggle = document.createElement("button");
  toggle.type = "button";
  toggle.className = "secondary";
  toggle.setAttribute("aria-pressed", "false");
  toggle.textContent = "Pause live updates";
  toggle.addEventListener("click", function () {
    paused = !paused;
    toggle.setAttribute("aria-pressed", String(paused));
    toggle.textContent = paused ? "Resume live updates" : "Pause live updates";
    if (!paused) poll();
  });
  if (note) {
    note.textContent = "Live: refreshed every " + every / 1000 + " s. ";
    note.appendChild(toggle);
  }

  function setText(element, text) {
    if (element.textContent !== text) element.textContent = text;
  }

  function apply(data) {
    for (const [name, text] of Object.entries(data.figures || {})) {
      for (const element of live.querySelectorAll('[data-figure="' + name + '"]')) setText(element, text);
    }
    for (const [name, html] of Object.entries(data.regions || {})) {
      const element = live.querySelector('[data-region="' + name + '"]');
      if (element && shown.get(name) !== html) {
        element.innerHTML = html;
        shown.set(name, html);
      }
    }
    if (rows && typeof data.last === "number") {
      after = data.last;
      if (data.count) {
        rows.insertAdjacentHTML("afterbegin", data.rows);
        while (rows.rows.length > cap) rows.deleteRow(-1);
      }
      const summary = live.querySelector('[data-figure="tail_summary"]');
      if (summary) setText(summary, rows.rows.length + " events shown" + (data.count ? "; " + data.count + " new." : "."));
    }
  }

  async function poll() {
    clearTimeout(timer);
    if (paused) return;
    try {
      const url = new URL(live.dataset.live, window.location.href);
      if (rows) url.searchParams.set("after", String(after));
      const response = await fetch(url, {headers: {Accept: "application/json"}, credentials: "same-origin"});
      if (response.redirected || response.status === 401) {
        if (note) setText(note, "Signed out: reload the page to sign in again.");
        return;
      }
      if (response.ok) apply(await response.json());
    } catch (error) {
      // The server may be restarting: try again at the next tick.
    }
    timer = setTimeout(poll, every);
  }

  timer = setTimeout(poll, every);
})();
