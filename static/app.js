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

// The Models page's try-it box (<form data-tryit>): post the form with fetch and show the answer as it streams in,
// one JSON object a line ({"text"}, {"error"}, {"done"}). Without JavaScript the form posts and the page comes back
// with the whole answer.
document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-tryit]");
  if (!form) return;
  event.preventDefault();
  const box = form.closest(".tryit");
  const answer = box.querySelector("[data-tryit-answer]");
  const error = box.querySelector("[data-tryit-error]");
  const button = form.querySelector("button[type=submit]");
  const fail = (message) => {
    error.textContent = message;
    error.hidden = false;
  };
  delete box.dataset.done;
  answer.textContent = "";
  answer.hidden = false;
  error.hidden = true;
  button.disabled = true;
  box.setAttribute("aria-busy", "true");
  try {
    const response = await fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      headers: { "x-tryit": "stream", "x-csrftoken": form.elements._csrf_token.value },
    });
    if (!response.ok && !(response.headers.get("content-type") || "").includes("ndjson")) {
      fail(`The request failed (HTTP ${response.status}). Reload the page and try again.`);
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 1);
        if (!line) continue;
        const item = JSON.parse(line);
        if (item.text) answer.append(item.text);
        if (item.error) fail(item.error);
        if (item.done) box.dataset.done = "true";
      }
    }
  } catch {
    fail("The answer broke off: the connection to the hub was lost. Try again.");
  } finally {
    if (!answer.textContent) answer.hidden = true;
    button.disabled = false;
    box.removeAttribute("aria-busy");
  }
});
