// Headwater console: the live Debugger. New entries arrive as Server-Sent Events from
// /api/v1/sources/{name}/debugger/stream (the session cookie authenticates it) and are put at
// the top of the list, built with the same markup the server renders. Text goes in through
// textContent only: event content is never parsed as HTML.
"use strict";

(function () {
  const list = document.getElementById("debugger-entries");
  if (!list || !window.EventSource) return;
  const status = document.getElementById("debugger-status");
  const pauseButton = document.getElementById("debugger-pause");
  const missedNote = document.getElementById("debugger-missed");
  const empty = document.getElementById("debugger-empty");
  const MAX_ENTRIES = 500;
  let paused = false;
  let held = [];
  let missed = 0;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function clock(iso) {
    return iso ? iso.slice(11, 23) : "—";
  }

  function human(iso) {
    return iso ? iso.slice(0, 19).replace("T", " ") + " UTC" : "—";
  }

  function pretty(value) {
    return JSON.stringify(value, null, 2);
  }

  function jsonBlock(text, label) {
    return el("pre", { class: "json", tabindex: "0", "aria-label": label }, text);
  }

  function fact(term, ...value) {
    return [el("dt", {}, term), el("dd", {}, ...value)];
  }

  function rejected(entry) {
    const r = entry.rejection || {};
    const facts = el("dl", { class: "facts" },
      ...fact("Path", el("code", {}, String(r.path || ""))),
      ...fact("Write key", String(r.scope || "")),
      ...fact("Client", `${r.ip || "—"} · ${r.user_agent || "no user agent"}`));
    if (r.message_id) facts.append(...fact("messageId", el("code", {}, String(r.message_id))));
    if (r.index !== null && r.index !== undefined) facts.append(...fact("Batch item", String(r.index)));
    return el("li", { class: "entry fresh", "data-kind": "rejected", "data-message-id": entry.messageId || null },
      el("details", {},
        el("summary", {},
          el("time", { datetime: entry.at, title: human(entry.at) }, clock(entry.at)),
          el("span", { class: "badge kind-rejected" }, "rejected"),
          el("strong", { class: "reject" }, `${r.status} ${r.code}`),
          el("span", { class: "ename" }, String(r.message || ""))),
        el("div", { class: "entry-body" },
          facts,
          el("p", { class: "label" }, "Pretty JSON"),
          jsonBlock(pretty(r), "The refusal as JSON"),
          el("details", { class: "raw" },
            el("summary", {}, "Raw (the start of what was sent)"),
            el("pre", { class: "json", tabindex: "0" }, r.excerpt || "nothing was kept")))));
  }

  function accepted(entry) {
    const id = String(entry.messageId || "");
    return el("li", { class: "entry fresh", "data-kind": entry.kind, "data-message-id": id },
      el("details", {},
        el("summary", {},
          el("time", { datetime: entry.at, title: human(entry.at) }, clock(entry.at)),
          el("span", { class: `badge kind-${entry.kind}` }, String(entry.kind)),
          el("span", { class: "etype" }, String(entry.type || "")),
          el("span", { class: "ename" }, String(entry.name || "")),
          el("code", { class: "mid" }, id)),
        el("div", { class: "entry-body" },
          el("p", {}, el("a", { href: `/console/trace?id=${encodeURIComponent(id)}` }, "Trace this event")),
          el("p", { class: "label" }, "Pretty JSON"),
          jsonBlock(pretty(entry.event), "The event as JSON"),
          el("details", { class: "raw" },
            el("summary", {}, "Raw JSON"),
            el("pre", { class: "json", tabindex: "0" }, JSON.stringify(entry.event))))));
  }

  function add(entry) {
    list.prepend(entry.kind === "rejected" ? rejected(entry) : accepted(entry));
    while (list.children.length > MAX_ENTRIES) list.lastElementChild.remove();
    if (empty) empty.hidden = true;
  }

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function showHeld() {
    pauseButton.textContent = held.length ? `Resume (${held.length} new)` : "Resume";
  }

  pauseButton.hidden = false;
  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.setAttribute("aria-pressed", String(paused));
    if (paused) {
      showHeld();
    } else {
      held.forEach(add);
      held = [];
      pauseButton.textContent = "Pause";
    }
  });

  const stream = new EventSource(list.dataset.stream);
  setStatus("connecting", "Connecting to the live stream…");
  stream.addEventListener("open", () => setStatus("live", "Live: new events appear at the top"));
  stream.addEventListener("error", () => {
    if (stream.readyState === EventSource.CLOSED) {
      setStatus("closed", "The live stream ended (signed out?): reload the page.");
    } else {
      setStatus("reconnecting", "Connection lost; reconnecting…");
    }
  });
  stream.addEventListener("entry", (message) => {
    const entry = JSON.parse(message.data);
    if (paused) {
      held.push(entry);
      showHeld();
    } else {
      add(entry);
    }
  });
  stream.addEventListener("missed", (message) => {
    missed += Number(message.data) || 0;
    missedNote.textContent = `${missed} entries were skipped because this page could not keep up.`;
    missedNote.hidden = false;
  });
  window.addEventListener("pagehide", () => stream.close());
})();
