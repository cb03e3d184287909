/* Formwork pages: small behaviours htmx does not cover (inline-edit clicks, drag and drop, pickers). */
(function () {
  "use strict";
  // The settle signal: <body data-htmx-inflight data-htmx-settled> count htmx requests under way and those
  // whose swap has settled (new content processed by htmx), so a test or a script can wait for the page's
  // own "done" instead of guessing with sleeps. Both appear once htmx has processed the page.
  var inflight = 0, settled = 0, swapped = new WeakSet(), finished = new WeakSet();
  function publish() {
    document.body.dataset.htmxInflight = String(inflight);
    document.body.dataset.htmxSettled = String(settled);
  }
  function finish(xhr) {
    if (!xhr || finished.has(xhr)) return;
    finished.add(xhr);
    inflight = Math.max(0, inflight - 1);
    settled++;
    publish();
  }
  document.addEventListener("htmx:load", function (e) {
    if (e.target === document.body && !document.body.dataset.htmxSettled) publish();
  });
  document.addEventListener("htmx:beforeRequest", function () { inflight++; publish(); });
  document.addEventListener("htmx:afterSwap", function (e) { if (e.detail.xhr) swapped.add(e.detail.xhr); });
  // a swapped response is done once settled; one that swapped nothing (204, aborted, network error) at its end
  document.addEventListener("htmx:afterSettle", function (e) { finish(e.detail.xhr); });
  document.addEventListener("htmx:afterRequest", function (e) {
    if (!swapped.has(e.detail.xhr)) finish(e.detail.xhr);
  });
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }

  // grid: click a cell to edit it (the row carries its version for If-Match)
  document.addEventListener("click", function (e) {
    var td = e.target.closest("table.grid tbody td[data-f]");
    if (!td || td.hasAttribute("data-ro") || td.classList.contains("editing") || e.target.closest("a,input,button,select,label")) return;
    var tr = td.closest("tr"), table = td.closest("table.grid");
    var url = table.dataset.base + "/" + tr.dataset.id + "/row?edit=" + encodeURIComponent(td.dataset.f) +
      "&v=" + encodeURIComponent(tr.dataset.v) + "&view=" + encodeURIComponent(table.dataset.view || "");
    htmx.ajax("GET", url, { target: tr, swap: "outerHTML" }).then(function () {
      var row = document.querySelector('table.grid tr[data-id="' + tr.dataset.id + '"] td.editing');
      var input = row && row.querySelector("input:not([type=hidden]),select,textarea");
      if (input) input.focus();
    });
  });
  // Escape cancels an inline edit
  document.addEventListener("keydown", function (e) {
    if (e.key !== "Escape") return;
    var form = e.target.closest && e.target.closest("form.cell-form");
    if (form) { var c = form.querySelector("button[hx-get]"); if (c) c.click(); }
  });

  // grid: row selection enables bulk delete
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t.classList && t.classList.contains("select-all")) {
      document.querySelectorAll('table.grid tbody input[name="ids"]').forEach(function (c) { c.checked = t.checked; });
    }
    if (t.name === "ids" || (t.classList && t.classList.contains("select-all"))) {
      var any = document.querySelector('table.grid tbody input[name="ids"]:checked');
      var b = document.getElementById("bulk-delete");
      if (b) b.disabled = !any;
      var a = document.getElementById("bulk-apply");
      if (a) a.disabled = !any;
    }
  });
  document.addEventListener("htmx:configRequest", function (e) {
    // the bulk form sends the checked ids (the checkboxes live in the table, linked by form="bulk")
    if (e.detail.elt && (e.detail.elt.id === "bulk" || e.detail.elt.id === "bulk-edit")) {
      var ids = [];
      document.querySelectorAll('input[name="ids"][form="bulk"]:checked').forEach(function (c) { ids.push(c.value); });
      e.detail.parameters["ids"] = ids;
    }
    if (!e.detail.headers["X-CSRF-Token"]) e.detail.headers["X-CSRF-Token"] = csrf();
  });

  // kanban: drag a card onto another column = choose that column in its "move to" select
  var dragged = null;
  document.addEventListener("dragstart", function (e) {
    var card = e.target.closest && e.target.closest(".card[draggable]");
    if (!card) return;
    dragged = card;
    card.classList.add("dragging");
    e.dataTransfer.effectAllowed = "move";
    e.dataTransfer.setData("text/plain", card.dataset.id);
  });
  document.addEventListener("dragend", function () {
    if (dragged) dragged.classList.remove("dragging");
    document.querySelectorAll(".column.over").forEach(function (c) { c.classList.remove("over"); });
    dragged = null;
  });
  function mayDrop(col) {  // a state flow may allow only some columns: the card's select lists them
    var sel = dragged.querySelector('form.move select[name="value"]');
    return sel && Array.prototype.some.call(sel.options, function (o) { return o.value === col.dataset.value; });
  }
  document.addEventListener("dragover", function (e) {
    var col = e.target.closest && e.target.closest(".column");
    if (!col || !dragged || !mayDrop(col)) return;
    e.preventDefault();
    document.querySelectorAll(".column.over").forEach(function (c) { if (c !== col) c.classList.remove("over"); });
    col.classList.add("over");
  });
  document.addEventListener("drop", function (e) {
    var col = e.target.closest && e.target.closest(".column");
    if (!col || !dragged) return;
    e.preventDefault();
    var sel = dragged.querySelector('form.move select[name="value"]');
    if (sel && mayDrop(col) && sel.value !== col.dataset.value) {
      sel.value = col.dataset.value;
      sel.dispatchEvent(new Event("change", { bubbles: true }));
    }
  });

  // link picker: choose a search result → a chip holding a hidden input with the record id
  document.addEventListener("click", function (e) {
    var pick = e.target.closest(".pick");
    if (pick) {
      var picker = pick.closest(".picker"), box = picker.querySelector(".picked");
      if (picker.dataset.multiple !== "1") box.innerHTML = "";
      if (!box.querySelector('input[value="' + pick.dataset.id + '"]')) {
        var chip = document.createElement("span");
        chip.className = "chip link";
        chip.textContent = pick.dataset.label;
        var input = document.createElement("input");
        input.type = "hidden"; input.name = picker.dataset.name; input.value = pick.dataset.id;
        var x = document.createElement("button");
        x.type = "button"; x.className = "x"; x.textContent = "×"; x.setAttribute("aria-label", "remove");
        chip.appendChild(input); chip.appendChild(x); box.appendChild(chip);
      }
      picker.querySelector(".pick-results").innerHTML = "";
      picker.querySelector(".pick-q").value = "";
      return;
    }
    var x = e.target.closest(".picked .x");
    if (x) { x.closest(".chip").remove(); return; }
    // dropdowns (notifications)
    var toggle = e.target.closest("[data-toggle]");
    if (toggle) {
      var panel = document.getElementById(toggle.dataset.toggle);
      if (panel) panel.hidden = !panel.hidden;
    } else if (!e.target.closest(".dropdown")) {
      document.querySelectorAll(".dropdown").forEach(function (d) { d.hidden = true; });
    }
  });
})();

/* Builder: the select options editor (add, reorder by drag or arrows, recolour, confirm deleting an
   option in use). Rows are posted in their order; the server reads that order. */
(function () {
  "use strict";
  var COLORS = ["blue", "green", "orange", "red", "purple", "teal", "pink", "yellow", "cyan", "gray"];
  var seq = 0;
  function swatch(row) {
    var sel = row.querySelector(".choice-color"), sw = row.querySelector(".swatch");
    if (sel && sw) sw.className = "swatch c-" + sel.value;
  }
  document.addEventListener("click", function (e) {
    var add = e.target.closest && e.target.closest("[data-add-choice]");
    if (add) {
      var box = add.closest(".choices-editor"), list = box.querySelector(".choice-list");
      var tpl = box.querySelector("#choice-template");
      var id = "n" + Date.now().toString(36) + (seq++);
      var holder = document.createElement("div");
      holder.innerHTML = tpl.innerHTML.replace(/NEW/g, id);
      var row = holder.firstElementChild;
      var sel = row.querySelector(".choice-color");
      if (sel) sel.value = COLORS[list.children.length % COLORS.length];
      swatch(row);
      list.appendChild(row);
      row.querySelector(".choice-name").focus();
      return;
    }
    var mv = e.target.closest && e.target.closest(".choice-row [data-move]");
    if (mv) {
      var r = mv.closest(".choice-row");
      if (mv.dataset.move === "up" && r.previousElementSibling) r.parentNode.insertBefore(r, r.previousElementSibling);
      if (mv.dataset.move === "down" && r.nextElementSibling) r.parentNode.insertBefore(r.nextElementSibling, r);
      mv.focus();
    }
  });
  // Enter in an option's name adds the next option instead of submitting the whole form
  document.addEventListener("keydown", function (e) {
    if (e.key !== "Enter" || !e.target.classList || !e.target.classList.contains("choice-name")) return;
    e.preventDefault();
    var add = e.target.closest(".choices-editor").querySelector("[data-add-choice]");
    if (add) add.click();
  });
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t.classList && t.classList.contains("choice-color")) swatch(t.closest(".choice-row"));
    if (t.dataset && t.dataset.confirmCheck && t.checked && !window.confirm(t.dataset.confirmCheck)) t.checked = false;
  });
  // drag to reorder (native drag and drop; the arrows do the same from the keyboard)
  var dragging = null;
  document.addEventListener("dragstart", function (e) {
    var row = e.target.closest && e.target.closest(".choice-row");
    if (!row || e.target.closest("input,select,button")) return;
    dragging = row;
    row.classList.add("dragging");
    e.dataTransfer.effectAllowed = "move";
    e.dataTransfer.setData("text/plain", row.dataset.choice || "");
  });
  document.addEventListener("dragover", function (e) {
    if (!dragging) return;
    var over = e.target.closest && e.target.closest(".choice-row");
    if (!over || over === dragging || over.parentNode !== dragging.parentNode) return;
    e.preventDefault();
    var rect = over.getBoundingClientRect();
    var after = e.clientY > rect.top + rect.height / 2;
    over.parentNode.insertBefore(dragging, after ? over.nextSibling : over);
  });
  document.addEventListener("drop", function (e) { if (dragging) e.preventDefault(); });
  document.addEventListener("dragend", function () {
    if (dragging) dragging.classList.remove("dragging");
    dragging = null;
  });
})();

/* Builder: the formula editor's pickers insert a field or a function at the cursor. */
(function () {
  "use strict";
  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest(".formula-editor [data-insert]");
    if (!b) return;
    var ta = b.closest(".formula-editor").querySelector("textarea");
    var text = b.dataset.insert, start = ta.selectionStart || 0, end = ta.selectionEnd || 0;
    ta.value = ta.value.slice(0, start) + text + ta.value.slice(end);
    ta.focus();
    ta.selectionStart = ta.selectionEnd = start + text.length;
    ta.dispatchEvent(new Event("input", { bubbles: true }));
  });
})();

/* Calendar: drag an event onto another day to reschedule it (If-Match on its version); the page's
   filters go along so the calendar comes back as it was. */
(function () {
  "use strict";
  var ev = null;
  document.addEventListener("dragstart", function (e) {
    var a = e.target.closest && e.target.closest(".calendar .cal-ev[draggable]");
    if (!a) return;
    ev = a;
    a.classList.add("dragging");
    e.dataTransfer.effectAllowed = "move";
    e.dataTransfer.setData("text/plain", a.dataset.id);
  });
  document.addEventListener("dragover", function (e) {
    var day = ev && e.target.closest && e.target.closest(".calendar .cal-day");
    if (!day) return;
    e.preventDefault();
    document.querySelectorAll(".cal-day.over").forEach(function (d) { if (d !== day) d.classList.remove("over"); });
    day.classList.add("over");
  });
  document.addEventListener("drop", function (e) {
    var day = ev && e.target.closest && e.target.closest(".calendar .cal-day");
    if (!day) return;
    e.preventDefault();
    var cal = day.closest(".calendar"), values = {};
    var filters = document.getElementById("filters");
    if (filters) new FormData(filters).forEach(function (v, k) { values[k] = v; });
    values.date = day.dataset.date;
    values.version = ev.dataset.v;
    values.mode = cal.dataset.mode;
    values.day = cal.dataset.day;
    var url = cal.dataset.base + "/" + ev.dataset.id + "/reschedule";
    ev = null;
    htmx.ajax("POST", url, { target: "#calendar", swap: "outerHTML", values: values });
  });
  document.addEventListener("dragend", function () {
    if (ev) ev.classList.remove("dragging");
    ev = null;
    document.querySelectorAll(".cal-day.over").forEach(function (d) { d.classList.remove("over"); });
  });
})();

/* Forms: a file field takes files by its button, by drag-and-drop onto its box, and by paste; the chosen
   names are listed. The server checks the limits (count, size, type) and names the file that breaks one. */
(function () {
  "use strict";
  function show(zone) {
    var input = zone.querySelector("input[type=file]"), list = zone.querySelector(".picked-files");
    if (!list) return;
    list.innerHTML = "";
    Array.prototype.forEach.call(input.files, function (f) {
      var li = document.createElement("li");
      li.textContent = f.name + " (" + Math.max(1, Math.round(f.size / 1024)) + " KB)";
      list.appendChild(li);
    });
  }
  function put(zone, fileList) {
    var input = zone.querySelector("input[type=file]");
    if (!input || !fileList || !fileList.length) return;
    var dt = new DataTransfer();
    if (input.multiple) Array.prototype.forEach.call(input.files, function (f) { dt.items.add(f); });
    Array.prototype.forEach.call(fileList, function (f) { if (input.multiple || !dt.items.length) dt.items.add(f); });
    input.files = dt.files;
    show(zone);
  }
  document.addEventListener("change", function (e) {
    var zone = e.target.closest && e.target.closest("[data-dropzone]");
    if (zone && e.target.type === "file") show(zone);
  });
  document.addEventListener("dragover", function (e) {
    var zone = e.target.closest && e.target.closest("[data-dropzone]");
    if (!zone || !e.dataTransfer || Array.prototype.indexOf.call(e.dataTransfer.types, "Files") < 0) return;
    e.preventDefault();
    zone.classList.add("over");
  });
  document.addEventListener("dragleave", function (e) {
    var zone = e.target.closest && e.target.closest("[data-dropzone]");
    if (zone) zone.classList.remove("over");
  });
  document.addEventListener("drop", function (e) {
    var zone = e.target.closest && e.target.closest("[data-dropzone]");
    if (!zone || !e.dataTransfer || !e.dataTransfer.files.length) return;
    e.preventDefault();
    zone.classList.remove("over");
    put(zone, e.dataTransfer.files);
  });
  document.addEventListener("paste", function (e) {
    var files = e.clipboardData && e.clipboardData.files;
    if (!files || !files.length) return;
    var form = (e.target.closest && e.target.closest("form")) || document;
    var zone = form.querySelector("[data-dropzone]");
    if (!zone) return;
    e.preventDefault();
    put(zone, files);
  });
})();
