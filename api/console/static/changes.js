// A session's Changes view (SPEC §9): the files the agent changed with their counts, the diff
// per file with line numbers (added and removed lines coloured), a comment box on any line,
// *Send review* (one prompt quoting every comment) and *Hand off* (commit, push, maybe a PR).
// DOM is built with el() (textContent only): no diff text becomes markup.
"use strict";

(() => {
  const { api, el, guard, flash, sessionApi } = semo;
  const body = document.body.dataset;
  const base = sessionApi({ office_id: body.office, session_id: body.session });
  const summary = document.getElementById("changes-summary");
  const fileList = document.getElementById("change-files");
  const diffBox = document.getElementById("diff");
  const sendButton = document.getElementById("send-review");
  const countNode = document.getElementById("review-count");
  const WORDS = { added: "A", modified: "M", deleted: "D", renamed: "R" };
  let comments = [];        // [{path, line, text}] in the order they were written

  // One file's part of a unified diff as rows: {kind: hunk|add|del|ctx|meta, old, new, text}
  function rowsOf(lines) {
    const rows = [];
    let o = 0, n = 0, inHunk = false;
    for (const line of lines) {
      const m = /^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@/.exec(line);
      if (m) {
        o = +m[1]; n = +m[2]; inHunk = true;
        rows.push({ kind: "hunk", text: line });
      } else if (!inHunk) {
        if (/^Binary files/.test(line)) rows.push({ kind: "meta", text: line });
      } else if (line.startsWith("+")) {
        rows.push({ kind: "add", new: n++, text: line.slice(1) });
      } else if (line.startsWith("-")) {
        rows.push({ kind: "del", old: o++, text: line.slice(1) });
      } else if (line.startsWith(" ")) {
        rows.push({ kind: "ctx", old: o++, new: n++, text: line.slice(1) });
      }
    }
    return rows;
  }

  // The diff split at each `diff --git`: one block of lines per file, in the files' order
  function blocksOf(diff) {
    const blocks = [];
    for (const line of diff.split("\n")) {
      if (line.startsWith("diff --git ")) blocks.push([]);
      else if (blocks.length) blocks[blocks.length - 1].push(line);
    }
    return blocks;
  }

  function fileId(i) { return `change-file-${i}`; }

  function render(changes) {
    const files = changes.files;
    summary.textContent = `${changes.branch} from ${changes.base.ref} (${changes.base.commit.slice(0, 12)})`
      + ` · ${files.length} file${files.length === 1 ? "" : "s"} · ${changes.commits.length} commit${changes.commits.length === 1 ? "" : "s"}`;
    fileList.replaceChildren(...files.map((f, i) => el("li", { dataset: { path: f.path, status: f.status } },
      el("span", { class: `fstatus fs-${f.status}`, title: f.status }, WORDS[f.status] || "?"), " ",
      el("a", { href: `#${fileId(i)}` }, f.old_path ? `${f.old_path} → ${f.path}` : f.path), " ",
      f.binary ? el("span", { class: "muted" }, "binary")
        : [el("span", { class: "plus" }, `+${f.additions}`), " ", el("span", { class: "minus" }, `−${f.deletions}`)])));
    if (!files.length) fileList.append(el("li", { class: "muted" }, "No changes yet."));
    const blocks = blocksOf(changes.diff);
    diffBox.replaceChildren(...files.map((f, i) => fileBlock(f, blocks[i] || [], i)));
    if (changes.truncated) {
      diffBox.append(el("p", { class: "muted" }, "The diff was cut short here (it is larger than the server shows at once)."));
    }
    showComments();
  }

  function fileBlock(file, lines, i) {
    const rows = rowsOf(lines);
    const table = el("table", { class: "diff-table" }, el("tbody", {}, rows.map((r) => rowOf(file, r))));
    return el("section", { class: "diff-file", id: fileId(i), dataset: { path: file.path } },
      el("header", {}, el("code", {}, file.path), " ", el("span", { class: "muted" }, file.status)),
      rows.length ? el("div", { class: "diff-scroll" }, table)
        : el("p", { class: "muted" }, file.binary ? "Binary file." : "No lines to show."));
  }

  function rowOf(file, r) {
    if (r.kind === "hunk" || r.kind === "meta") {
      return el("tr", { class: `d-${r.kind}` }, el("td", { colspan: 3 }, r.text));
    }
    // a comment names a line of the file as it is now; a deleted file's lines are its old ones
    const line = file.status === "deleted" ? r.old : r.new;
    const attrs = { class: `d-${r.kind}`, dataset: {} };
    if (line !== undefined) {
      attrs.dataset.line = String(line);
      attrs.title = `comment on ${file.path}:${line}`;
      attrs.tabindex = "0";
    }
    const row = el("tr", attrs,
      el("td", { class: "ln" }, r.old ?? ""), el("td", { class: "ln" }, r.new ?? ""),
      el("td", { class: "code" }, el("span", { class: "sign" }, r.kind === "add" ? "+" : r.kind === "del" ? "-" : " "), r.text));
    if (line !== undefined) {
      const open = () => openBox(row, file.path, line);
      row.addEventListener("click", open);
      row.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    }
    return row;
  }

  function openBox(row, path, line) {
    const next = row.nextElementSibling;
    if (next && next.classList.contains("comment-box")) { next.querySelector("textarea").focus(); return; }
    const text = el("textarea", { rows: 3, "aria-label": `comment on ${path}:${line}` });
    const box = el("tr", { class: "comment-box" }, el("td", { colspan: 3 },
      el("div", { class: "stack" }, el("strong", {}, `${path}:${line}`), text,
        el("div", { class: "row" },
          el("button", { type: "button", class: "primary small", onclick: () => {
            if (!text.value.trim()) { text.focus(); return; }
            comments.push({ path, line, text: text.value.trim() });
            box.remove();
            showComments();
          } }, "Add comment"),
          el("button", { type: "button", class: "small", onclick: () => box.remove() }, "Cancel")))));
    row.after(box);
    text.focus();
  }

  // the written comments, under their lines, each removable
  function showComments() {
    for (const old of diffBox.querySelectorAll("tr.comment")) old.remove();
    comments.forEach((c, i) => {
      const file = [...diffBox.querySelectorAll(".diff-file")].find((s) => s.dataset.path === c.path);
      const row = file && file.querySelector(`tr[data-line="${c.line}"]`);
      if (!row) return;
      let at = row;
      while (at.nextElementSibling && at.nextElementSibling.matches("tr.comment, tr.comment-box")) at = at.nextElementSibling;
      at.after(el("tr", { class: "comment" }, el("td", { colspan: 3 },
        el("div", { class: "row" }, el("span", { class: "comment-text" }, c.text), el("span", { class: "spacer" }),
          el("button", { type: "button", class: "small", onclick: () => { comments.splice(i, 1); showComments(); } }, "Remove")))));
    });
    sendButton.disabled = comments.length === 0;
    countNode.textContent = comments.length
      ? `${comments.length} comment${comments.length === 1 ? "" : "s"} to send.` : "No comments yet.";
  }

  const load = guard(async () => {
    summary.textContent = "reading…";
    try {
      render(await api("GET", `${base}/changes`));
    } catch (err) {
      summary.textContent = err.message;
      throw err;
    }
  });

  document.getElementById("changes-refresh").addEventListener("click", load);

  document.getElementById("review-form").addEventListener("submit", guard(async (e) => {
    e.preventDefault();
    const text = document.getElementById("review-summary").value.trim();
    const r = await api("POST", `${base}/review`, { comments, ...(text ? { summary: text } : {}) });
    flash(`review sent: job ${r.job_id}`);
    comments = [];
    document.getElementById("review-summary").value = "";
    showComments();
    countNode.textContent = `Sent as job ${r.job_id}.`;
  }));

  document.getElementById("handoff-form").addEventListener("submit", guard(async (e) => {
    e.preventDefault();
    const message = document.getElementById("handoff-message").value.trim();
    const button = document.getElementById("handoff");
    button.disabled = true;
    try {
      const r = await api("POST", `${base}/handoff`, {
        pull_request: document.getElementById("handoff-pr").checked, ...(message ? { message } : {}) });
      const out = document.getElementById("handoff-result");
      out.replaceChildren(`Handed off: ${r.branch} at ${r.commit.slice(0, 12)}, `,
        r.pushed ? `pushed to ${r.remote}` : "not pushed",
        r.pull_request_url ? [" · ", el("a", { href: r.pull_request_url, rel: "noopener" }, "pull request")] : "");
      out.hidden = false;
      load();
    } finally {
      button.disabled = false;
    }
  }));

  load();
})();
