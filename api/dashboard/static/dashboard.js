// The dashboard's only script of its own (no inline scripts: the CSP forbids them).
// - Live regions (hx-trigger="every 2s") skip a refresh while the user works in them: a
//   region marked data-hold-while-used with a checked box or the focus inside.
// - Charts: an element with data-chart gets a uPlot chart of its data-published and
//   data-delivered series (per minute, ending at data-end), drawn again after each refresh.
(function () {
  "use strict";

  document.addEventListener("htmx:beforeRequest", function (event) {
    var region = event.detail.elt;
    if (!region.hasAttribute || !region.hasAttribute("data-hold-while-used")) return;
    if (region.querySelector("input:checked") || region.contains(document.activeElement)) {
      event.preventDefault();
    }
  });

  function series(element, name) {
    try { return JSON.parse(element.getAttribute("data-" + name) || "[]"); }
    catch (e) { return []; }
  }

  function draw(element) {
    if (typeof uPlot === "undefined") return;
    var published = series(element, "published");
    var delivered = series(element, "delivered");
    var end = Number(element.getAttribute("data-end"));
    var times = published.map(function (_, i) { return end - (published.length - 1 - i) * 60; });
    element.textContent = "";
    var width = Math.max(240, element.clientWidth || 600);
    new uPlot({
      width: width, height: 160,
      series: [{}, {label: "published", stroke: "#3467c2", width: 2},
               {label: "delivered", stroke: "#2f9e44", width: 2}],
      axes: [{}, {size: 50}],
      legend: {show: true, live: false},
    }, [times, published, delivered], element);
  }

  function drawAll(root) {
    (root.querySelectorAll ? root : document).querySelectorAll("[data-chart]").forEach(draw);
  }

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function (event) { drawAll(event.detail.elt); });
})();
