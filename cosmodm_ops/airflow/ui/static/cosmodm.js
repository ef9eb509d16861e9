// CosmoDM survey pages: the little interactivity they need (no libraries, nothing fetched from elsewhere).
(function () {
  "use strict";
  // selects that apply at once (survey, metric, lineage depth)
  document.querySelectorAll("select.autosubmit").forEach(function (sel) {
    sel.addEventListener("change", function () { sel.form.submit(); });
  });

  // sky map: recolour by band, zoom with the wheel or buttons, pan by dragging
  var svg = document.getElementById("skymap");
  if (!svg) { return; }
  var colours = {none: "#d9d9d9", partial: "#f6c85f", done: "#4caf50", stale: "#8e7cc3", failed: "#d9534f"};
  var band = document.getElementById("band");
  // each tile's data-s holds one letter per band of the svg's data-bands (n, p, d, s, f: the states' initials)
  var states = {n: "none", p: "partial", d: "done", s: "stale", f: "failed"};
  var bands = (svg.getAttribute("data-bands") || "").split(" ");
  function recolour() {
    var i = band ? bands.indexOf(band.value) : -1;
    svg.querySelectorAll("rect.tile").forEach(function (r) {
      var s = (i >= 0 && states[(r.getAttribute("data-s") || "").charAt(i)]) || "none";
      r.setAttribute("fill", colours[s]);
    });
  }
  if (band) { band.addEventListener("change", recolour); }
  var vb0 = svg.getAttribute("viewBox").split(" ").map(Number);
  var vb = vb0.slice();
  function apply() { svg.setAttribute("viewBox", vb.join(" ")); }
  function zoom(f, cx, cy) {
    if (cx === undefined) { cx = vb[0] + vb[2] / 2; cy = vb[1] + vb[3] / 2; }
    var w = Math.min(vb0[2] * 4, Math.max(vb0[2] / 50, vb[2] * f)), h = w * vb0[3] / vb0[2];
    vb = [cx - (cx - vb[0]) * w / vb[2], cy - (cy - vb[1]) * h / vb[3], w, h];
    apply();
  }
  function toUser(ev) {
    var r = svg.getBoundingClientRect();
    return [vb[0] + (ev.clientX - r.left) / r.width * vb[2], vb[1] + (ev.clientY - r.top) / r.height * vb[3]];
  }
  svg.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var p = toUser(ev);
    zoom(ev.deltaY > 0 ? 1.2 : 1 / 1.2, p[0], p[1]);
  }, {passive: false});
  var drag = null, moved = false;
  svg.addEventListener("mousedown", function (ev) { drag = [ev.clientX, ev.clientY, vb[0], vb[1]]; moved = false; });
  window.addEventListener("mousemove", function (ev) {
    if (!drag) { return; }
    var r = svg.getBoundingClientRect();
    var dx = (ev.clientX - drag[0]) / r.width * vb[2], dy = (ev.clientY - drag[1]) / r.height * vb[3];
    if (Math.abs(ev.clientX - drag[0]) + Math.abs(ev.clientY - drag[1]) > 3) { moved = true; }
    vb[0] = drag[2] - dx; vb[1] = drag[3] - dy; apply();
  });
  window.addEventListener("mouseup", function () { drag = null; });
  svg.addEventListener("click", function (ev) { if (moved) { ev.preventDefault(); moved = false; } }, true);
  var zi = document.getElementById("zoom-in"), zo = document.getElementById("zoom-out");
  var zr = document.getElementById("zoom-reset");
  if (zi) { zi.addEventListener("click", function () { zoom(1 / 1.5); }); }
  if (zo) { zo.addEventListener("click", function () { zoom(1.5); }); }
  if (zr) { zr.addEventListener("click", function () { vb = vb0.slice(); apply(); }); }
  recolour();
})();
