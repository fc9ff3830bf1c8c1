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
