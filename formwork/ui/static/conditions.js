/* The condition builder (formwork/ui/conditions.py): removing a condition or a group. Adding and re-fitting
   rows are htmx requests; the form posts the inputs as they stand, so nothing else is needed. */
(function () {
  "use strict";
  document.addEventListener("click", function (e) {
    var btn = e.target.closest(".cb .cb-remove");
    if (!btn) return;
    var node = btn.closest(".cb-cond, .cb-nested");
    if (!node) return;
    var form = node.closest("form");
    node.remove();
    if (form) form.dispatchEvent(new Event("change", { bubbles: true }));
  });
})();
