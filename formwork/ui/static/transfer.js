// The import wizard: a column's "New field…" choice shows the new field's name and type inputs.
(function () {
  "use strict";
  function sync(select) {
    var box = document.getElementById(select.getAttribute("data-new-field"));
    if (box) { box.hidden = select.value !== "__new__"; }
  }
  document.addEventListener("change", function (e) {
    var el = e.target;
    if (el && el.matches && el.matches("select[data-new-field]")) { sync(el); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("select[data-new-field]").forEach(sync);
  });
})();

// Export links follow what the table page shows now: the filter form's view, search, sort and conditions.
(function () {
  "use strict";
  function refresh(link) {
    var form = link.closest("form") || document.getElementById("filters");
    if (!form) { return; }
    var params = new URLSearchParams();
    new FormData(form).forEach(function (value, key) {
      if (typeof value === "string" && value !== "") { params.append(key, value); }
    });
    params.set("format", link.getAttribute("data-export"));
    link.href = link.href.split("?")[0] + "?" + params.toString();
  }
  document.addEventListener("click", function (e) {
    var link = e.target && e.target.closest ? e.target.closest("a[data-export]") : null;
    if (link) { refresh(link); }
  }, true);
})();
