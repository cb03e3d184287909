/* Administration and "my account": copying a one-time link or token (confirmations and reloading pickers are
   static/behaviours.js: data-confirm, data-autosubmit). */
(function () {
  "use strict";
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
})();
