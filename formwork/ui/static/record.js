/* The record page: picking someone to mention writes "@username " into the comment. */
(function () {
  "use strict";
  document.addEventListener("change", function (e) {
    var pick = e.target.closest && e.target.closest("select[data-mention-into]");
    if (!pick || !pick.value) return;
    var box = document.getElementById(pick.dataset.mentionInto);
    if (box) {
      var sep = box.value && !/\s$/.test(box.value) ? " " : "";
      box.value += sep + "@" + pick.value + " ";
      box.focus();
    }
    pick.value = "";
  });
})();
