/* The form designer: rows dragged by their handle (SortableJS) or moved with the up/down buttons, sections
   added from a template and removed, a row dimmed while its field is off the form. */
(function () {
  "use strict";
  var seq = 0;
  function init() {
    var list = document.querySelector("[data-fd-list]");
    if (!list) return;
    if (window.Sortable) Sortable.create(list, { handle: ".fd-handle", animation: 150, forceFallback: true });
    document.addEventListener("click", function (e) {
      var add = e.target.closest("[data-fd-add-section]");
      if (add) {
        var tpl = document.getElementById("fd-section-tpl");
        seq += 1;
        var holder = document.createElement("ol");
        holder.innerHTML = tpl.innerHTML.replace(/__ID__/g, "n" + Date.now().toString(36) + seq);
        var row = holder.firstElementChild;
        list.insertBefore(row, list.firstChild);
        (row.querySelector("input[name^=sec_][required]") || row.querySelector("input[name^=sec_]")).focus();
        return;
      }
      var move = e.target.closest("[data-fd-move]");
      if (move) {
        var li = move.closest("[data-fd-row]");
        if (move.dataset.fdMove === "-1" && li.previousElementSibling) list.insertBefore(li, li.previousElementSibling);
        else if (move.dataset.fdMove === "1" && li.nextElementSibling) list.insertBefore(li.nextElementSibling, li);
        move.focus();
        return;
      }
      var rm = e.target.closest("[data-fd-remove]");
      if (rm) rm.closest("[data-fd-row]").remove();
    });
    document.addEventListener("change", function (e) {
      if (e.target.matches("[data-fd-on]")) e.target.closest("[data-fd-row]").classList.toggle("off", !e.target.checked);
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
