/* kefu-assist pages: sign-in with an API key kept in sessionStorage, the key sent as a Bearer header on
 * every htmx request, role-based hiding, the console's keyboard shortcuts and waiting clocks, and the
 * records' downloads (the knowledge editor's candidates and gaps are server-rendered fragments).
 * No framework and no build step; untrusted text is only ever set with textContent. */
(function () {
  "use strict";

  const KEY = "kefu_key";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const msg = (name) =>
    ["#i18n", "#console-i18n"].map((sel) => $(sel) && $(sel).dataset[name]).find((v) => v) || name;
  const page = document.body.dataset.page;
  let role = null;

  // -- the key and the requests ------------------------------------------------------------------

  function key() { return sessionStorage.getItem(KEY); }

  function api(method, path, body) {
    const headers = { Authorization: "Bearer " + (key() || "") };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  }

  async function errorText(resp) {
    try {
      const j = await resp.json();
      const e = j.error || {};
      return (document.documentElement.lang === "en" ? e.message_en : e.message_zh) || e.message_en || resp.statusText;
    } catch (_) {
      return resp.status + " " + resp.statusText;
    }
  }

  function flash(text, kind) {
    const box = $("#flash");
    if (!box) return;
    const div = document.createElement("div");
    div.className = "flash " + (kind || "error");
    div.setAttribute("role", kind === "ok" ? "status" : "alert");
    div.textContent = text;
    box.replaceChildren(div);
  }

  document.addEventListener("htmx:configRequest", (e) => {
    const k = key();
    if (k) e.detail.headers["Authorization"] = "Bearer " + k;
  });
  document.addEventListener("htmx:beforeRequest", () => { const f = $("#flash"); if (f) f.replaceChildren(); });
  document.addEventListener("htmx:responseError", (e) => {
    const status = e.detail.xhr.status;
    if (status === 401) signOut(msg("badKey"));
  });
  document.addEventListener("htmx:sendError", () => flash(msg("offline")));

  // -- sign-in -------------------------------------------------------------------------------------

  function applyRole() {
    $$("[data-roles]").forEach((el) => {
      const allowed = el.dataset.roles.split(/\s+/).includes(role);
      if (!allowed) el.hidden = true;
      else if (!el.classList.contains("tab-panel")) el.hidden = false;
    });
  }

  function signOut(reason) {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(KEY + "_me");
    role = null;
    $("#app").hidden = true;
    $("#who").hidden = true;
    $("#signout").hidden = true;
    $("#signin").hidden = false;
    $("#signin-error").textContent = reason || "";
    $("#key").focus();
  }

  // The page counts as loaded (performance mark "kefu:loaded", read by suggest/web/bench.py) when the
  // requests it makes at sign-in have all been answered and swapped in.
  let pending = 0, loading = true;
  document.addEventListener("htmx:beforeRequest", (e) => {
    // Parts of a page the role may not use make no requests (the server would refuse them anyway).
    const gated = e.target.closest && e.target.closest("[data-roles]");
    if (gated && !gated.dataset.roles.split(/\s+/).includes(role)) {
      e.preventDefault();
      return;
    }
    pending++;
  });
  document.addEventListener("htmx:afterRequest", () => {
    pending--;
    setTimeout(() => {
      if (loading && pending === 0 && role) { loading = false; performance.mark("kefu:loaded"); }
    }, 0);
  });

  async function whoami() {
    let resp;
    try {
      resp = await api("GET", "/ui/whoami");
    } catch (_) {
      signOut(msg("offline"));
      return null;
    }
    if (!resp.ok) {
      signOut(resp.status === 401 ? msg("badKey") : await errorText(resp));
      return null;
    }
    const me = await resp.json();
    sessionStorage.setItem(KEY + "_me", JSON.stringify(me));
    return me;
  }

  async function signIn() {
    // A page opened in a tab that is already signed in starts at once with the role it knew, and checks
    // the key meanwhile (a revoked key signs the tab out; the server refuses its requests anyway).
    const known = sessionStorage.getItem(KEY + "_me");
    let me;
    if (known) {
      me = JSON.parse(known);
      whoami().then((now) => { if (now && now.role !== me.role) location.reload(); });
    } else {
      me = await whoami();
      if (!me) return;
    }
    role = me.role;
    document.body.dataset.role = role;
    $("#who").textContent = msg("signedIn") + " " + me.name + " (" + msg("role" + role.charAt(0).toUpperCase() + role.slice(1)) + ")";
    $("#who").hidden = false;
    $("#signout").hidden = false;
    $("#signin").hidden = true;
    $("#app").hidden = false;
    applyRole();
    showFirstAllowedTab();
    const pageRoles = $("#app").dataset.pageRoles;
    if (pageRoles && !pageRoles.split(/\s+/).includes(role)) {
      $("#app").replaceChildren($("#msg-not-allowed").content.cloneNode(true));
      return;
    }
    document.body.dispatchEvent(new CustomEvent("kefu:ready", { bubbles: true }));
    pageReady();
    setTimeout(() => {
      if (loading && pending === 0) { loading = false; performance.mark("kefu:loaded"); }
    }, 0);
  }

  $("#signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.removeItem(KEY + "_me");
    sessionStorage.setItem(KEY, $("#key").value.trim());
    $("#key").value = "";
    signIn();
  });
  $("#signout").addEventListener("click", () => signOut(""));
  $("#lang").addEventListener("click", () => {
    document.cookie = "kefu_lang=" + $("#lang").dataset.lang + "; path=/; max-age=31536000; SameSite=Lax";
    location.reload();
  });

  // -- tabs ----------------------------------------------------------------------------------------

  function showTab(id) {
    $$(".tabs [data-tab]").forEach((b) => b.classList.toggle("on", b.dataset.tab === id));
    $$(".tab-panel[id]").forEach((p) => {
      const allowed = !p.dataset.roles || p.dataset.roles.split(/\s+/).includes(role);
      p.hidden = p.id !== id || !allowed;
    });
    document.body.dispatchEvent(new CustomEvent("kefu:show-" + id.replace(/^tab-/, ""), { bubbles: true }));
  }

  function showFirstAllowedTab() {
    const first = $$(".tabs [data-tab]").find((b) => !b.hidden);
    if (first) showTab(first.dataset.tab);
  }

  document.addEventListener("click", (e) => {
    const tab = e.target.closest(".tabs [data-tab]");
    if (tab) showTab(tab.dataset.tab);
  });

  // -- the console -----------------------------------------------------------------------------------

  const rendered = new WeakMap();

  function tickWaits() {
    const now = Date.now();
    $$("[data-waiting-s]").forEach((el) => {
      if (!rendered.has(el)) rendered.set(el, now);
      const s = parseFloat(el.dataset.waitingS) + (now - rendered.get(el)) / 1000;
      const limit = parseFloat(el.dataset.limit || "60");
      el.textContent = formatWait(s);
      el.classList.toggle("over", s > limit);
      const row = el.closest(".conv");
      if (row) row.classList.toggle("over", s > limit);
    });
  }

  function formatWait(sec) {
    const s = Math.floor(sec);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  }

  function drafts() { return $$("#conv-view .draft"); }
  function selectedDraft() { return $("#conv-view .draft.selected"); }

  function selectDraft(n) {
    const all = drafts();
    if (n < 1 || n > all.length) return null;
    all.forEach((d, i) => d.classList.toggle("selected", i === n - 1));
    all[n - 1].focus({ preventScroll: false });
    return all[n - 1];
  }

  function closeForms(draft) {
    $$(".edit-form, .reject-form", draft).forEach((f) => { f.hidden = true; });
  }

  function openEdit(draft) {
    drafts().forEach(closeForms);
    selectDraft(parseInt(draft.dataset.index, 10));
    const form = $(".edit-form", draft);
    form.hidden = false;
    const ta = $("textarea", form);
    ta.focus();
    ta.setSelectionRange(ta.value.length, ta.value.length);
    htmx.trigger(ta, "kefu:check");
  }

  function openReject(draft) {
    drafts().forEach(closeForms);
    selectDraft(parseInt(draft.dataset.index, 10));
    const form = $(".reject-form", draft);
    form.hidden = false;
    $("input[name=reason]", form).focus();
  }

  function consoleClicks(e) {
    const draft = e.target.closest(".draft");
    if (e.target.closest(".edit-btn") && draft) openEdit(draft);
    else if (e.target.closest(".reject-btn") && draft) openReject(draft);
    else if (e.target.closest(".cancel-btn") && draft) closeForms(draft);
    else if (e.target.closest(".close-peek")) $("#peek").replaceChildren();
    else if (draft && !e.target.closest("button, a, form")) selectDraft(parseInt(draft.dataset.index, 10));
    const conv = e.target.closest("a.conv");
    if (conv) e.preventDefault();
  }

  function consoleKeys(e) {
    if (!$("#conv-view") || $("#app").hidden) return;
    const t = e.target;
    const typing = t.matches && t.matches("input, textarea, select, [contenteditable]");
    if (typing) {
      if (t.name === "final_text" && e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        t.closest("form").requestSubmit();
      } else if (e.key === "Escape") {
        const d = t.closest(".draft");
        if (d) { closeForms(d); d.focus(); }
      }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "w") {
      const own = $("#conv-view .own-reply textarea");
      if (own) { e.preventDefault(); own.focus(); }
      return;
    }
    if (e.key === "c") {
      const claim = $("#conv-view .claim-btn");
      if (claim) { e.preventDefault(); claim.click(); }
      return;
    }
    if (/^[1-9]$/.test(e.key)) {
      if (selectDraft(parseInt(e.key, 10))) e.preventDefault();
    } else if (e.key === "e" || e.key === "r") {
      const d = selectedDraft();
      if (!d) { if (drafts().length) flash(msg("pick"), "warn"); return; }
      e.preventDefault();
      if (e.key === "e") openEdit(d); else openReject(d);
    } else if (e.key === "Enter") {
      const d = selectedDraft();
      if (!d) { if (drafts().length) flash(msg("pick"), "warn"); return; }
      e.preventDefault();
      $(".approve", d).click();
    } else if (e.key === "Escape") {
      drafts().forEach(closeForms);
    }
  }

  // The open conversation follows what happens elsewhere (a customer's new message, a colleague's claim
  // or reply): its stamp is polled every POLL_MS and the view fetched again when it changed. What the
  // agent is typing survives the refresh (moved into the own-reply editor); a draft written for an older
  // message is never sent, since the server refuses it (409 stale_suggestion) and shows the new one.
  const POLL_MS = 1500;
  let polling = false;

  async function pollConversation() {
    const head = $("#conv-view .conv-head");
    if (!head || !key() || polling || document.hidden) return;
    polling = true;
    try {
      const id = head.dataset.conversation;
      const resp = await api("GET", "/ui/console/conversations/" + encodeURIComponent(id) + "/stamp");
      const current = $("#conv-view .conv-head");
      if (!resp.ok || !current || current.dataset.conversation !== id) return;
      const stamp = await resp.text();
      if (stamp && stamp !== current.dataset.stamp) refreshConversation(id);
    } catch (_) {
      // offline for a moment: the next poll tries again
    } finally {
      polling = false;
    }
  }

  function typedText() {
    const open = $$("#conv-view .edit-form:not([hidden]) textarea, #conv-view .own-reply textarea");
    const t = open.map((x) => x.value.trim()).find((v) => v);
    return t || "";
  }

  function refreshConversation(id) {
    const keep = typedText();
    const before = $$("#conv-view .thread .msg").length;
    htmx.ajax("GET", "/ui/console/conversations/" + encodeURIComponent(id), { target: "#conv-view" }).then(() => {
      const own = $("#conv-view .own-reply textarea");
      if (keep && own && !own.value) own.value = keep;
      const after = $$("#conv-view .thread .msg.customer").length;
      if ($$("#conv-view .thread .msg").length > before && after) {
        $("#conv-view").dataset.refreshedAt = String(Date.now());
        flash(msg("newMessage"), "warn");
      }
    });
  }

  function markSelectedConversation() {
    const head = $("#conv-view .conv-head");
    const id = head ? head.dataset.conversation : null;
    $$("#conv-list a.conv").forEach((a) => a.classList.toggle("selected", a.dataset.conv === id));
  }

  // -- records ---------------------------------------------------------------------------------------

  async function download(fmt) {
    const q = new URLSearchParams({ format: fmt });
    const shown = $("#records-table [data-from]");
    const from = $("#rec-from").value || (shown ? shown.dataset.from : "");
    const to = $("#rec-to").value || (shown ? shown.dataset.to : "");
    if (from) q.set("from", from);
    if (to) q.set("to", to);
    ["agent", "status"].forEach((f) => { const el = $("#rec-" + f); if (el && el.value) q.set(f, el.value); });
    const resp = await api("GET", "/v1/records/export?" + q.toString());
    if (!resp.ok) return flash(await errorText(resp));
    const blob = await resp.blob();
    const cd = resp.headers.get("Content-Disposition") || "";
    const m = /filename="([^"]+)"/.exec(cd);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = m ? m[1] : "records." + fmt;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  async function openReport() {
    const resp = await api("GET", "/ui/records/eval/report.html");
    if (!resp.ok) return flash(await errorText(resp));
    const frame = $("#eval-frame");
    frame.srcdoc = await resp.text();
    frame.hidden = false;
  }

  // -- wiring ------------------------------------------------------------------------------------------

  function pageReady() {
    if (page === "console") {
      setInterval(tickWaits, 1000);
      setInterval(pollConversation, POLL_MS);
      setInterval(() => {
        if (!key()) return;
        ["#conv-list", "#autoreply"].forEach((s) => { const el = $(s); if (el && !el.hidden) htmx.trigger(el, "refresh"); });
        if ($("#tab-queues") && !$("#tab-queues").hidden) htmx.trigger($("#queues"), "refresh");
      }, 10000);
    }
  }

  document.addEventListener("htmx:afterSwap", (e) => {
    tickWaits();
    const id = e.detail.target && e.detail.target.id;
    if (id === "conv-view" || id === "conv-list") markSelectedConversation();
    if (id === "conv-view") {
      // Rejected drafts, or a refused stale reply the agent had typed: the agent's own reply is next.
      const own = $("#conv-view .own-reply textarea");
      if (own && ($("#conv-view [data-decided='reject']") || ($("#conv-view [data-stale]") && own.value))) own.focus();
    }
    if (id === "snippet-editor" && $("#tab-snippets") && $("#tab-snippets").hidden) showTab("tab-snippets");
    if (id === "snippet-editor") $("#snippet-history").replaceChildren();
    if (role) applyRole();
  });

  document.addEventListener("click", (e) => {
    if (page === "console") consoleClicks(e);
    const dl = e.target.closest("button.download");
    if (dl) download(dl.dataset.format);
    if (e.target.closest("#open-report")) openReport();
  });
  document.addEventListener("keydown", (e) => { if (page === "console") consoleKeys(e); });

  // A one-click link (kefu keys demo prints /console#key=...): the key moves from the address into the
  // tab's session at once, and the address bar keeps no trace of it.
  const m = /(?:^|[#&])key=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.removeItem(KEY + "_me");
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  // After htmx has processed the page (its DOMContentLoaded handler was registered first).
  const start = () => { if (key()) signIn(); else signOut(""); };
  if (document.readyState === "complete") start(); else document.addEventListener("DOMContentLoaded", start);
})();
