/* Behaviours declared in markup, so no page needs an inline handler (the Content-Security-Policy forbids
   them): data-confirm on a form asks before it submits, data-autosubmit on an input submits its form when it
   changes, data-dismiss="<selector>" on a button removes the closest such element, data-toggles="<selector>" opens and
   closes a panel (the phone's navigation), data-reset-on-success on
   an htmx form empties it after a successful request, data-empty-shows="<selector>" on a select shows that
   element only while nothing is chosen (a field's own options vs a shared option list). */
(function () {
  "use strict";
  document.addEventListener("submit", function (e) {
    var form = e.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) {
      e.preventDefault();
      e.stopImmediatePropagation();
    }
  }, true);
  function emptyShows(sel) {
    var target = document.querySelector(sel.dataset.emptyShows);
    if (target) target.hidden = sel.value !== "";
  }
  document.addEventListener("change", function (e) {
    if (e.target.matches && e.target.matches("select[data-empty-shows]")) emptyShows(e.target);
    var el = e.target.closest("[data-autosubmit]");
    if (el && el.form) el.form.requestSubmit ? el.form.requestSubmit() : el.form.submit();
  });
  document.addEventListener("click", function (e) {
    var toggle = e.target.closest("[data-toggles]");
    if (toggle) {
      var panel = document.querySelector(toggle.dataset.toggles);
      if (panel) {
        var open = !panel.classList.contains("open");
        panel.classList.toggle("open", open);
        toggle.setAttribute("aria-expanded", open ? "true" : "false");
      }
      return;
    }
    var btn = e.target.closest("[data-dismiss]");
    if (!btn) return;
    var target = btn.closest(btn.dataset.dismiss);
    if (target) target.remove();
  });
  document.addEventListener("htmx:afterRequest", function (e) {
    var form = e.target.closest && e.target.closest("form[data-reset-on-success]");
    if (form && e.detail.successful && e.target === form) form.reset();
  });
})();
