/* The grid like a spreadsheet and the boards beside it (formwork/ui/grid.py):
   - columns: drag to reorder in the "Columns" panel (SortableJS), drag a header's edge to resize, frozen first
     columns kept in view while scrolling sideways; every change is posted and kept for the user;
   - grouped rows: a header per group folds its rows away;
   - keyboard: arrows move the focused cell, Shift+arrows extend a rectangle, Enter edits (or opens the record
     from a read-only cell), Escape cancels an edit (app.js), Ctrl/Cmd+C copies the rectangle as TSV and
     Ctrl/Cmd+V pastes TSV into cells through the server's normal update path (a refused row changes nothing
     and says why next to its cells);
   - attachment cells take files from their button, by drag-and-drop and by paste;
   - kanban: dragging a card near the board's edge scrolls it to off-screen columns. */
(function () {
  "use strict";

  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }
  function grid() { return document.querySelector("table.grid"); }
  function say(text) {
    var box = document.getElementById("grid-msg");
    if (box) box.textContent = text;
  }

  // --- columns: reorder, resize, freeze ---------------------------------------------------------------
  function initColumns(root) {
    var lists = (root.querySelectorAll ? root : document).querySelectorAll(".col-list");
    lists.forEach(function (list) {
      if (list.dataset.sortable || typeof Sortable === "undefined") return;
      list.dataset.sortable = "1";
      Sortable.create(list, {
        handle: ".handle", animation: 120,
        onEnd: function (ev) {
          if (ev.oldIndex === ev.newIndex) return;
          list.closest("form").dispatchEvent(new Event("change", { bubbles: true }));
        }
      });
    });
    freeze();
  }

  function freeze() {
    var table = grid();
    if (!table) return;
    var n = parseInt(table.dataset.freeze || "0", 10);
    table.querySelectorAll(".frozen-cell").forEach(function (c) {
      c.classList.remove("frozen-cell", "frozen-last"); c.style.left = "";
    });
    if (!n || window.matchMedia("(max-width: 480px)").matches) return;
    var head = table.tHead.rows[0], lefts = [], x = 0;
    for (var i = 0; i <= n && i < head.cells.length; i++) { lefts.push(x); x += head.cells[i].getBoundingClientRect().width; }
    table.querySelectorAll("tr").forEach(function (tr) {
      if (tr.cells.length === 1) return;  // "load more", messages
      for (var i = 0; i < lefts.length && i < tr.cells.length; i++) {
        var c = tr.cells[i];
        c.classList.add("frozen-cell");
        if (i === lefts.length - 1) c.classList.add("frozen-last");
        c.style.left = lefts[i] + "px";
      }
    });
  }

  var resizing = null;
  document.addEventListener("mousedown", function (e) {
    var handle = e.target.closest && e.target.closest("table.grid th .col-resize");
    if (!handle) return;
    e.preventDefault();
    var th = handle.closest("th");
    resizing = { th: th, x: e.clientX, w: th.getBoundingClientRect().width };
    document.body.classList.add("col-resizing");
  });
  document.addEventListener("mousemove", function (e) {
    if (!resizing) return;
    var w = Math.max(40, Math.min(2000, Math.round(resizing.w + e.clientX - resizing.x)));
    var s = resizing.th.style;
    s.width = s.minWidth = s.maxWidth = w + "px";
  });
  document.addEventListener("mouseup", function () {
    if (!resizing) return;
    var th = resizing.th;
    resizing = null;
    document.body.classList.remove("col-resizing");
    saveWidth(th);
  });
  // from the keyboard: the focused edge moves with the left and right arrows
  var widthTimer = null;
  document.addEventListener("keydown", function (e) {
    var handle = e.target.closest && e.target.closest("table.grid th .col-resize");
    if (!handle || (e.key !== "ArrowLeft" && e.key !== "ArrowRight")) return;
    e.preventDefault();
    var th = handle.closest("th"), w = th.getBoundingClientRect().width + (e.key === "ArrowRight" ? 20 : -20);
    w = Math.max(40, Math.min(2000, Math.round(w)));
    th.style.width = th.style.minWidth = th.style.maxWidth = w + "px";
    clearTimeout(widthTimer);
    widthTimer = setTimeout(function () { saveWidth(th); }, 400);
  });
  function saveWidth(th) {
    var table = th.closest("table.grid");
    freeze();
    var body = new FormData();
    body.append("view", table.dataset.view || "");
    body.append("quiet", "1");
    body.append("w." + th.dataset.f, parseInt(th.style.width, 10));
    fetch(table.dataset.base + "/grid-layout", { method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf() } });
  }
  // a click on a resize handle must not sort
  document.addEventListener("click", function (e) {
    if (e.target.closest && e.target.closest("table.grid th .col-resize")) { e.preventDefault(); e.stopPropagation(); }
  }, true);

  // keyboard users reorder the columns list with Alt+Up / Alt+Down on a column's checkbox
  document.addEventListener("keydown", function (e) {
    if (!e.altKey || (e.key !== "ArrowUp" && e.key !== "ArrowDown")) return;
    var li = e.target.closest && e.target.closest(".col-list li");
    if (!li) return;
    e.preventDefault();
    var other = e.key === "ArrowUp" ? li.previousElementSibling : li.nextElementSibling;
    if (!other) return;
    var key = li.dataset.key;
    if (e.key === "ArrowUp") other.before(li); else other.after(li);
    li.closest("form").dispatchEvent(new Event("change", { bubbles: true }));
    document.addEventListener("htmx:afterSettle", function refocus() {
      document.removeEventListener("htmx:afterSettle", refocus);
      var box = document.querySelector('.col-list li[data-key="' + key + '"] input[type=checkbox]');
      if (box) box.focus();
    });
  });

  // the group picker sits outside the columns panel but belongs to its form
  document.addEventListener("change", function (e) {
    var el = e.target;
    if (!el || !el.getAttribute || el.getAttribute("form") !== "grid-layout") return;
    var form = document.getElementById("grid-layout");
    if (form) form.dispatchEvent(new Event("change", { bubbles: true }));
  });

  // the columns panel stays open while its changes redraw the grid; a click elsewhere closes the popovers
  var panelOpen = false;
  document.addEventListener("htmx:beforeSwap", function (e) {
    var t = e.detail && e.detail.target;
    if (t && t.id === "grid") { var d = t.querySelector("details.col-pop"); panelOpen = !!(d && d.open); }
    if (t && t.id === "board") {  // the board's card-fields panel stays open while a card moves
      var b = t.querySelector("details.board-pop");
      boardPanel = !!(b && b.open);
    }
  });
  var boardPanel = false;
  document.addEventListener("htmx:afterSwap", function (e) {
    var t = e.detail && e.detail.target;
    if (!boardPanel || !t || (t.id !== "board" && document.contains(t))) return;
    var d = document.querySelector("#board details.board-pop");
    if (d) d.open = true;
    boardPanel = false;
  });
  document.addEventListener("htmx:afterSwap", function (e) {
    var t = e.detail && e.detail.target;
    if (t && (t.id === "grid" || !document.contains(t)) && panelOpen) {
      var d = document.querySelector("#grid details.col-pop");
      if (d) d.open = true;
      panelOpen = false;
    }
  });
  document.addEventListener("click", function (e) {
    document.querySelectorAll(".grid-tools details[open], .board-tools details[open]").forEach(function (d) {
      if (!d.contains(e.target)) d.open = false;
    });
  });

  // --- groups -------------------------------------------------------------------------------------------
  function groupRows(head) {
    var out = [], tr = head.nextElementSibling;
    while (tr && !tr.classList.contains("group-head") && !tr.classList.contains("more")) { out.push(tr); tr = tr.nextElementSibling; }
    return out;
  }
  document.addEventListener("click", function (e) {
    var btn = e.target.closest && e.target.closest("table.grid .group-toggle");
    if (!btn) return;
    var head = btn.closest("tr"), open = btn.getAttribute("aria-expanded") !== "true";
    btn.setAttribute("aria-expanded", open ? "true" : "false");
    btn.textContent = open ? "▾" : "▸";
    head.classList.toggle("collapsed", !open);
    groupRows(head).forEach(function (tr) { tr.hidden = !open; });
  });
  function dedupeGroups() {  // the next page's first header continues the group above it
    document.querySelectorAll("table.grid tr.group-head").forEach(function (head) {
      var prev = head.previousElementSibling;
      if (prev && !prev.classList.contains("group-head") && prev.dataset.g === head.dataset.g) head.remove();
    });
  }

  // --- keyboard: a focused cell, a rectangle, copy and paste --------------------------------------------
  var cur = null, anchor = null, last = null;
  function dataRows(table) {
    return Array.prototype.filter.call(table.tBodies[0].rows, function (tr) { return tr.dataset.id && !tr.hidden; });
  }
  function cellsOf(tr) { return Array.prototype.filter.call(tr.cells, function (c) { return c.dataset.f; }); }
  function pos(td) {
    var tr = td.closest("tr"), table = td.closest("table.grid");
    return { r: dataRows(table).indexOf(tr), c: cellsOf(tr).indexOf(td) };
  }
  function at(table, r, c) {
    var rows = dataRows(table);
    if (r < 0 || r >= rows.length) return null;
    var cells = cellsOf(rows[r]);
    return c >= 0 && c < cells.length ? cells[c] : null;
  }
  function focusCell(td, extend) {
    if (!td) return;
    if (cur) cur.tabIndex = -1;
    cur = td;
    td.tabIndex = 0;
    td.focus({ preventScroll: false });
    if (!extend) anchor = td;
    last = { id: td.closest("tr").dataset.id, f: td.dataset.f };
    mark();
  }
  function rect() {
    if (!cur || !anchor || !document.contains(anchor)) return null;
    var a = pos(anchor), b = pos(cur);
    return { r0: Math.min(a.r, b.r), r1: Math.max(a.r, b.r), c0: Math.min(a.c, b.c), c1: Math.max(a.c, b.c) };
  }
  function mark() {
    var table = grid();
    if (!table) return;
    table.querySelectorAll("td.in-sel, td.cur").forEach(function (c) { c.classList.remove("in-sel", "cur"); });
    if (!cur) return;
    cur.classList.add("cur");
    var q = rect();
    if (!q || (q.r0 === q.r1 && q.c0 === q.c1)) return;
    for (var r = q.r0; r <= q.r1; r++) for (var c = q.c0; c <= q.c1; c++) { var td = at(table, r, c); if (td) td.classList.add("in-sel"); }
  }
  function inEditor(el) { return el && el.closest && el.closest("input,select,textarea,button,form.cell-form"); }

  document.addEventListener("focusin", function (e) {
    var td = e.target.closest && e.target.closest("table.grid tbody td[data-f]");
    if (td && e.target === td && td !== cur) focusCell(td, false);
  });
  document.addEventListener("mousedown", function (e) {
    var td = e.target.closest && e.target.closest("table.grid tbody td[data-f]");
    if (!td || inEditor(e.target)) return;
    if (e.shiftKey && cur) { e.preventDefault(); focusCell(td, true); return; }
    focusCell(td, false);
  });

  document.addEventListener("keydown", function (e) {
    var td = e.target.closest && e.target.closest("table.grid tbody td[data-f]");
    if (!td || e.target !== td) return;
    var table = td.closest("table.grid"), p = pos(td), moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (moves[e.key]) {
      e.preventDefault();
      var from = e.shiftKey ? pos(cur || td) : p, m = moves[e.key];
      var next = at(table, from.r + m[0], from.c + m[1]);
      if (next) focusCell(next, e.shiftKey);
      return;
    }
    if (e.key === "Tab" && !e.shiftKey) {
      var right = at(table, p.r, p.c + 1);
      if (right) { e.preventDefault(); focusCell(right, false); }
      return;
    }
    if (e.key === "Enter" || e.key === "F2") {
      e.preventDefault();
      if (td.hasAttribute("data-ro")) {
        var link = td.querySelector("a.primary-link") || td.closest("tr").querySelector("a.open-rec");
        if (link) link.click();
      } else {
        td.click();  // app.js opens the cell's editor
      }
      return;
    }
    if (e.key === "Escape") { anchor = cur; mark(); }
  });

  // back to the cell after its editor saved or was cancelled (the row was swapped)
  document.addEventListener("htmx:afterSwap", function (e) {
    var t = e.detail && e.detail.target;
    if (t && t.id === "rows") dedupeGroups();
    freeze();
    if (!last) return;
    var active = document.activeElement;
    if (active && active !== document.body && document.contains(active) && active.closest("table.grid")) return;
    var table = grid();
    if (!table) return;
    var tr = table.querySelector('tbody tr[data-id="' + last.id + '"]');
    var td = tr && tr.querySelector('td[data-f="' + last.f + '"]');
    if (td && !td.classList.contains("editing")) focusCell(td, false);
  });

  function tsvCell(s) {
    s = (s || "").replace(/\u00a0/g, " ").trim();
    return /[\t\n"]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function parseTsv(text) {
    var rows = [], row = [], cell = "", i = 0, q = false;
    text = text.replace(/\r\n?/g, "\n");
    while (i < text.length) {
      var ch = text[i];
      if (q) {
        if (ch === '"' && text[i + 1] === '"') { cell += '"'; i += 2; continue; }
        if (ch === '"') { q = false; i++; continue; }
        cell += ch; i++; continue;
      }
      if (ch === '"' && cell === "") { q = true; i++; continue; }
      if (ch === "\t") { row.push(cell); cell = ""; i++; continue; }
      if (ch === "\n") { row.push(cell); rows.push(row); row = []; cell = ""; i++; continue; }
      cell += ch; i++;
    }
    if (cell !== "" || row.length) { row.push(cell); rows.push(row); }
    return rows;
  }

  document.addEventListener("copy", function (e) {
    var active = document.activeElement;
    if (!cur || active !== cur || !e.clipboardData) return;
    var table = grid(), q = rect(), lines = [], n = 0;
    for (var r = q.r0; r <= q.r1; r++) {
      var line = [];
      for (var c = q.c0; c <= q.c1; c++) { var td = at(table, r, c); line.push(tsvCell(td ? td.innerText : "")); n++; }
      lines.push(line.join("\t"));
    }
    e.clipboardData.setData("text/plain", lines.join("\n"));
    e.preventDefault();
    say((table.dataset.copied || "").replace("{n}", n));
  });

  // --- attachment cells: files from the cell's button, dropped onto the cell or pasted into it go up as one
  // update of the record (the record page's path and limits); the row comes back with its thumbnails, or
  // with the refusal naming the limit under it --------------------------------------------------------
  function cellError(td, text) {
    var err = document.createElement("div");
    err.className = "cell-err";
    err.setAttribute("role", "alert");
    err.textContent = text;
    td.classList.add("has-err");
    td.appendChild(err);
  }
  function sendFiles(td, list) {
    var btn = td && td.querySelector(".cell-upload");
    if (!btn || !list || !list.length || !window.htmx) return;
    var tr = td.closest("tr"), table = td.closest("table.grid");
    td.querySelectorAll(".cell-err").forEach(function (x) { x.remove(); });
    td.classList.remove("has-err");
    var bad = window.formworkFileProblems ? window.formworkFileProblems(btn.dataset, list) : [];  // files.js
    if (bad.length) { cellError(td, bad.join(" ")); return; }
    var next = tr.nextElementSibling;
    if (next && next.classList.contains("row-msg")) next.remove();
    var form = document.createElement("form"), input = document.createElement("input"), view = document.createElement("input");
    form.hidden = true;
    form.setAttribute("hx-post", table.dataset.base + "/" + tr.dataset.id + "/cell/" + encodeURIComponent(td.dataset.f) + "/files");
    form.setAttribute("hx-encoding", "multipart/form-data");
    form.setAttribute("hx-target", "closest tr");
    form.setAttribute("hx-swap", "outerHTML");
    input.type = "file"; input.name = "files"; input.multiple = true;
    var dt = new DataTransfer();
    Array.prototype.forEach.call(list, function (f) { dt.items.add(f); });
    input.files = dt.files;
    view.type = "hidden"; view.name = "view"; view.value = table.dataset.view || "";
    form.appendChild(input); form.appendChild(view);
    td.appendChild(form);
    td.setAttribute("aria-busy", "true");
    last = { id: tr.dataset.id, f: td.dataset.f };
    htmx.process(form);
    htmx.trigger(form, "submit");
  }
  document.addEventListener("click", function (e) {
    var btn = e.target.closest && e.target.closest("table.grid .cell-upload");
    if (!btn) return;
    e.preventDefault();
    var td = btn.closest("td"), pick = document.createElement("input");
    pick.type = "file"; pick.multiple = true;
    if (btn.dataset.types) pick.accept = btn.dataset.types;
    pick.addEventListener("change", function () { sendFiles(td, pick.files); });
    pick.click();
  });
  function hasFiles(e) {
    return e.dataTransfer && Array.prototype.indexOf.call(e.dataTransfer.types, "Files") >= 0;
  }
  document.addEventListener("dragover", function (e) {
    var td = e.target.closest && e.target.closest("table.grid td[data-f]");
    if (!td || !td.querySelector(".cell-upload") || !hasFiles(e)) return;
    e.preventDefault();
    td.classList.add("over");
  });
  document.addEventListener("dragleave", function (e) {
    var td = e.target.closest && e.target.closest("table.grid td.over");
    if (td && !td.contains(e.relatedTarget)) td.classList.remove("over");
  });
  document.addEventListener("drop", function (e) {
    var td = e.target.closest && e.target.closest("table.grid td[data-f]");
    if (!td || !td.querySelector(".cell-upload") || !e.dataTransfer || !e.dataTransfer.files.length) return;
    e.preventDefault();
    td.classList.remove("over");
    sendFiles(td, e.dataTransfer.files);
  });

  document.addEventListener("paste", function (e) {
    var active = document.activeElement;
    if (!cur || active !== cur || !e.clipboardData) return;
    if (e.clipboardData.files && e.clipboardData.files.length) {  // a screenshot or copied files
      if (cur.querySelector(".cell-upload")) { e.preventDefault(); sendFiles(cur, e.clipboardData.files); }
      return;
    }
    var text = e.clipboardData.getData("text/plain");
    if (!text) return;
    e.preventDefault();
    var table = grid(), rows = parseTsv(text), start = pos(cur), body = new FormData(), touched = [];
    var q = rect();
    if (q) start = { r: q.r0, c: q.c0 };
    if (rows.length === 1 && rows[0].length === 1 && q) {  // one value fills the whole rectangle
      var fill = [];
      for (var rr = q.r0; rr <= q.r1; rr++) { var line = []; for (var cc = q.c0; cc <= q.c1; cc++) line.push(rows[0][0]); fill.push(line); }
      rows = fill;
    }
    rows.forEach(function (vals, i) {
      vals.forEach(function (v, j) {
        var td = at(table, start.r + i, start.c + j);
        if (!td) return;
        body.append("cell", td.closest("tr").dataset.id + ":" + td.dataset.f);
        body.append("value", v);
        touched.push(td);
      });
    });
    if (!touched.length) return;
    body.append("view", table.dataset.view || "");
    table.querySelectorAll(".cell-err").forEach(function (x) { x.remove(); });
    table.querySelectorAll("td.has-err").forEach(function (x) { x.classList.remove("has-err"); x.removeAttribute("aria-invalid"); });
    table.setAttribute("aria-busy", "true");
    fetch(table.dataset.base + "/paste", { method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf() } })
      .then(function (r) { return r.json(); })
      .then(function (res) {
        Object.keys(res.rows || {}).forEach(function (id) {
          var tr = table.querySelector('tbody tr[data-id="' + id + '"]');
          if (!tr) return;
          var tmp = document.createElement("tbody");
          tmp.innerHTML = res.rows[id];
          var fresh = tmp.querySelector("tr[data-id]");
          if (fresh) { tr.replaceWith(fresh); if (window.htmx) htmx.process(fresh); }
        });
        Object.keys(res.errors || {}).forEach(function (id) {
          var tr = table.querySelector('tbody tr[data-id="' + id + '"]');
          if (!tr) return;
          Object.keys(res.errors[id]).forEach(function (f) {
            var td = tr.querySelector('td[data-f="' + f + '"]');
            if (!td) return;
            var err = document.createElement("div");
            err.className = "cell-err";
            err.setAttribute("role", "alert");
            err.textContent = res.errors[id][f].join("; ");
            td.classList.add("has-err");
            td.setAttribute("aria-invalid", "true");
            td.appendChild(err);
          });
        });
        say(res.message || "");
        var summary = document.getElementById("summary");  // totals over the changed values
        if (summary && Object.keys(res.rows || {}).length) summary.dispatchEvent(new Event("change"));
        table.setAttribute("aria-busy", "false");
        table.dispatchEvent(new CustomEvent("grid:pasted", { bubbles: true }));
        if (last) {
          var tr = table.querySelector('tbody tr[data-id="' + last.id + '"]');
          var td = tr && tr.querySelector('td[data-f="' + last.f + '"]');
          if (td) focusCell(td, false);
        }
      });
  });

  // --- kanban: scroll to off-screen columns while dragging a card ------------------------------------
  var dragging = false;
  document.addEventListener("dragstart", function (e) { if (e.target.closest && e.target.closest(".board .card")) dragging = true; });
  document.addEventListener("dragend", function () { dragging = false; });
  document.addEventListener("dragover", function (e) {
    if (!dragging) return;
    var board = document.querySelector(".board");
    if (!board) return;
    var box = board.getBoundingClientRect(), edge = Math.min(80, box.width / 5);
    if (e.clientX > box.right - edge) board.scrollLeft += 24;
    else if (e.clientX < box.left + edge) board.scrollLeft -= 24;
  });

  // cells are focusable one at a time (roving tabindex)
  function prepare() {
    var table = grid();
    if (!table) return;
    table.querySelectorAll("tbody td[data-f]:not([tabindex])").forEach(function (td) { td.tabIndex = -1; });
    var first = table.querySelector("tbody td[data-f]");
    if (first && !table.querySelector('tbody td[data-f][tabindex="0"]')) first.tabIndex = 0;
  }
  function init(root) { initColumns(root || document); prepare(); }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (e) { init(e.detail.elt); });
  window.addEventListener("resize", freeze);
})();
