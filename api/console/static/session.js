// A session's page: its terminal live over the attach WebSocket (api/routes/attach.py),
// read-only until the person takes the keyboard; a prompt box, keys, cancel, the job history.
// xterm.js draws with its DOM renderer (no canvas addon is loaded), so the terminal's text
// is in the page for screen readers and tests.
"use strict";

(() => {
  const { api, el, badge, setBadge, guard, flash, notify, sessionApi } = semo;
  const body = document.body.dataset;
  const s = { office_id: body.office, session_id: body.session };
  const base = sessionApi(s);
  const statusNode = document.getElementById("session-status");
  const termState = document.getElementById("term-state");
  const takeKeyboard = document.getElementById("take-keyboard");
  const fitButton = document.getElementById("fit");
  const cancelButton = document.getElementById("cancel");
  const RUNNING = new Set(["busy", "waiting_input"]);

  const term = new Terminal({ disableStdin: true, scrollback: 5000, fontSize: 13,
    convertEol: false, cursorBlink: false, allowProposedApi: false });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(document.getElementById("terminal"));

  const sizeNode = document.getElementById("term-size");
  term.onResize(({ rows, cols }) => { sizeNode.textContent = `${rows}×${cols}`; });

  let ws = null;
  let offset = null;        // the raw output offset the terminal has shown up to
  let status = statusNode.dataset.status;
  let currentJob = null;
  let ended = false;
  let retry = 500;

  function connect() {
    const writable = takeKeyboard.checked;
    const q = new URLSearchParams({ read_only: writable ? "false" : "true" });
    if (offset !== null) q.set("since", String(offset));
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}${base}/attach?${q}`);
    socket.binaryType = "arraybuffer";
    ws = socket;
    termState.textContent = "connecting…";
    socket.onmessage = (m) => {
      if (socket !== ws) return;
      if (m.data instanceof ArrayBuffer) {
        term.write(new Uint8Array(m.data));
        offset += m.data.byteLength;
        return;
      }
      const msg = JSON.parse(m.data);
      if (msg.type === "hello") {
        retry = 500;
        if (offset === null || msg.offset !== offset) {
          if (offset !== null) term.reset();
          offset = msg.offset;
        }
        if (!writable) term.resize(msg.cols, msg.rows);
        termState.textContent = writable ? "you have the keyboard" : "watching (read-only)";
        onStatus(msg.status, null);
      } else if (msg.type === "status") {
        onStatus(msg.status, msg.current_job_id);
      } else if (msg.type === "error") {
        flash(`${msg.detail} (${msg.status})`, "error");
      }
    };
    socket.onclose = (e) => {
      if (socket !== ws) return;
      if (e.code === 1000 && /terminated/.test(e.reason)) {
        ended = true;
        termState.textContent = "the session has ended";
        onStatus("terminated", null);
        return;
      }
      termState.textContent = "disconnected; reconnecting…";
      setTimeout(connect, retry);   // a lost connection, not a poll: backs off to 10 s
      retry = Math.min(retry * 2, 10000);
    };
  }

  term.onData((data) => {
    if (takeKeyboard.checked && ws && ws.readyState === WebSocket.OPEN) {
      ws.send(new TextEncoder().encode(data));
    }
  });

  takeKeyboard.addEventListener("change", () => {
    term.options.disableStdin = !takeKeyboard.checked;
    fitButton.disabled = !takeKeyboard.checked;
    const old = ws;
    ws = null;
    old && old.close();
    if (!ended) connect();   // the same stream from where it was, now read-write (or not)
    if (takeKeyboard.checked) term.focus();
  });

  fitButton.addEventListener("click", () => {
    const dims = fit.proposeDimensions();
    if (!dims || !ws || ws.readyState !== WebSocket.OPEN) return;
    term.resize(dims.cols, dims.rows);
    ws.send(JSON.stringify({ type: "resize", rows: dims.rows, cols: dims.cols }));
  });

  // --- status, jobs and notifications -------------------------------------------------
  function onStatus(next, jobId) {
    const before = status;
    status = next;
    setBadge(statusNode, next);
    cancelButton.hidden = !RUNNING.has(next);  // a job to cancel only while one runs
    if (jobId !== undefined && jobId !== null) currentJob = jobId;
    if (next === "waiting_input" && before !== "waiting_input") {
      notify(`${s.session_id} is waiting for you`, "open the console to answer", location.pathname);
    }
    if (before !== next) {
      refreshSession();
      refreshJobs();
    }
  }

  async function refreshSession() {
    const row = await api("GET", base);
    document.getElementById("session-restarts").textContent = row.restarts;
    document.getElementById("session-circuit").textContent = row.circuit;
    if (row.current_job_id) currentJob = row.current_job_id;
    const pending = document.getElementById("pending");
    pending.replaceChildren();
    if (row.status === "waiting_input" || row.pending_input) {
      const question = row.pending_input ? null : await semo.waitingQuestion(row).catch(() => null);
      pending.append(el("h2", {}, "Waiting for you"), semo.waitingItem(row, question));
      pending.hidden = false;
    } else {
      pending.hidden = true;
    }
  }

  const seenEnded = new Set();
  let firstJobs = true;
  const refreshJobs = semo.coalesce(async () => {
    const { jobs } = await api("GET", `${base}/jobs?limit=20`);
    const list = document.getElementById("jobs");
    list.replaceChildren(...jobs.map(jobItem));
    document.getElementById("no-jobs").hidden = jobs.length > 0;
    for (const job of jobs) {
      if (!job.finished_at || seenEnded.has(job.job_id)) continue;
      seenEnded.add(job.job_id);
      if (!firstJobs) notify(`job ${semo.WORDS[job.status] || job.status}: ${s.session_id}`, job.prompt.slice(0, 120), location.pathname);
    }
    firstJobs = false;
  });

  function jobItem(job) {
    const usage = job.usage
      ? el("p", { class: "usage muted" }, Object.entries(job.usage).filter(([, v]) => v !== null && v !== undefined)
        .map(([k, v]) => `${k.replace(/_/g, " ")} ${v}`).join(" · "))
      : null;
    return el("li", { class: "job", dataset: { job: job.job_id, status: job.status } },
      el("header", {}, badge(job.status), " ", el("code", {}, job.job_id), " ",
        el("span", { class: "muted" }, new Date(job.created_at).toLocaleString())),
      el("pre", { class: "prompt-text" }, job.prompt),
      job.error ? el("p", { class: "error" }, job.error) : null,
      job.completion ? el("p", { class: "muted" }, "completion: ", el("code", {}, JSON.stringify(job.completion))) : null,
      usage,
      job.events.length ? el("details", {}, el("summary", {}, `${job.events.length} event${job.events.length === 1 ? "" : "s"}`),
        el("ul", { class: "events" }, job.events.map((ev) => el("li", {},
          el("span", { class: "muted" }, new Date(ev.at).toLocaleTimeString()), " ", el("strong", {}, ev.kind), " ",
          el("code", {}, JSON.stringify(ev.data)))))) : null);
  }

  // --- actions -----------------------------------------------------------------------
  document.getElementById("prompt-form").addEventListener("submit", guard(async (e) => {
    e.preventDefault();
    const prompt = document.getElementById("prompt").value;
    const out = document.getElementById("prompt-result");
    const r = await api("POST", `${base}/prompt`, { prompt });
    out.textContent = `sent: job ${r.job_id}`;
    document.getElementById("prompt").value = "";
    currentJob = r.job_id;
    refreshJobs();
  }));

  for (const button of document.querySelectorAll("[data-key]")) {
    button.addEventListener("click", guard(async () => {
      await api("POST", `${base}/keys`, { keys: [button.dataset.key] });
    }));
  }

  cancelButton.addEventListener("click", guard(async () => {
    const r = await api("POST", `${base}/cancel`);
    flash(`cancelled; session is ${r.status}`);
    refreshJobs();
  }));

  connect();
  refreshSession().catch(() => {});
  refreshJobs();
})();
