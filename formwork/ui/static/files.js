/* Attachments on a record page: a file field's box takes files from its button, by drag-and-drop and by
   paste, and sends them at once (the server checks the field's limits and names the one broken); a picture
   opens in a lightbox. Declared in markup: data-attach-zone on the upload form, data-preview on a link. */
(function () {
  "use strict";
  // the field's limits, checked before a byte is sent (the server checks them again); the message names the
  // limit in the page's language (rendered into data- attributes by the server)
  function typeOk(file, types) {
    var name = file.name.toLowerCase(), mime = (file.type || "").toLowerCase();
    return types.some(function (t) {
      t = t.trim().toLowerCase();
      if (!t) return false;
      if (t.charAt(0) === ".") return name.slice(-t.length) === t;
      if (t.slice(-2) === "/*") return mime.indexOf(t.slice(0, -1)) === 0;
      return mime === t;
    });
  }
  function problems(d, files) {  // d: the box's data- attributes
    var out = [];
    if (d.room && files.length > +d.room) return [d.tooMany];
    Array.prototype.forEach.call(files, function (f) {
      if (d.types && f.type && !typeOk(f, d.types.split(","))) out.push(d.badType.replace("{name}", f.name));
      else if (d.maxSize && f.size > +d.maxSize) out.push(d.tooBig.replace("{name}", f.name));
    });
    return out;
  }
  window.formworkFileProblems = problems;  // an attachment cell of the grid checks the same (grid.js)
  function say(zone, messages) {
    var box = zone.querySelector(".err");
    if (!box) return;
    box.textContent = messages.join(" ");
    box.hidden = !messages.length;
  }
  function send(zone, fileList) {
    var input = zone.querySelector("input[type=file]");
    if (!input || !fileList || !fileList.length) return;
    var bad = problems(zone.dataset, fileList);
    if (bad.length) {
      say(zone, bad);
      input.value = "";
      return;
    }
    say(zone, []);
    var dt = new DataTransfer();
    Array.prototype.forEach.call(fileList, function (f) { dt.items.add(f); });
    input.files = dt.files;
    busy(zone);
    zone.requestSubmit ? zone.requestSubmit() : zone.submit();
  }
  function busy(zone) {
    var note = zone.querySelector(".att-busy");
    if (note) note.hidden = false;
    zone.classList.add("sending");
  }
  function hasFiles(e) {
    return e.dataTransfer && Array.prototype.indexOf.call(e.dataTransfer.types, "Files") >= 0;
  }
  document.addEventListener("change", function (e) {
    var zone = e.target.closest && e.target.closest("[data-attach-zone]");
    if (!zone || e.target.type !== "file" || !e.target.files.length) return;
    var bad = problems(zone.dataset, e.target.files);
    if (bad.length) {
      e.stopImmediatePropagation();  // no data-autosubmit: nothing is sent
      say(zone, bad);
      e.target.value = "";
      return;
    }
    busy(zone);
  }, true);
  document.addEventListener("dragover", function (e) {
    var zone = e.target.closest && e.target.closest(".att-field");
    if (!zone || !zone.querySelector("[data-attach-zone]") || !hasFiles(e)) return;
    e.preventDefault();
    zone.classList.add("over");
  });
  document.addEventListener("dragleave", function (e) {
    var zone = e.target.closest && e.target.closest(".att-field");
    if (zone && !zone.contains(e.relatedTarget)) zone.classList.remove("over");
  });
  document.addEventListener("drop", function (e) {
    var field = e.target.closest && e.target.closest(".att-field");
    var zone = field && field.querySelector("[data-attach-zone]");
    if (!zone || !e.dataTransfer || !e.dataTransfer.files.length) return;
    e.preventDefault();
    field.classList.remove("over");
    send(zone, e.dataTransfer.files);
  });
  document.addEventListener("paste", function (e) {
    var list = e.clipboardData && e.clipboardData.files;
    if (!list || !list.length) return;
    var field = e.target.closest && e.target.closest(".att-field");
    var zone = field && field.querySelector("[data-attach-zone]");
    if (!zone) {
      // pasting outside every box: the page's only upload box takes it, unless the caret is in a text input
      var zones = document.querySelectorAll("[data-attach-zone]");
      var typing = e.target.closest && e.target.closest("input, textarea, [contenteditable]");
      if (zones.length !== 1 || typing) return;
      zone = zones[0];
    }
    e.preventDefault();
    send(zone, list);
  });
  document.addEventListener("click", function (e) {
    var link = e.target.closest && e.target.closest("[data-preview]");
    if (!link) return;
    var box = document.querySelector(".att-lightbox");
    if (!box || typeof box.showModal !== "function") return;
    e.preventDefault();
    var img = box.querySelector("img");
    img.src = link.dataset.preview;
    img.alt = link.dataset.previewName || "";
    box.querySelector("figcaption").textContent = link.dataset.previewName || "";
    box.showModal();
  });
  document.addEventListener("click", function (e) {
    var box = e.target;
    if (box && box.classList && box.classList.contains("att-lightbox") && box.open) box.close();  // the backdrop
  });
})();
