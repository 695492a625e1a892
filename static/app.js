// Copy buttons: <button data-copy="#element-id">. Everything else works without JavaScript.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  try {
    await navigator.clipboard.writeText(source.textContent.trim());
    button.textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
});

// The Content-Security-Policy forbids eval, so behaviour that would be an hx-on handler or an hx-trigger filter
// lives here, switched on by data attributes.

// <form data-reset-on-success>: empty the form once htmx has saved it, ready for the next entry (not on errors).
document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.target;
  const status = event.detail.xhr.status;
  if (form.matches("form[data-reset-on-success]") && status >= 200 && status < 300) form.reset();
});

// <section data-pause-while-open hx-trigger="every 2s">: skip a refresh while the reader has a <details> open in it,
// so it does not fold shut under them.
document.addEventListener("htmx:beforeRequest", (event) => {
  const source = event.detail.elt;
  if (source.matches("[data-pause-while-open]") && source.querySelector("details[open]")) event.preventDefault();
});
