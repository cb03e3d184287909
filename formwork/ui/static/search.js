// Global search: "/" or Ctrl-K (Cmd-K) focuses the top bar's box; arrow keys walk the results; Escape closes.
(function () {
  "use strict";
  function box() { return document.getElementById("global-search"); }
  function panel() { return document.getElementById("global-results"); }
  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }
  function open(on) {
    var wrap = document.querySelector("[data-gsearch]");
    if (wrap) { wrap.classList.toggle("open", on); }
  }
  function results() { var p = panel(); return p ? Array.prototype.slice.call(p.querySelectorAll("[data-result]")) : []; }
  document.addEventListener("keydown", function (e) {
    var input = box();
    if (!input) { return; }
    var k = e.key;
    if ((k === "/" && !typing(document.activeElement)) || ((e.ctrlKey || e.metaKey) && (k === "k" || k === "K"))) {
      e.preventDefault();
      input.focus();
      input.select();
      open(true);
      return;
    }
    var inside = document.activeElement === input || (panel() && panel().contains(document.activeElement));
    if (!inside) { return; }
    if (k === "Escape") {
      open(false);
      input.blur();
      return;
    }
    if (k === "ArrowDown" || k === "ArrowUp") {
      var list = results();
      if (!list.length) { return; }
      e.preventDefault();
      var i = list.indexOf(document.activeElement);
      if (k === "ArrowDown") { i = i < 0 ? 0 : Math.min(i + 1, list.length - 1); }
      else if (i <= 0) { input.focus(); return; }
      else { i -= 1; }
      list[i].focus();
    }
  });
  document.addEventListener("focusin", function (e) {
    var wrap = document.querySelector("[data-gsearch]");
    if (wrap) { open(wrap.contains(e.target)); }
  });
  document.addEventListener("click", function (e) {
    var wrap = document.querySelector("[data-gsearch]");
    if (wrap && !wrap.contains(e.target)) { open(false); }
  });
})();
