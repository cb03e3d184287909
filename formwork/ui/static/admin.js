/* Administration and "my account": confirmations, copying a one-time link or token, pickers that reload. */
(function () {
  "use strict";
  // a form with data-confirm asks first (deactivate, delete, revoke)
  document.addEventListener("submit", function (e) {
    var form = e.target.closest && e.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) e.preventDefault();
  });
  // a button with data-copy copies its input's text (the link or token shown once)
  document.addEventListener("click", function (e) {
    var btn = e.target.closest && e.target.closest("button[data-copy]");
    if (!btn) return;
    var input = document.getElementById(btn.dataset.copy);
    if (!input) return;
    input.select();
    var done = function () { btn.textContent = btn.dataset.copied || btn.textContent; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(done, function () { document.execCommand("copy"); done(); });
    } else {
      document.execCommand("copy");
      done();
    }
  });
  // a select with data-submit-on-change reloads its (GET) form: the choices below depend on it
  document.addEventListener("change", function (e) {
    var sel = e.target;
    if (sel.matches && sel.matches("select[data-submit-on-change]") && sel.form) {
      sel.form.querySelectorAll("select[name=record], select[name=field]").forEach(function (s) { s.disabled = true; });
      sel.form.submit();
    }
  });
})();
