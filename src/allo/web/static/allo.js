// The workspace's behaviour: live updates (server-sent events), keyboard shortcuts, and SLA
// countdowns. Pages work without it; it only makes them live and quicker to drive.
(function () {
  "use strict";

  const body = document.body;

  // --- Live updates -------------------------------------------------------------------
  function reloadQueue() {
    const queue = document.getElementById("queue");
    if (!queue || !window.htmx) return;
    const selected = document.querySelector("#queue li[aria-selected='true']");
    const keep = selected ? selected.dataset.id : null;
    htmx.ajax("GET", "/inbox/queue" + window.location.search, { target: "#queue", swap: "innerHTML" })
      .then(function () { select(keep ? document.querySelector("#queue li[data-id='" + keep + "']") : null, false); });
  }

  function reloadThread(update) {
    const page = document.querySelector("[data-conversation]");
    if (!page || !window.htmx) return;
    const id = Number(page.dataset.conversation);
    if (update.kind !== "resync" && update.conversations.indexOf(id) < 0) return;
    htmx.ajax("GET", "/conversations/" + id + "/thread", { target: "#thread", swap: "outerHTML" });
  }

  // --- Presence: who else is on this conversation (collision detection) ------------------
  const conversationPage = document.querySelector("[data-conversation]");
  const present = new Map();  // user id -> {name, state, until}
  const PRESENCE_EVERY = 10000;
  const PRESENCE_FORGET = 25000;

  function sayPresence(state) {
    if (!conversationPage) return;
    const form = new FormData();
    form.append("now", state);
    form.append("csrf_token", body.dataset.csrf);
    const url = "/conversations/" + conversationPage.dataset.conversation + "/presence";
    if (state === "left" && navigator.sendBeacon) { navigator.sendBeacon(url, form); return; }
    fetch(url, { method: "POST", body: form, credentials: "same-origin" }).catch(function () {});
  }

  function showPresence() {
    const element = document.querySelector(".presence");
    if (!element) return;
    const now = Date.now();
    const lines = [];
    present.forEach(function (who, id) {
      if (who.until < now) { present.delete(id); return; }
      lines.push((who.state === "typing" ? element.dataset.typing : element.dataset.viewing).replace("{}", who.name));
    });
    element.textContent = lines.join(" · ");
  }

  function onPresence(event) {
    const update = JSON.parse(event.data);
    if (!conversationPage || String(update.user.id) === body.dataset.user) return;
    if (update.conversations.indexOf(Number(conversationPage.dataset.conversation)) < 0) return;
    const known = present.has(update.user.id);
    if (update.state === "left") present.delete(update.user.id);
    else present.set(update.user.id, { name: update.user.name, state: update.state, until: Date.now() + PRESENCE_FORGET });
    // A newcomer learns who was already here at their next heartbeat; answer at once instead.
    if (!known && update.state === "viewing") sayPresence("viewing");
    showPresence();
  }

  if (conversationPage) {
    // The first "viewing" is said when the live stream opens (below), so the answers of
    // those already here are heard.
    setInterval(function () { sayPresence("viewing"); showPresence(); }, PRESENCE_EVERY);
    window.addEventListener("pagehide", function () { sayPresence("left"); });
    let typedAt = 0;
    document.addEventListener("input", function (event) {
      if (event.target.id !== "reply-text" || Date.now() - typedAt < 3000) return;
      typedAt = Date.now();
      sayPresence("typing");
    });
  }

  let pending = null;
  function onUpdate(event) {
    const update = JSON.parse(event.data);
    reloadThread(update);
    // Bursts (an outage wave) become one reload of the queue.
    if (pending) return;
    pending = setTimeout(function () { pending = null; reloadQueue(); }, 100);
  }

  if (body.dataset.live && window.EventSource) {
    const indicator = document.querySelector(".live");
    const source = new EventSource(body.dataset.live);
    ["message", "assignment", "status", "resync"].forEach(function (kind) {
      source.addEventListener(kind, onUpdate);
    });
    source.addEventListener("presence", onPresence);
    source.onopen = function () {
      if (indicator) indicator.dataset.state = "on";
      sayPresence("viewing");
    };
    source.onerror = function () { if (indicator) indicator.dataset.state = "off"; };
  }

  // --- SLA countdowns -----------------------------------------------------------------
  function countdowns() {
    document.querySelectorAll("time.due[datetime]").forEach(function (element) {
      const minutes = Math.round((Date.parse(element.getAttribute("datetime")) - Date.now()) / 60000);
      const late = minutes < 0;
      const span = Math.abs(minutes);
      const amount = span >= 120 ? Math.round(span / 60) + " h" : span + " min";
      element.textContent = (late ? element.dataset.late : element.dataset.in).replace("{}", amount);
      element.dataset.state = late ? "late" : minutes <= 15 ? "soon" : "ok";
    });
  }
  countdowns();
  setInterval(countdowns, 30000);
  body.addEventListener("htmx:afterSwap", countdowns);

  // --- Canned responses and suggestions: the text goes into the answer, at the cursor -----
  function insert(box, words) {
    const at = box.selectionStart || box.value.length;
    box.value = box.value.slice(0, at) + words + box.value.slice(box.selectionEnd || at);
    box.focus();
    box.dispatchEvent(new Event("input", { bubbles: true }));
  }
  document.addEventListener("change", function (event) {
    const select = event.target.closest("select[data-insert]");
    if (!select || !select.value) return;
    insert(document.querySelector(select.dataset.insert), select.value);
    select.value = "";
  });
  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-insert-text]");
    if (!button) return;
    insert(document.querySelector(button.dataset.target), button.dataset.insertText);
  });

  // --- Length as the network counts it (the server checks again) --------------------------
  // X weighs most scripts one, others (CJK) two, an emoji two, and every link 23.
  const LIGHT = [[0, 4351], [8192, 8205], [8208, 8223], [8242, 8247]];
  function weightOf(grapheme) {
    if (/\p{Extended_Pictographic}/u.test(grapheme)) return 2;
    let weight = 0;
    for (const symbol of grapheme) {
      const point = symbol.codePointAt(0);
      weight += LIGHT.some(function (r) { return point >= r[0] && point <= r[1]; }) ? 1 : 2;
    }
    return weight;
  }
  function lengthOf(text, weighted) {
    if (!weighted) return Array.from(text).length;
    const links = text.match(/https?:\/\/\S+/g) || [];
    let rest = text.replace(/https?:\/\/\S+/g, "");
    let length = links.length * 23;
    const graphemes = window.Intl && Intl.Segmenter
      ? Array.from(new Intl.Segmenter().segment(rest.normalize("NFC")), function (s) { return s.segment; })
      : Array.from(rest.normalize("NFC"));
    graphemes.forEach(function (g) { length += weightOf(g); });
    return length;
  }
  function count() {
    const output = document.getElementById("reply-count");
    const box = document.getElementById("reply-text");
    if (!output || !box) return;
    const length = lengthOf(box.value, output.dataset.weighted === "true");
    output.textContent = length + " / " + output.dataset.limit;
    output.dataset.over = String(length > Number(output.dataset.limit));
  }
  document.addEventListener("input", function (event) { if (event.target.id === "reply-text") count(); });
  count();

  // --- Keyboard -----------------------------------------------------------------------
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("#queue li[data-id]")); }

  function select(row, focus) {
    rows().forEach(function (r) { r.setAttribute("aria-selected", r === row ? "true" : "false"); });
    if (row && focus !== false) row.querySelector("a").focus();
  }

  function move(step) {
    const all = rows();
    if (!all.length) return;
    const at = all.findIndex(function (r) { return r.getAttribute("aria-selected") === "true"; });
    select(all[Math.min(all.length - 1, Math.max(0, at + step))]);
  }

  function typing(target) {
    return target.closest("input, textarea, select, [contenteditable='true']") !== null;
  }

  function click(selector) {
    const element = document.querySelector(selector);
    if (element) element.click();
    return element !== null;
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Escape") { document.activeElement.blur(); return; }
    if (typing(event.target)) return;
    const actions = {
      j: function () { move(1); },
      k: function () { move(-1); },
      r: function () { const box = document.getElementById("reply-text"); if (box) box.focus(); },
      e: function () { click("[data-shortcut='resolve']"); },
      a: function () { click("[data-shortcut='assign']"); },
      "/": function () { const search = document.getElementById("search"); if (search) search.focus(); },
      "?": function () { const help = document.getElementById("help"); if (help) help.showModal(); },
    };
    if (actions[event.key]) { event.preventDefault(); actions[event.key](); }
  });

  const first = rows()[0];
  if (first && !document.querySelector("#queue li[aria-selected='true']")) select(first, false);
})();
