// Gatehouse dashboard: the copy buttons. Each `button[data-copy]` copies the value
// (or text) of the element whose id it names, and says so for screen readers too.
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = "value" in source ? source.value : source.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch (_) {
    if (source.select) source.select();
    button.textContent = "Select and copy";
  }
  button.setAttribute("aria-live", "polite");
});

// Live pages (`<body data-live="/dashboard">`): when the control plane publishes a
// new configuration, fetch this page again and swap in its <main>, unless the person
// is in the middle of a form (a field has focus or was edited); then it waits for the
// next change, or for them to leave the field.
(() => {
  const base = document.body.dataset.live;
  if (!base || !window.EventSource) return;
  let pending = false;
  let busy = false;
  const editing = () => {
    const main = document.querySelector("main");
    if (main.contains(document.activeElement) && document.activeElement.matches("input, select, textarea")) return true;
    return [...main.querySelectorAll("input, textarea")].some(
      (f) => f.type !== "hidden" && f.type !== "submit" && !f.readOnly &&
        (f.type === "checkbox" ? f.checked !== f.defaultChecked : f.value !== f.defaultValue));
  };
  const refresh = async () => {
    if (busy) { pending = true; return; }
    if (editing()) { pending = true; return; }
    busy = true;
    pending = false;
    try {
      const answer = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
      if (answer.ok && !answer.redirected) {
        const page = new DOMParser().parseFromString(await answer.text(), "text/html");
        const fresh = page.querySelector("main");
        if (fresh) document.querySelector("main").replaceChildren(...fresh.childNodes);
        document.body.dataset.version = String(Number(document.body.dataset.version || 0) + 1);
      }
    } finally {
      busy = false;
      if (pending) refresh();
    }
  };
  document.addEventListener("focusout", () => { if (pending) setTimeout(refresh, 0); });
  const changes = new EventSource(base + "/live");
  changes.addEventListener("changed", refresh);
  changes.addEventListener("open", () => { document.body.dataset.listening = "yes"; });
})();

// A file input with `data-into="ID"` loads the chosen file's text into that textarea
// (the manifest upload); without the script, the manifest is pasted.
document.addEventListener("change", async (event) => {
  const input = event.target;
  if (!input.matches("input[type=file][data-into]") || !input.files.length) return;
  const target = document.getElementById(input.dataset.into);
  if (target) target.value = await input.files[0].text();
});
