// sagaline console: a little progressive enhancement. Every page works without it.
// - forms with data-confirm ask before they submit (purge, abort, cancel);
// - a "select all" checkbox (data-select-all="name") ticks the checkboxes of that name;
// - an element with data-poll="url" refreshes its [data-field] children from the URL's JSON
//   every second (a replay job's live progress) until the job is no longer running.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) event.preventDefault();
});
document.addEventListener("change", (event) => {
  const name = event.target.getAttribute && event.target.getAttribute("data-select-all");
  if (!name) return;
  for (const box of document.querySelectorAll(`input[type=checkbox][name="${name}"]`)) {
    box.checked = event.target.checked;
  }
});
function poll(element) {
  const url = element.getAttribute("data-poll");
  const tick = async () => {
    let job;
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) return setTimeout(tick, 3000);
      job = await response.json();
    } catch (error) {
      return setTimeout(tick, 3000);
    }
    for (const field of element.querySelectorAll("[data-field]")) {
      field.textContent = job[field.getAttribute("data-field")] ?? "";
    }
    const bar = element.querySelector("progress");
    if (bar) { bar.max = job.total || 1; bar.value = job.replayed + job.gone; }
    if (job.status === "running") setTimeout(tick, 1000);
  };
  setTimeout(tick, 1000);
}
document.addEventListener("DOMContentLoaded", () => {
  for (const element of document.querySelectorAll("[data-poll]")) poll(element);
});
