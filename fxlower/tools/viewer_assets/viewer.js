// fxlower viewer: draws the graphs laid out by fxlower/tools/viewer.py on canvases (only what is in view), with a side
// panel for the selected node, search, collapsible nested graphs and, with a core view, links between the views.
(function () {
  "use strict";
  var D = window.FXDATA;
  var NW = 172, NH = 34, GX = 26, GY = 28, PAD = 12, HDR = 20;
  var COLORS = {placeholder: "#c8e6c9", output: "#c8e6c9", get_attr: "#fff9c4", call_module: "#bbdefb",
                call_function: "#f5f5f5", call_method: "#e1bee7"};
  var views = [];
  var selected = null;           // {view, item}
  var linked = [new Set(), new Set()];
  var hits = new Set();

  // ------------------------------------------------------------------------------------------ node instances
  // A node instance is a node of a graph reached from the root through expanded call_module nodes; its key is the
  // path of node names (">" joined). Every instance is listed once, whether or not its ancestors are expanded.
  function instances(view) {
    var out = [];
    function walk(gi, prefix, anc) {
      var g = view.spec.graphs[gi];
      for (var i = 0; i < g.nodes.length; i++) {
        var n = g.nodes[i], key = prefix ? prefix + ">" + n.n : n.n;
        out.push({key: key, node: n, gi: gi, anc: anc});
        if (n.g !== undefined && anc.length < 64) walk(n.g, key, anc.concat([key]));
      }
    }
    if (view.spec.graphs.length) walk(0, "", []);
    return out;
  }

  // ------------------------------------------------------------------------------------------------- layout
  // Layers from the Python layout; node sizes here (an expanded nested graph is as big as its own layout).
  function layoutGraph(view, gi, prefix, depth, items) {
    var g = view.spec.graphs[gi], nodes = g.nodes, sizes = new Array(nodes.length), subs = new Array(nodes.length);
    var rows = [];
    for (var i = 0; i < nodes.length; i++) {
      var n = nodes[i], key = prefix ? prefix + ">" + n.n : n.n;
      if (n.g !== undefined && view.expanded.has(key) && depth < 64) {
        var sub = [], box = layoutGraph(view, n.g, key, depth + 1, sub);
        subs[i] = sub;
        sizes[i] = [Math.max(NW, box[0] + 2 * PAD), box[1] + HDR + PAD];
      } else sizes[i] = [NW, NH];
      (rows[n.y] = rows[n.y] || []).push(i);
    }
    var ys = [], y = 0, width = 0, px = new Array(nodes.length);
    for (var r = 0; r < rows.length; r++) {
      var row = rows[r] || [], h = 0, right = -Infinity;
      for (var k = 0; k < row.length; k++) {
        var j = row[k], x = Math.max(nodes[j].x * (NW + GX), right + GX);
        px[j] = x; right = x + sizes[j][0]; h = Math.max(h, sizes[j][1]);
      }
      width = Math.max(width, right);
      ys[r] = y; y += h + GY;
    }
    var base = items.length, index = new Array(nodes.length);
    for (i = 0; i < nodes.length; i++) {
      n = nodes[i];
      var it = {key: prefix ? prefix + ">" + n.n : n.n, node: n, gi: gi, x: px[i], y: ys[n.y], w: sizes[i][0],
                h: sizes[i][1], depth: depth, open: !!subs[i], ins: []};
      index[i] = items.length;
      items.push(it);
      if (subs[i]) {
        for (var s = 0; s < subs[i].length; s++) {
          var c = subs[i][s];
          c.x += it.x + PAD; c.y += it.y + HDR;
          items.push(c);
        }
      }
    }
    for (i = 0; i < nodes.length; i++) {
      var ins = nodes[i].i, target = items[index[i]];
      for (k = 0; k < ins.length; k++) target.ins.push(items[index[ins[k]]]);
    }
    void base;
    return [Math.max(width, NW), Math.max(y - GY, NH)];
  }

  function relayout(view) {
    var items = [];
    var box = view.spec.graphs.length ? layoutGraph(view, 0, "", 0, items) : [0, 0];
    view.items = items;
    view.byKey = new Map();
    for (var i = 0; i < items.length; i++) view.byKey.set(items[i].key, items[i]);
    view.size = box;
    redraw(view);
  }

  // ------------------------------------------------------------------------------------------------ drawing
  function redraw(view) {
    if (view.pending) return;
    view.pending = true;
    requestAnimationFrame(function () { view.pending = false; draw(view); });
  }

  function draw(view) {
    var c = view.canvas, ctx = view.ctx, dpr = window.devicePixelRatio || 1;
    var W = view.pane.clientWidth, H = view.pane.clientHeight;
    if (c.width !== Math.round(W * dpr) || c.height !== Math.round(H * dpr)) {
      c.width = Math.round(W * dpr); c.height = Math.round(H * dpr);
      c.style.width = W + "px"; c.style.height = H + "px";
    }
    var s = view.scale, ox = view.ox, oy = view.oy;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    ctx.setTransform(dpr * s, 0, 0, dpr * s, -ox * s * dpr, -oy * s * dpr);
    var x0 = ox, y0 = oy, x1 = ox + W / s, y1 = oy + H / s, items = view.items, drawn = 0;
    // edges
    ctx.strokeStyle = "#90a4ae"; ctx.lineWidth = 1.2 / Math.max(s, 0.3);
    ctx.beginPath();
    for (var i = 0; i < items.length; i++) {
      var it = items[i];
      for (var k = 0; k < it.ins.length; k++) {
        var a = it.ins[k], ax = a.x + a.w / 2, ay = a.y + a.h, bx = it.x + it.w / 2, by = it.y;
        if (Math.max(ay, by) < y0 || Math.min(ay, by) > y1 || Math.max(ax, bx) < x0 || Math.min(ax, bx) > x1) continue;
        var my = (ay + by) / 2;
        ctx.moveTo(ax, ay); ctx.bezierCurveTo(ax, my, bx, my, bx, by);
      }
    }
    ctx.stroke();
    // nodes
    var text = s > 0.35, vi = view.index;
    ctx.textBaseline = "middle";
    for (i = 0; i < items.length; i++) {
      it = items[i];
      if (it.x > x1 || it.x + it.w < x0 || it.y > y1 || it.y + it.h < y0) continue;
      drawn++;
      var n = it.node, sel = selected && selected.view === view && selected.item.key === it.key;
      ctx.fillStyle = it.open ? "rgba(227,242,253,0.35)" : (COLORS[n.o] || "#eee");
      ctx.fillRect(it.x, it.y, it.w, it.h);
      ctx.lineWidth = (sel ? 3 : 1) / Math.max(s, 0.3);
      ctx.strokeStyle = sel ? "#d32f2f" : linked[vi].has(it.key) ? "#ff6f00" : hits.has(vi + ":" + it.key) ? "#fbc02d" : "#78909c";
      if (linked[vi].has(it.key) || hits.has(vi + ":" + it.key)) ctx.lineWidth = 3 / Math.max(s, 0.3);
      ctx.strokeRect(it.x, it.y, it.w, it.h);
      if (text) {
        ctx.fillStyle = "#111";
        ctx.font = "bold 11px system-ui,sans-serif";
        var label = (n.g !== undefined ? (it.open ? "\u25be " : "\u25b8 ") : "") + n.n;
        ctx.fillText(clip(ctx, label, it.w - 8), it.x + 4, it.y + (it.open ? HDR / 2 : 11));
        if (!it.open) {
          ctx.font = "10px system-ui,sans-serif"; ctx.fillStyle = "#455a64";
          var sub = n.l ? n.l.type.replace(/^torch\.nn\./, "") : (n.o === "call_function" || n.o === "call_method" ? n.t : n.o);
          ctx.fillText(clip(ctx, sub, it.w - 8), it.x + 4, it.y + 25);
        }
      }
    }
    view.drawn = drawn;
  }

  var clipCache = new Map();
  function clip(ctx, t, w) {
    var key = ctx.font + "|" + w + "|" + t, hit = clipCache.get(key);
    if (hit !== undefined) return hit;
    var out = t;
    if (ctx.measureText(t).width > w) {
      var lo = 0, hi = t.length;
      while (lo < hi) { var mid = (lo + hi + 1) >> 1; if (ctx.measureText(t.slice(0, mid) + "\u2026").width <= w) lo = mid; else hi = mid - 1; }
      out = t.slice(0, lo) + "\u2026";
    }
    if (clipCache.size > 50000) clipCache.clear();
    clipCache.set(key, out);
    return out;
  }

  // ---------------------------------------------------------------------------------------------- interaction
  function hitTest(view, cx, cy) {
    var x = view.ox + cx / view.scale, y = view.oy + cy / view.scale, items = view.items;
    for (var i = items.length - 1; i >= 0; i--) {
      var it = items[i];
      if (x >= it.x && x <= it.x + it.w && y >= it.y && y <= it.y + it.h) return it;
    }
    return null;
  }

  function toggle(view, it) {
    if (it.node.g === undefined) return;
    if (view.expanded.has(it.key)) view.expanded.delete(it.key); else view.expanded.add(it.key);
    relayout(view);
  }

  function attach(view) {
    var c = view.canvas, drag = null;
    c.addEventListener("mousedown", function (e) { drag = {x: e.clientX, y: e.clientY, ox: view.ox, oy: view.oy, moved: false}; c.style.cursor = "grabbing"; });
    window.addEventListener("mousemove", function (e) {
      if (!drag) return;
      var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      view.ox = drag.ox - dx / view.scale; view.oy = drag.oy - dy / view.scale; redraw(view);
    });
    window.addEventListener("mouseup", function (e) {
      if (!drag) return;
      var moved = drag.moved; drag = null; c.style.cursor = "grab";
      if (moved) return;
      var r = c.getBoundingClientRect(), it = hitTest(view, e.clientX - r.left, e.clientY - r.top);
      if (it) select(view, it);
    });
    c.addEventListener("dblclick", function (e) {
      var r = c.getBoundingClientRect(), it = hitTest(view, e.clientX - r.left, e.clientY - r.top);
      if (it) toggle(view, it);
    });
    c.addEventListener("wheel", function (e) {
      e.preventDefault();
      if (e.ctrlKey) {
        var r = c.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
        var wx = view.ox + mx / view.scale, wy = view.oy + my / view.scale;
        view.scale = Math.min(3, Math.max(0.05, view.scale * Math.exp(-e.deltaY * 0.002)));
        view.ox = wx - mx / view.scale; view.oy = wy - my / view.scale;
      } else { view.ox += e.deltaX / view.scale; view.oy += e.deltaY / view.scale; }
      redraw(view);
    }, {passive: false});
    window.addEventListener("resize", function () { redraw(view); });
  }

  // ---------------------------------------------------------------------------------------------- side panel
  function esc(t) { return String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }
  function row(cells, attr) { return "<tr" + (attr || "") + ">" + cells.map(function (c) { return "<td>" + esc(c) + "</td>"; }).join("") + "</tr>"; }

  function fmtBytes(b) { return b < 1024 ? b + " B" : b < 1048576 ? (b / 1024).toFixed(1) + " KiB" : (b / 1048576).toFixed(1) + " MiB"; }

  function showPanel(view, it) {
    var n = it.node, h = "<h3>" + esc(n.n) + "</h3><table id='node'>";
    h += row(["view", view.spec.name + (it.gi ? " / graph " + it.gi + " " + view.spec.graphs[it.gi].name : "")], " data-f='view'");
    h += row(["op", n.o], " data-f='op'") + row(["target", n.t], " data-f='target'");
    h += row(["args", n.a], " data-f='args'") + row(["kwargs", n.k], " data-f='kwargs'") + row(["meta", n.m], " data-f='meta'");
    if (n.g !== undefined) h += row(["nested graph", n.g + " (" + view.spec.graphs[n.g].nodes.length + " nodes; double-click to " + (it.open ? "collapse" : "expand") + ")"]);
    if (n.org) h += row(["origin", "graph " + n.org[0] + " node " + n.org[1]], " data-f='origin'");
    h += "</table>";
    if (n.l) {
      h += "<h4>lowering: " + esc(n.l.type) + " (rule v" + n.l.v + ")</h4><table id='lowering'><tr><td>attribute</td><td>type</td><td>value</td></tr>";
      for (var i = 0; i < n.l.attrs.length; i++) h += row(n.l.attrs[i], " data-attr='" + esc(n.l.attrs[i][0]) + "'");
      h += "</table>";
    }
    if (n.r) {
      h += "<h4>tensors</h4><table id='tensors'><tr><td>name</td><td>dtype</td><td>shape</td><td>bytes</td><td>sha256</td></tr>";
      for (i = 0; i < n.r.length; i++) {
        var t = D.tensors[n.r[i]];
        if (t) h += row([n.r[i], t[0], "[" + t[1].join(", ") + "]", fmtBytes(t[2]), t[3]], " data-tensor='" + esc(n.r[i]) + "'");
      }
      h += "</table>";
    }
    document.getElementById("panel").innerHTML = h;
  }

  function select(view, it) {
    selected = {view: view, item: it};
    linked = [new Set(), new Set()];
    if (views.length === 2) {
      var other = views[1 - view.index], n = it.node;
      for (var i = 0; i < other.all.length; i++) {
        var o = other.all[i], on = o.node, hit;
        if (view.index === 1) hit = n.org && o.gi === n.org[0] && on.n === n.org[1];
        else hit = on.org && on.org[0] === it.gi && on.org[1] === n.n;
        if (hit) linked[other.index].add(o.key);
      }
      var first = other.all.find(function (o) { return linked[other.index].has(o.key); });
      if (first) reveal(other, first.key, false);
      redraw(other);
    }
    showPanel(view, it);
    redraw(view);
  }

  function reveal(view, key, doSelect) {
    var inst = view.all.find(function (o) { return o.key === key; });
    if (!inst) return null;
    var grew = false;
    for (var i = 0; i < inst.anc.length; i++) if (!view.expanded.has(inst.anc[i])) { view.expanded.add(inst.anc[i]); grew = true; }
    if (grew) relayout(view);
    var it = view.byKey.get(key);
    var W = view.pane.clientWidth, H = view.pane.clientHeight;
    view.ox = it.x + it.w / 2 - W / 2 / view.scale; view.oy = it.y + it.h / 2 - H / 2 / view.scale;
    if (doSelect) select(view, it); else redraw(view);
    return it;
  }

  // --------------------------------------------------------------------------------------------------- search
  function search(q) {
    var res = document.getElementById("results"), out = [], shown = 0;
    hits = new Set();
    q = q.trim().toLowerCase();
    if (q) {
      for (var v = 0; v < views.length; v++) {
        var all = views[v].all;
        for (var i = 0; i < all.length; i++) {
          var n = all[i].node;
          if (n.n.toLowerCase().indexOf(q) >= 0 || n.t.toLowerCase().indexOf(q) >= 0) {
            hits.add(v + ":" + all[i].key);
            if (shown++ < 300) out.push("<div data-view='" + v + "' data-key='" + esc(all[i].key) + "'>" +
              (views.length > 1 ? "[" + (v ? "core" : "module") + "] " : "") + esc(all[i].key) + " <small>" + esc(n.t) + "</small></div>");
          }
        }
      }
    }
    res.innerHTML = q ? "<div class='count' style='color:#555'>" + hits.size + " match" + (hits.size === 1 ? "" : "es") + "</div>" + out.join("") : "";
    views.forEach(redraw);
  }

  // ------------------------------------------------------------------------------------------------------ init
  function init() {
    document.getElementById("info").textContent = D.title + "  (format " + D.format + ")";
    var main = document.getElementById("main");
    D.views.forEach(function (spec, i) {
      var pane = document.createElement("div"); pane.className = "pane"; pane.id = "pane" + i;
      var label = document.createElement("div"); label.className = "label"; label.textContent = spec.name;
      var canvas = document.createElement("canvas");
      pane.appendChild(label); pane.appendChild(canvas); main.appendChild(pane);
      var view = {index: i, spec: spec, pane: pane, canvas: canvas, ctx: canvas.getContext("2d"), expanded: new Set(),
                  scale: 1, ox: -20, oy: -30, items: [], drawn: 0};
      view.all = instances(view);
      views.push(view);
      attach(view);
      relayout(view);
    });
    var box = document.getElementById("search"), timer = null;
    box.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(function () { search(box.value); }, 120); });
    box.addEventListener("keydown", function (e) {
      if (e.key !== "Enter") return;
      clearTimeout(timer);  // the typing's pending search would re-render the results under a reader
      search(box.value);
      var first = document.querySelector("#results div[data-key]");
      if (first) reveal(views[+first.dataset.view], first.dataset.key, true);
    });
    document.getElementById("results").addEventListener("click", function (e) {
      var d = e.target.closest("div[data-key]");
      if (d) reveal(views[+d.dataset.view], d.dataset.key, true);
    });
    document.getElementById("expandall").onclick = function () { api.expandAll(); };
    document.getElementById("collapseall").onclick = function () { api.collapseAll(); };
    requestAnimationFrame(function () {
      views.forEach(draw);
      api.tti = performance.now();
      api.ready = true;
    });
  }

  // The page's programmatic interface (used by the tests and the benchmark).
  var api = window.fxview = {
    ready: false, tti: null,
    stats: function () {
      return views.map(function (v) { return {instances: v.all.length, laidOut: v.items.length, drawn: v.drawn}; });
    },
    expandAll: function () { views.forEach(function (v) { v.all.forEach(function (o) { if (o.node.g !== undefined) v.expanded.add(o.key); }); relayout(v); }); },
    collapseAll: function () { views.forEach(function (v) { v.expanded.clear(); relayout(v); }); },
    reveal: function (vi, key) { var it = reveal(views[vi], key, false); return !!it; },
    // the client coordinates of a laid-out node's centre (after reveal), for clicking it
    screenPos: function (vi, key) {
      var v = views[vi], it = v.byKey.get(key), r = v.canvas.getBoundingClientRect();
      return it ? {x: r.left + (it.x + it.w / 2 - v.ox) * v.scale, y: r.top + (it.y + Math.min(it.h, NH) / 2 - v.oy) * v.scale} : null;
    },
    linked: function (vi) { return Array.from(linked[vi]).sort(); },
    selected: function () { return selected ? [selected.view.index, selected.item.key] : null; }
  };
  init();
})();
