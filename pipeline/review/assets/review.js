(function () {
  "use strict";
  var gallery = document.getElementById("gallery");
  var tiles = Array.prototype.slice.call(gallery.querySelectorAll(".tile"));
  tiles.forEach(function (tile) {
    var img = tile.querySelector("img");
    var mark = function () {
      img.setAttribute("data-loaded", img.naturalWidth > 0 ? "yes" : "no");
      img.setAttribute("data-natural-width", String(img.naturalWidth));
    };
    img.addEventListener("load", mark);
    img.addEventListener("error", mark);
    if (img.complete) { mark(); }
  });
  var sortSel = document.getElementById("sort");
  var statusSel = document.getElementById("status");
  var maxIn = document.getElementById("max");
  var maxOut = document.getElementById("maxv");
  var kindSel = document.getElementById("kind");
  var defaults = { sort: "uncertain", status: "all", max: "1", kind: "all" };
  function readHash() {
    var state = Object.assign({}, defaults);
    location.hash.replace(/^#/, "").split("&").forEach(function (part) {
      var kv = part.split("=");
      if (kv.length === 2 && kv[0] in state) { state[kv[0]] = decodeURIComponent(kv[1]); }
    });
    return state;
  }
  function writeHash() {
    var state = { sort: sortSel.value, status: statusSel.value, max: maxIn.value,
                  kind: kindSel ? kindSel.value : "all" };
    var parts = [];
    Object.keys(state).forEach(function (k) {
      if (state[k] !== defaults[k]) { parts.push(k + "=" + encodeURIComponent(state[k])); }
    });
    var hash = parts.join("&");
    if (hash !== location.hash.replace(/^#/, "")) { location.hash = hash; } else { apply(); }
  }
  function num(tile, name) { return parseFloat(tile.getAttribute(name)); }
  var orders = {
    uncertain: function (a, b) { return num(a, "data-rank") - num(b, "data-rank"); },
    confident: function (a, b) { return num(b, "data-rank") - num(a, "data-rank"); },
    uri: function (a, b) {
      var x = a.getAttribute("data-uri"), y = b.getAttribute("data-uri");
      return x < y ? -1 : x > y ? 1 : 0;
    }
  };
  function apply() {
    var state = readHash();
    if (!(state.sort in orders)) { state.sort = defaults.sort; }
    var max = parseFloat(state.max);
    if (isNaN(max)) { max = 1; }
    sortSel.value = state.sort;
    statusSel.value = state.status;
    maxIn.value = String(max);
    maxOut.textContent = max.toFixed(2);
    tiles.sort(orders[state.sort]);
    var shown = 0;
    tiles.forEach(function (tile) {
      var score = num(tile, "data-score");
      var tags = " " + tile.getAttribute("data-status") + " ";
      var ok = (state.status === "all" || tags.indexOf(" " + state.status + " ") >= 0) &&
               (isNaN(score) || score <= max + 1e-9);
      tile.hidden = !ok;
      if (ok) { shown += 1; }
      gallery.appendChild(tile);
    });
    document.getElementById("count").textContent = shown + " of " + tiles.length + " shown";
    document.body.setAttribute("data-sort", state.sort);
    if (kindSel) {
      kindSel.value = state.kind;
      document.querySelectorAll("#errors tbody tr").forEach(function (row) {
        row.hidden = state.kind !== "all" && row.getAttribute("data-kind") !== state.kind;
      });
    }
  }
  [sortSel, statusSel, kindSel].forEach(function (el) {
    if (el) { el.addEventListener("change", writeHash); }
  });
  maxIn.addEventListener("input", function () { maxOut.textContent = parseFloat(maxIn.value).toFixed(2); });
  maxIn.addEventListener("change", writeHash);
  window.addEventListener("hashchange", apply);
  apply();
})();
