/* Dashboards: draws each widget's chart with Apache ECharts from its data-chart JSON (no inline script), formats
   numbers for the page's language (¥1.2万 / ¥12K), opens the records behind a bar, slice or point, saves a
   chart or the whole dashboard as an image, and redraws after htmx swaps new widgets in. */
(function () {
  "use strict";
  var charts = [];

  function lang() { return document.documentElement.lang || "en"; }

  function fmt(value, format, compact) {
    if (value === null || value === undefined || value === "") return "—";
    var n = Number(value), loc = lang();
    if (isNaN(n)) return String(value);
    if (format === "percent") {
      return new Intl.NumberFormat(loc, { style: "percent", maximumFractionDigits: 1 }).format(n);
    }
    var o = { minimumFractionDigits: 0, maximumFractionDigits: compact ? 1 : 2 };
    if (compact && Math.abs(n) >= 1000) o.notation = "compact";
    if (format === "currency") {
      o.style = "currency"; o.currency = "CNY"; o.currencyDisplay = "narrowSymbol";
      if (!compact) o.maximumFractionDigits = 0;
    }
    return new Intl.NumberFormat(loc, o).format(n);
  }

  function short(text, max) {
    text = String(text);
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function maxOf(s) {
    return (s.data || []).reduce(function (m, v) { return Math.max(m, Math.abs(Number(v) || 0)); }, 0);
  }

  // a second value axis when the series differ in kind (money beside a count) or in size (×20)
  function axes(spec) {
    var series = (spec.series || []).filter(function (s) { return !s.compare && !s.target; });
    if (series.length < 2 || spec.type === "stacked_bar") return null;
    var first = series[0], top = maxOf(first) || 1;
    var second = series.slice(1).filter(function (s) {
      var m = maxOf(s) || 1;
      return s.format !== first.format || m / top > 20 || top / m > 20;
    });
    return second.length ? second.map(function (s) { return s.name; }) : null;
  }

  function valueAxis(format, extra) {
    return Object.assign({ type: "value", minInterval: format === "number" ? 1 : 0, axisLabel: { formatter: function (v) { return fmt(v, format, true); } },
      splitLine: { lineStyle: { color: "#eef0f3" } } }, extra || {});
  }

  function axisOption(spec, horizontal, right) {
    var cats = spec.categories || [];
    var longest = cats.reduce(function (m, c) { return Math.max(m, String(c).length); }, 0);
    var first = (spec.series || [])[0] || {};
    var value = valueAxis(first.format || spec.format);
    if (right) {
      var other = (spec.series || []).filter(function (s) { return right.indexOf(s.name) >= 0; })[0];
      value = [value, valueAxis(other.format || spec.format, { splitLine: { show: false } })];
    }
    var category = { type: "category", data: cats, axisTick: { alignWithLabel: true },
      axisLabel: { hideOverlap: true, interval: "auto", formatter: function (v) { return short(v, horizontal ? 18 : 14); } } };
    var rotated = !horizontal && (cats.length > 6 || longest > 8);
    if (rotated) category.axisLabel.rotate = 30;
    var out = horizontal ? { xAxis: value, yAxis: Object.assign(category, { inverse: true }) } : { xAxis: category, yAxis: value };
    // a rotated first label reaches left of the plot: leave it room so it is not cut
    if (rotated) out.gridLeft = Math.min(90, 6 * Math.min(longest, 14));
    return out;
  }

  function option(spec) {
    var itemFormat = ((spec.series || [])[0] || {}).format || spec.format;
    var tooltip = { trigger: "item", confine: true, valueFormatter: function (v) { return fmt(v, itemFormat, false); } };
    var base = { color: spec.colors, tooltip: tooltip, animationDuration: 300,
      grid: { left: 8, right: 16, top: 36, bottom: 8, containLabel: true } };
    var t = spec.type;
    if (t === "gauge") {
      var max = spec.goal || Math.max(1, Number(spec.value) || 0) * 1.25;
      return Object.assign(base, { series: [{ type: "gauge", min: 0, max: max, progress: { show: true, width: 14 },
        axisLine: { lineStyle: { width: 14 } }, splitNumber: 4,
        axisLabel: { distance: 18, formatter: function (v) { return fmt(v, spec.format, true); } },
        detail: { valueAnimation: true, fontSize: 22, offsetCenter: [0, "60%"], formatter: function (v) { return fmt(v, spec.format, true); } },
        title: { show: false }, data: [{ value: spec.value || 0, name: spec.name }] }] });
    }
    if (t === "pie" || t === "donut" || t === "funnel") {
      var s0 = (spec.series || [])[0] || { data: [] };
      var data = (spec.categories || []).map(function (c, i) { return { name: c, value: s0.data[i] }; });
      var series = t === "funnel"
        ? { type: "funnel", left: 8, right: 8, top: 36, bottom: 8, sort: "none", minSize: "8%", data: data,
            label: { position: "inside", formatter: function (p) { return short(p.name, 12) + " " + fmt(p.value, itemFormat, true); } } }
        : { type: "pie", radius: t === "donut" ? ["40%", "64%"] : [0, "64%"], center: ["50%", "58%"], data: data,
            avoidLabelOverlap: true, labelLine: { length: 8, length2: 6 },
            label: { overflow: "break", width: 90, formatter: function (p) { return short(p.name, 12) + "\n" + p.percent + "%"; } } };
      return Object.assign(base, { legend: { type: "scroll", top: 0, formatter: function (n) { return short(n, 16); } },
        series: [Object.assign(series, { name: s0.name })] });
    }
    var right = axes(spec);
    var horizontal = !right && (t === "bar" || t === "stacked_bar") && (spec.categories || []).some(function (c) { return String(c).length > 12; });
    var ax = axisOption(spec, horizontal, right);
    if (ax.gridLeft) { base.grid.left = ax.gridLeft; delete ax.gridLeft; }
    var out = Object.assign(base, ax);
    var formats = {};
    (spec.series || []).forEach(function (s) { formats[s.name] = s.format || spec.format; });
    out.tooltip = Object.assign({}, tooltip, { trigger: "axis", valueFormatter: undefined,
      axisPointer: { type: t === "line" || t === "area" ? "line" : "shadow" },
      formatter: function (items) {
        var head = items.length ? items[0].axisValueLabel : "";
        return [echarts.format.encodeHTML(head)].concat(items.map(function (it) {
          return it.marker + echarts.format.encodeHTML(it.seriesName) + " <b>" + fmt(it.value, formats[it.seriesName], false) + "</b>";
        })).join("<br>");
      } });
    out.legend = { type: "scroll", top: 0, formatter: function (n) { return short(n, 24); } };
    out.series = (spec.series || []).map(function (s) {
      var kind = t === "line" || t === "area" ? "line" : "bar";
      var o = { name: s.name, type: kind, data: s.data, emphasis: { focus: "series" } };
      if (right && right.indexOf(s.name) >= 0) o[horizontal ? "xAxisIndex" : "yAxisIndex"] = 1;
      if (s.stack) o.stack = s.stack;
      if (t === "area") o.areaStyle = { opacity: s.compare ? 0.08 : 0.25 };
      if (kind === "line") { o.smooth = true; o.connectNulls = true; }
      if (s.compare) { o.lineStyle = { type: "dashed" }; o.itemStyle = { opacity: 0.6 }; o.color = "#94a3b8"; }
      if (s.target) { o.type = "line"; o.step = "middle"; o.symbol = "rect"; o.lineStyle = { type: "dashed" }; o.color = "#ef4444"; }
      return o;
    });
    if (spec.goal) {
      out.series[0].markLine = { symbol: "none", data: [{ yAxis: spec.goal, name: spec.words.target }],
        label: { formatter: function () { return spec.words.target + " " + fmt(spec.goal, spec.format, true); } } };
    }
    return out;
  }

  function drillUrl(spec, p) {
    var d = spec.drill || [];
    if (spec.type === "gauge") return d[0];
    if (spec.type === "stacked_bar") return (d[p.seriesIndex] || [])[p.dataIndex];
    var s = (spec.series || [])[p.seriesIndex];
    if (s && (s.compare || s.target)) return null;
    return d[p.dataIndex];
  }

  function draw(root) {
    if (typeof echarts === "undefined") return;
    (root || document).querySelectorAll(".widget .chart").forEach(function (el) {
      if (el.dataset.drawn || !el.dataset.chart) return;
      var spec = JSON.parse(el.dataset.chart);
      el.dataset.drawn = "1";
      var chart = echarts.init(el, null, { renderer: "canvas" });
      // data-ready once drawn and its animation finished: clicks land on what is shown (tests wait for it)
      chart.on("finished", function () { el.dataset.ready = "1"; });
      chart.setOption(option(spec));
      chart.group = "dashboard";
      chart.on("click", function (p) {
        var url = drillUrl(spec, p);
        if (url) window.location.assign(url);
      });
      charts.push(chart);
    });
    charts = charts.filter(function (c) { return !c.isDisposed() && document.body.contains(c.getDom()); });
    echarts.connect("dashboard");
  }

  function save(url, name) {
    var a = document.createElement("a");
    a.href = url; a.download = name; document.body.appendChild(a); a.click(); a.remove();
  }

  document.addEventListener("click", function (e) {
    var one = e.target.closest("[data-chart-image]");
    if (one) {
      var el = one.closest(".widget").querySelector(".chart");
      var c = el && echarts.getInstanceByDom(el);
      if (c) save(c.getDataURL({ type: "png", pixelRatio: 2, backgroundColor: "#fff" }), one.closest(".widget").dataset.widget + ".png");
      return;
    }
    var all = e.target.closest("[data-dash-image]");
    if (all && charts.length) {
      var live = charts.filter(function (c) { return !c.isDisposed(); });
      if (live.length) save(live[0].getConnectedDataURL({ type: "png", pixelRatio: 2, backgroundColor: "#fff" }), all.dataset.dashImage + ".png");
    }
  });

  // the custom period shows its two dates only when chosen
  document.addEventListener("change", function (e) {
    if (!e.target.matches("[data-dash-period]")) return;
    var custom = e.target.value === "custom";
    e.target.form.querySelectorAll(".dash-custom").forEach(function (l) { l.hidden = !custom; });
    if (custom) e.stopPropagation();  // wait for the dates before asking the server
  }, true);

  var resizing;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(function () { charts.forEach(function (c) { if (!c.isDisposed()) c.resize(); }); }, 120);
  });
  document.addEventListener("htmx:beforeSwap", function (e) {
    e.detail.target.querySelectorAll(".widget .chart").forEach(function (el) {
      var c = typeof echarts !== "undefined" && echarts.getInstanceByDom(el);
      if (c) c.dispose();
    });
  });
  document.addEventListener("htmx:load", function (e) { draw(e.target); });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { draw(); });
  else draw();
  window.formworkDashboards = { fmt: fmt, option: option, redraw: draw };
})();

/* The dashboard builder: drag widgets to reorder (SortableJS); widths and confirmations use behaviours.js. */
(function () {
  "use strict";
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }
  function setup(root) {
    (root || document).querySelectorAll(".dash-edit[data-order-url]").forEach(function (grid) {
      if (grid.dataset.sortable || typeof Sortable === "undefined") return;
      grid.dataset.sortable = "1";
      Sortable.create(grid, {
        handle: ".drag", animation: 150, draggable: ".widget",
        onEnd: function () {
          var body = new URLSearchParams();
          grid.querySelectorAll(".widget[data-key]").forEach(function (w) { body.append("order", w.dataset.key); });
          grid.dataset.saving = "1";
          fetch(grid.dataset.orderUrl, { method: "POST", body: body, credentials: "same-origin",
            headers: { "X-CSRF-Token": csrf(), "HX-Request": "true" } })
            .then(function (r) { grid.dataset.saving = ""; grid.dataset.saved = r.ok ? "1" : "error"; });
        }
      });
    });
  }
  document.addEventListener("htmx:load", function (e) { setup(e.target); });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { setup(); });
  else setup();
})();
