/* Automation pages: the variable picker of message templates and copying a webhook URL. Everything else is
   htmx and the declared behaviours of static/behaviours.js (see the templates automation*.html). */
(function () {
  "use strict";
  var lastTemplate = null;
  document.addEventListener("focusin", function (e) {
    if (e.target.classList && e.target.classList.contains("tpl")) lastTemplate = e.target;
  });
  // insert the chosen variable where the cursor is, in the template input last used within the same step
  document.addEventListener("click", function (e) {
    var btn = e.target.closest && e.target.closest(".var-insert");
    if (!btn) return;
    var scope = document.getElementById(btn.dataset.scope) || btn.closest("fieldset") || document;
    var select = btn.parentElement.querySelector(".var-select");
    var input = lastTemplate && scope.contains(lastTemplate) ? lastTemplate : scope.querySelector(".tpl");
    if (!select || !input) return;
    var text = select.value, start = input.selectionStart, end = input.selectionEnd;
    if (start === null || start === undefined) { start = end = input.value.length; }
    input.value = input.value.slice(0, start) + text + input.value.slice(end);
    input.focus();
    input.setSelectionRange(start + text.length, start + text.length);
    input.dispatchEvent(new Event("input", { bubbles: true }));
  });
  // copy a shown-once URL
  document.addEventListener("click", function (e) {
    var btn = e.target.closest && e.target.closest(".copy-btn");
    if (!btn) return;
    var input = document.querySelector(btn.dataset.copy);
    if (!input) return;
    input.select();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).catch(function () { document.execCommand("copy"); });
    } else {
      document.execCommand("copy");
    }
    btn.classList.add("copied");
  });
})();
