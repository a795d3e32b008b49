// The console's pages: the office list and an office (session grid, waiting inbox). Data
// comes from the REST routes and the event streams, with the console cookie; nothing polls.
// DOM is built with el() (textContent, never innerHTML), so no API string becomes markup.
"use strict";

const semo = (() => {
  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function api(method, path, body) {
    const headers = {};
    if (method !== "GET") headers["X-Semo-Console"] = "1";  // the CSRF check (console_auth)
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await r.json().catch(() => null);
    if (r.status === 401) {
      location.assign("/console/login?next=" + encodeURIComponent(location.pathname));
    }
    if (!r.ok) throw new ApiError(r.status, (data && data.detail) || r.statusText);
    return data;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const WORDS = { ready: "ready", busy: "busy", waiting_input: "waiting for you",
    starting: "starting", restarting: "restarting", failed: "failed", terminated: "terminated",
    done: "done", running: "running", queued: "queued", cancelled: "cancelled",
    timed_out: "timed out" };

  function badge(status) {
    return el("span", { class: `status status-${status}`, dataset: { status } },
      WORDS[status] || status);
  }

  function setBadge(node, status) {
    node.className = `status status-${status}`;
    node.dataset.status = status;
    node.textContent = WORDS[status] || status;
  }

  function ago(iso) {
    if (!iso) return "";
    let s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60); s %= 60;
    if (m < 60) return `${m}m ${s}s`;
    const h = Math.floor(m / 60);
    return h < 48 ? `${h}h ${m % 60}m` : `${Math.floor(h / 24)}d`;
  }

  // "time in state" labels: a clock on the page, not a data poll
  setInterval(() => {
    for (const n of document.querySelectorAll("[data-since]")) n.textContent = ago(n.dataset.since);
  }, 1000);

  let flashTimer = null;
  function flash(message, kind) {
    const box = document.getElementById("flash");
    box.textContent = message;
    box.className = kind || "info";
    box.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => { box.hidden = true; }, 6000);
  }

  // --- browser notifications (with permission) ----------------------------------------
  const canNotify = "Notification" in window;
  function notify(title, body, url) {
    if (!canNotify || Notification.permission !== "granted") return;
    const n = new Notification(title, { body, tag: url || title });
    n.onclick = () => { window.focus(); if (url) location.assign(url); };
  }
  function setupNotifyToggle() {
    const button = document.getElementById("notify-toggle");
    if (!button || !canNotify) return;
    const show = () => {
      button.hidden = Notification.permission !== "default";
    };
    button.addEventListener("click", async () => {
      await Notification.requestPermission();
      show();
    });
    show();
  }
  document.addEventListener("DOMContentLoaded", setupNotifyToggle);

  function guard(fn) {
    return async (...args) => {
      try { return await fn(...args); } catch (err) {
        flash(err.status ? `${err.message} (${err.status})` : String(err), "error");
      }
    };
  }

  // one call at a time per key; a call asked for meanwhile runs once after it (the previews)
  function coalesce(fn) {
    const running = new Map();
    return (key, ...args) => {
      const state = running.get(key);
      if (state) { state.again = true; return; }
      const entry = { again: false };
      running.set(key, entry);
      (async () => {
        do {
          entry.again = false;
          try { await fn(key, ...args); } catch (err) { console.warn("semo:", err); }  // the next event retries
        } while (entry.again);
        running.delete(key);
      })();
    };
  }

  // --- pending input: the inbox item (SPEC §8, `pending_input`) ------------------------
  function officeUrl(officeId) { return `/api/offices/${encodeURIComponent(officeId)}`; }
  function sessionApi(s) {
    return `${officeUrl(s.office_id)}/sessions/${encodeURIComponent(s.session_id)}`;
  }
  function sessionPage(s) {
    return `/console/offices/${encodeURIComponent(s.office_id)}/sessions/${encodeURIComponent(s.session_id)}`;
  }

  // An inbox entry for a session that waits: its `pending_input` answered through
  // POST .../answer, or (an agent without it) the question the monitor saw, answered by keys.
  function waitingItem(s, question) {
    const p = s.pending_input;
    const item = el("article", { class: "waiting", dataset: { session: s.session_id } },
      el("header", {}, el("a", { href: sessionPage(s) }, s.session_id), " ", el("span", { class: "muted" }, s.role),
        " ", el("span", { class: "muted", dataset: { since: (p && p.since) || s.last_activity_at } })));
    if (p) {
      item.append(el("p", { class: "kind" }, p.kind + (p.tool ? `: ${p.tool}` : "")));
      if (p.question) item.append(el("p", { class: "question" }, p.question));
      if (p.input !== undefined && p.input !== null) {
        item.append(el("pre", { class: "tool-input" },
          typeof p.input === "string" ? p.input : JSON.stringify(p.input, null, 2)));
      }
      const send = guard(async (answer) => {
        try {
          await api("POST", `${sessionApi(s)}/answer`, { input_id: p.input_id, ...answer });
          item.classList.add("answered");
          flash(`answered ${s.session_id}`);
        } catch (err) {
          if (err.status === 409) { flash("That was answered already, or it changed.", "error"); return; }
          throw err;
        }
      });
      const remember = el("input", { type: "checkbox" });
      const buttons = el("div", { class: "row" });
      if (p.kind === "permission") {
        buttons.append(
          el("button", { class: "primary", onclick: () => send({ decision: "allow", remember: remember.checked }) }, "Allow"),
          el("button", { class: "danger", onclick: () => send({ decision: "deny", remember: remember.checked }) }, "Deny"),
          el("label", { class: "small" }, remember, " remember"));
      }
      for (const option of p.options || []) {
        buttons.append(el("button", { onclick: () => send({ option }) }, option));
      }
      if (p.kind === "dialog" && !(p.options || []).length) {  // a shell's y/n question
        buttons.append(
          el("button", { onclick: () => send({ text: "y" }) }, "y ⏎"),
          el("button", { onclick: () => send({ text: "n" }) }, "n ⏎"));
      }
      item.append(buttons, textReply((text) => send({ text })));
    } else {
      item.append(el("p", { class: "question" }, question || "waiting for input (see its terminal)"));
      const keys = guard(async (body) => {
        await api("POST", `${sessionApi(s)}/keys`, body);
        flash(`sent to ${s.session_id}`);
      });
      item.append(el("div", { class: "row" },
        el("button", { onclick: () => keys({ keys: ["y", "enter"] }) }, "y ⏎"),
        el("button", { onclick: () => keys({ keys: ["n", "enter"] }) }, "n ⏎"),
        el("button", { onclick: () => keys({ keys: ["esc"] }) }, "Esc")),
        textReply((text) => keys({ text: `${text}\r` })));  // typed, then Enter
    }
    return item;
  }

  function textReply(send) {
    const input = el("input", { name: "reply", placeholder: "reply…", "aria-label": "reply" });
    return el("form", { class: "row reply", onsubmit: (e) => {
      e.preventDefault();
      if (input.value) { send(input.value); input.value = ""; }
    } }, input, el("button", {}, "Send"));
  }

  // the question a waiting session's monitor saw (its current job's last waiting_input event)
  async function waitingQuestion(s) {
    if (!s.current_job_id) return null;
    const job = await api("GET", `${officeUrl(s.office_id)}/jobs/${encodeURIComponent(s.current_job_id)}`);
    const ev = [...job.events].reverse().find((e) => e.kind === "waiting_input");
    return ev && (ev.data.question || ev.data.text) || null;
  }

  return { api, el, badge, setBadge, ago, flash, notify, guard, coalesce, waitingItem,
    waitingQuestion, officeUrl, sessionApi, sessionPage, WORDS, ApiError };
})();

// --- /console/: the offices ---------------------------------------------------------------
function officesPage() {
  const { api, el, badge, guard, officeUrl, flash } = semo;
  const grid = document.getElementById("offices");
  const cards = new Map();

  function card(o) {
    const pool = o.pool || { capacity: o.max_sessions, in_use: 0, sessions: [] };
    const byStatus = {};
    for (const s of pool.sessions) byStatus[s.status] = (byStatus[s.status] || 0) + 1;
    const waiting = pool.sessions.filter((s) => s.status === "waiting_input" || s.pending_input);
    const del = guard(async () => {
      if (!confirm(`Delete office ${o.office_id} and terminate its sessions?`)) return;
      await api("DELETE", officeUrl(o.office_id));
      flash(`deleted ${o.office_id}`);
      refreshAll();
    });
    return el("article", { class: "card office", dataset: { office: o.office_id } },
      el("header", {}, el("a", { href: `/console/offices/${encodeURIComponent(o.office_id)}` }, o.name),
        " ", el("span", { class: "muted" }, o.office_id)),
      el("p", { class: "muted" }, `${o.agent} on ${o.machine_id}`),
      el("p", { class: "pool" }, `pool: ${pool.in_use} in use of ${pool.capacity}`),
      el("p", { class: "by-status" }, Object.keys(byStatus).length
        ? Object.entries(byStatus).map(([st, n]) => el("span", { class: "tally" }, badge(st), ` ${n}`))
        : el("span", { class: "muted" }, "no live sessions")),
      waiting.length ? el("div", { class: "waits" }, el("strong", {}, `${waiting.length} waiting for you: `),
        waiting.map((s) => el("a", { href: semo.sessionPage(s) }, s.session_id, " "))) : null,
      el("div", { class: "row" }, el("button", { class: "danger small", onclick: del }, "Delete")));
  }

  const refreshOffice = semo.coalesce(async (officeId) => {
    let o;
    try { o = await api("GET", officeUrl(officeId)); } catch (err) {
      if (err.status === 404) { cards.get(officeId)?.remove(); cards.delete(officeId); return; }
      throw err;
    }
    const node = card(o);
    node.dataset.order = `${o.name.toLowerCase()}\u0000${o.office_id}`;
    cards.get(officeId)?.remove();
    // by name, as a person looks for one (then id, for two of the same name)
    const after = [...grid.children].find((n) => n.dataset.order > node.dataset.order);
    grid.insertBefore(node, after || null);
    cards.set(officeId, node);
    document.getElementById("no-offices").hidden = cards.size > 0;
  });

  async function refreshAll() {
    const { offices } = await api("GET", "/api/offices");
    const ids = new Set(offices.map((o) => o.office_id));
    for (const [id, node] of cards) if (!ids.has(id)) { node.remove(); cards.delete(id); }
    await Promise.all(offices.map((o) => refreshOffice(o.office_id)));
    grid.removeAttribute("aria-busy");
    document.getElementById("no-offices").hidden = offices.length > 0;
  }

  const events = new EventSource("/api/events");
  events.addEventListener("snapshot", () => refreshAll());
  events.addEventListener("session", (e) => {
    const s = JSON.parse(e.data);
    if (cards.has(s.office_id)) refreshOffice(s.office_id); else refreshAll();
  });

  // the New office form offers the machines the token may use (GET /api/machines), and
  // each machine's agent profiles, saying which cannot run there
  const machineSelect = document.getElementById("machine-select");
  const agentSelect = document.getElementById("agent-select");
  let machines = [];
  function showMachine() {
    const m = machines.find((x) => x.machine_id === machineSelect.value);
    const facts = document.getElementById("machine-facts");
    agentSelect.replaceChildren();
    if (!m) { facts.textContent = "No client machine has registered: start `semo worker client` on one."; return; }
    for (const name of m.agent_profiles) {
      const found = m.agent_versions[name] || {};
      const missing = found.runs === false;
      agentSelect.append(el("option", { value: name, disabled: missing },
        name + (found.version ? ` ${found.version}` : "") + (missing ? " (not installed there)" : "")));
    }
    const usable = [...agentSelect.options].find((o) => !o.disabled);
    if (usable) agentSelect.value = usable.value;
    facts.textContent = `${m.hostname} · ${m.live_sessions} live sessions · seen ${semo.ago(m.last_seen_at)} ago`
      + ` · roots ${m.workspace_roots.join(", ")}`;
  }
  async function loadMachines() {
    ({ machines } = await api("GET", "/api/machines"));
    const keep = machineSelect.value || machineSelect.dataset.default;
    // the API's own machine is the default, to which the form's reset returns
    machineSelect.replaceChildren(...machines.map((m) => el("option",
      { value: m.machine_id, selected: m.machine_id === machineSelect.dataset.default },
      `${m.machine_id} (${m.live_sessions} live)`)));
    if (machines.some((m) => m.machine_id === keep)) machineSelect.value = keep;
    showMachine();
  }
  machineSelect.addEventListener("change", showMachine);
  document.getElementById("create-office").addEventListener("toggle", (e) => {
    if (e.target.open) loadMachines().catch((err) => flash(String(err), "error"));
  });

  document.getElementById("office-form").addEventListener("submit", guard(async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { name: f.get("name"), machine_id: f.get("machine_id"), agent: f.get("agent"),
      warm_roles: String(f.get("warm_roles") || "").split(",").map((r) => r.trim()).filter(Boolean) };
    if (f.get("office_id")) body.office_id = f.get("office_id");
    const o = await api("POST", "/api/offices", body);
    if (o.warnings && o.warnings.length) flash(`created ${o.office_id}; ${o.warnings.join(" ")}`, "error");
    else flash(`created ${o.office_id}`);
    e.target.reset();
    loadMachines().catch(() => {});
    refreshOffice(o.office_id);
  }));
}

// --- /console/offices/{office}: the session grid and the inbox ----------------------------
function officePage() {
  const { api, el, badge, guard, officeUrl, sessionApi, flash, notify } = semo;
  const officeId = document.body.dataset.office;
  const grid = document.getElementById("sessions");
  const inbox = document.getElementById("inbox-items");
  const sessions = new Map();      // session_id -> {s, card, preview, inboxItem}
  const prompts = new Map();       // job_id -> prompt
  let personas = {};

  async function refreshPool() {
    const o = await api("GET", officeUrl(officeId));
    personas = o.personas || {};
    document.getElementById("pool").textContent =
      `pool: ${o.pool.in_use} in use of ${o.pool.capacity} · ${o.agent} on ${o.machine_id}`;
  }
  const poolSoon = semo.coalesce(async () => { await refreshPool(); });

  const preview = semo.coalesce(async (sid) => {
    const entry = sessions.get(sid);
    if (!entry) return;
    const screen = await api("GET", `${sessionApi(entry.s)}/screen`);
    const lines = screen.lines.map((l) => l.replace(/\s+$/, ""));
    while (lines.length && !lines[lines.length - 1]) lines.pop();
    entry.preview.textContent = lines.slice(-10).join("\n");
  });

  const jobPrompt = semo.coalesce(async (jobId) => {
    if (prompts.has(jobId)) return;
    const job = await api("GET", `${officeUrl(officeId)}/jobs/${encodeURIComponent(jobId)}`);
    prompts.set(jobId, job.prompt);
    for (const entry of sessions.values()) if (entry.s.current_job_id === jobId) render(entry.s);
  });

  function render(s) {
    let entry = sessions.get(s.session_id);
    const before = entry && entry.s;
    const fresh = !entry;
    if (fresh) {
      entry = { preview: el("pre", { class: "preview", "aria-label": `screen of ${s.session_id}` }) };
      sessions.set(s.session_id, entry);
    }
    entry.s = s;  // before the first preview: it asks for this session's screen
    if (fresh) preview(s.session_id);
    if (s.status === "terminated") {
      entry.card?.remove(); entry.inboxItem?.remove();
      sessions.delete(s.session_id);
      renderInboxCount();
      return;
    }
    if (s.current_job_id && !prompts.has(s.current_job_id)) jobPrompt(s.current_job_id);
    const persona = personas[s.role];
    const release = guard(async () => { await api("POST", `${sessionApi(s)}/release`); flash(`released ${s.session_id}`); });
    const terminate = guard(async () => {
      if (!confirm(`Terminate ${s.session_id}?`)) return;
      await api("DELETE", sessionApi(s));
      flash(`terminated ${s.session_id}`);
    });
    const node = el("article", { class: `card session s-${s.status}`, dataset: { session: s.session_id } },
      el("header", {}, el("a", { href: semo.sessionPage(s) }, s.session_id), " ", badge(s.status)),
      el("p", { class: "muted" }, `${s.role}${persona ? ` · ${persona.name}` : ""} · ${s.agent}`,
        " · for ", el("span", { dataset: { since: s.last_activity_at } }, semo.ago(s.last_activity_at))),
      el("p", { class: "muted" }, `restarts ${s.restarts} · circuit ${s.circuit}`,
        s.last_error ? ` · ${s.last_error}` : ""),
      s.current_job_id ? el("p", { class: "job" }, "job: ",
        el("span", { class: "prompt-text" }, prompts.get(s.current_job_id) || s.current_job_id)) : null,
      entry.preview,
      el("div", { class: "row" },
        el("a", { class: "button small", href: semo.sessionPage(s) }, "Open"),
        el("button", { class: "small", onclick: release }, "Release"),
        el("button", { class: "small danger", onclick: terminate }, "Terminate")));
    if (entry.card) entry.card.replaceWith(node); else grid.append(node);
    entry.card = node;
    document.getElementById("no-sessions").hidden = sessions.size > 0;

    const waits = s.status === "waiting_input" || !!s.pending_input;
    const waitKey = s.pending_input ? s.pending_input.input_id : (waits ? `${s.status}:${s.current_job_id}` : null);
    if (waitKey !== entry.waitKey) {
      entry.waitKey = waitKey;
      entry.inboxItem?.remove();
      entry.inboxItem = null;
      if (waits) {
        const put = (question) => {
          if (entry.waitKey !== waitKey) return;
          entry.inboxItem?.remove();
          entry.inboxItem = semo.waitingItem(s, question);
          inbox.append(entry.inboxItem);
          renderInboxCount();
        };
        if (s.pending_input) put(null);
        else semo.waitingQuestion(s).then(put, () => put(null));
        if (before && !(before.status === "waiting_input" || before.pending_input)) {
          notify(`${s.session_id} is waiting for you`, (s.pending_input && (s.pending_input.question || s.pending_input.tool)) || s.role,
            semo.sessionPage(s));
        }
      }
      renderInboxCount();
    }
  }

  function renderInboxCount() {
    const n = inbox.children.length;
    document.getElementById("inbox-count").textContent = n;
    document.getElementById("inbox-empty").hidden = n > 0;
  }

  const events = new EventSource(`${officeUrl(officeId)}/events`);
  events.addEventListener("snapshot", async (e) => {
    const { sessions: list } = JSON.parse(e.data);
    await refreshPool().catch(() => {});
    const ids = new Set(list.map((s) => s.session_id));
    for (const [sid, entry] of sessions) {
      if (!ids.has(sid)) render({ ...entry.s, status: "terminated" });
    }
    for (const s of list) render(s);
    grid.removeAttribute("aria-busy");
    document.getElementById("no-sessions").hidden = sessions.size > 0;
  });
  events.addEventListener("session", (e) => {
    const s = JSON.parse(e.data);
    const before = sessions.get(s.session_id);
    render(s);
    if (!before || before.s.status !== s.status) poolSoon("pool");  // in use follows status
  });
  events.addEventListener("output", (e) => preview(JSON.parse(e.data).session_id));
  events.addEventListener("job", (e) => {
    const job = JSON.parse(e.data);
    notify(`job ${semo.WORDS[job.status] || job.status}: ${job.session_id}`, prompts.get(job.job_id) || job.job_id,
      semo.sessionPage({ office_id: officeId, session_id: job.session_id }));
  });

  document.getElementById("session-form").addEventListener("submit", guard(async (e) => {
    e.preventDefault();
    const form = e.target;
    const role = new FormData(form).get("role");
    const button = form.querySelector("button");
    button.disabled = true;
    flash(`starting a ${role} session…`);
    try {
      const s = await api("POST", `${officeUrl(officeId)}/sessions`, { role });
      flash(`${s.session_id} is ${s.status} (${s.source})`);
      form.reset();
    } finally { button.disabled = false; }
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "offices") officesPage();
  else if (page === "office") officePage();
});
