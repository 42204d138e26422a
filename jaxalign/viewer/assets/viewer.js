/* jaxalign run viewer: inlined into the page by jaxalign/viewer/page.py.
 * Every string from the run (model text, tool output, metric names) enters the DOM as a text node
 * (`el` below never parses HTML), so a trajectory cannot inject markup or script. */
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("run-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var COLORS = ["#2f6fdf", "#e8710a", "#1a7f37", "#c62828", "#8e44ad", "#00838f", "#6d4c41", "#5c6bc0"];

  /* Element builder: attrs are properties / listeners, children are nodes or strings (as text nodes). */
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }
  function sv(tag, attrs, children) {
    var node = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    append(node, children);
    return node;
  }
  function setAttrs(node, attrs) {
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (k.slice(0, 2) === "on") node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else if (k === "data") Object.keys(v).forEach(function (d) { node.dataset[d] = v[d]; });
      else node[k] = v;
    });
  }
  function append(node, children) {
    (Array.isArray(children) ? children : [children]).forEach(function (c) {
      if (c === null || c === undefined || c === false) return;
      node.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    });
  }
  function fmt(v, digits) {
    if (v === null || v === undefined) return "\u2014";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return v.toFixed(digits === undefined ? (a < 1 ? 3 : 2) : digits);
  }
  function base(key) { return key.slice(key.lastIndexOf("/") + 1); }

  /* ------------------------------------------------------------------ layout and tabs */
  var app = document.getElementById("app");
  var nTraj = DATA.trajectories.length, nMaps = DATA.reward_maps.length;
  app.appendChild(el("header", {}, [el("h1", {}, "jaxalign run: " + DATA.name), el("span", { class: "path" }, DATA.path)]));
  var nav = el("nav", {}, []), mainEl = el("main", {}, []);
  app.appendChild(nav);
  app.appendChild(mainEl);
  var panels = {};
  [["metrics", "Metrics"], ["trajectories", "Trajectories (" + nTraj + ")"], ["rewardmaps", "Reward maps (" + nMaps + ")"],
   ["config", "Config"]].forEach(function (t, i) {
    var panel = el("section", { class: "panel" + (i === 0 ? " active" : ""), id: "panel-" + t[0] }, []);
    var button = el("button", { class: i === 0 ? "active" : "", id: "tab-" + t[0], type: "button", onclick: function () {
      Array.prototype.forEach.call(nav.children, function (b) { b.classList.remove("active"); });
      Object.keys(panels).forEach(function (k) { panels[k].classList.remove("active"); });
      button.classList.add("active");
      panel.classList.add("active");
    } }, t[1]);
    nav.appendChild(button);
    mainEl.appendChild(panel);
    panels[t[0]] = panel;
  });

  /* ------------------------------------------------------------------ metric curves */
  var GROUPS = [
    ["Reward and accuracy", ["reward", "accuracy"]],
    ["Tool calls per trajectory", ["tool_calls_per_traj"]],
    ["Tool errors and timeouts per trajectory", ["tool_errors_per_traj", "tool_timeouts_per_traj", "sandbox_failures"]],
    ["Response length (tokens)", ["response_tokens"]],
    ["Clip fraction", ["clip_frac", "dual_clip_frac"]],
    ["KL", ["approx_kl", "kl_ref", "kl"]],
    ["Time per step (s): generation, tools, training", ["time_generate_s", "time_tools_s", "time_train_s", "time_rollout_s"]],
    ["Loss", ["loss", "pg_loss"]],
    ["Gradient norm", ["grad_norm"]],
    ["Entropy", ["entropy"]]
  ];

  function niceTicks(lo, hi, n) {
    if (hi === lo) { hi = lo + 1; }
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    [1, 2, 5, 10].some(function (m) { if ((hi - lo) / (step * m) <= n) { step *= m; return true; } return false; });
    var ticks = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
    return ticks;
  }

  function lineChart(title, keys) {
    var W = 440, H = 210, L = 48, R = 10, T = 8, B = 24;
    var series = keys.map(function (k) { return DATA.metrics[k]; });
    var xs = [], ys = [];
    series.forEach(function (s) { s.forEach(function (p) { xs.push(p[0]); ys.push(p[1]); }); });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (y0 > 0 && y0 < 0.5 * y1) y0 = 0;
    if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    var sx = function (x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
    var sy = function (y) { return T + (1 - (y - y0) / (y1 - y0)) * (H - T - B); };
    var svg = sv("svg", { viewBox: "0 0 " + W + " " + H, role: "img" }, []);
    niceTicks(y0, y1, 4).forEach(function (t) {
      svg.appendChild(sv("line", { x1: L, x2: W - R, y1: sy(t), y2: sy(t), class: "grid-line" }));
      svg.appendChild(sv("text", { x: L - 4, y: sy(t) + 3, "text-anchor": "end" }, fmt(t)));
    });
    niceTicks(x0, x1, 6).filter(Number.isInteger).forEach(function (t) {
      svg.appendChild(sv("text", { x: sx(t), y: H - 8, "text-anchor": "middle" }, String(t)));
    });
    svg.appendChild(sv("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
    svg.appendChild(sv("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
    series.forEach(function (s, i) {
      var c = COLORS[i % COLORS.length];
      svg.appendChild(sv("polyline", { points: s.map(function (p) { return sx(p[0]) + "," + sy(p[1]); }).join(" "),
        fill: "none", stroke: c, "stroke-width": 1.6 }));
      if (s.length <= 60) s.forEach(function (p) { svg.appendChild(sv("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.2, fill: c })); });
    });
    var cursor = sv("line", { y1: T, y2: H - B, class: "cursor", visibility: "hidden" });
    svg.appendChild(cursor);
    var tip = el("div", { class: "tip" }, []);
    var box = el("div", { class: "chart" }, [svg, tip]);
    svg.addEventListener("mousemove", function (ev) {
      var r = svg.getBoundingClientRect(), x = x0 + ((ev.clientX - r.left) * W / r.width - L) / (W - L - R) * (x1 - x0);
      var best = null;
      xs.forEach(function (v) { if (best === null || Math.abs(v - x) < Math.abs(best - x)) best = v; });
      var lines = ["step " + best];
      series.forEach(function (s, i) {
        s.forEach(function (p) { if (p[0] === best) lines.push(keys[i] + ": " + fmt(p[1])); });
      });
      cursor.setAttribute("x1", sx(best)); cursor.setAttribute("x2", sx(best)); cursor.setAttribute("visibility", "visible");
      tip.textContent = lines.join("\n");
      tip.style.display = "block";
      tip.style.left = Math.min(ev.clientX - r.left + 12, r.width - 160) + "px";
      tip.style.top = (ev.clientY - r.top + 12) + "px";
    });
    svg.addEventListener("mouseleave", function () { tip.style.display = "none"; cursor.setAttribute("visibility", "hidden"); });
    var legend = el("div", { class: "legend" }, keys.map(function (k, i) {
      var sw = el("span", { class: "sw" }, []);
      sw.style.backgroundColor = COLORS[i % COLORS.length];
      return el("span", {}, [sw, k]);
    }));
    return el("div", { class: "card metric-chart" }, [el("h3", {}, title), legend, box]);
  }

  function renderMetrics(panel) {
    var keys = Object.keys(DATA.metrics);
    if (!keys.length) { panel.appendChild(el("div", { class: "empty" }, "No metrics.jsonl in this run.")); return; }
    var used = {}, grid = el("div", { class: "grid" }, []);
    GROUPS.forEach(function (g) {
      var ks = keys.filter(function (k) { return g[1].indexOf(base(k)) >= 0 && DATA.metrics[k].length; });
      if (!ks.length) return;
      ks.forEach(function (k) { used[k] = true; });
      grid.appendChild(lineChart(g[0], ks));
    });
    var steps = {};
    keys.forEach(function (k) { DATA.metrics[k].forEach(function (p) { steps[p[0]] = true; }); });
    var sum = function (name) {
      var k = keys.filter(function (x) { return base(x) === name; })[0];
      return k ? DATA.metrics[k].reduce(function (a, p) { return a + p[1]; }, 0) : null;
    };
    var gen = sum("time_generate_s"), tools = sum("time_tools_s"), train = sum("time_train_s"), roll = sum("time_rollout_s");
    var text = Object.keys(steps).length + " logged steps, " + keys.length + " metrics.";
    if (roll !== null && train !== null) {
      text += " Time: rollout " + fmt(roll, 1) + " s (generation " + fmt(gen, 1) + " s, tool calls " + fmt(tools, 1) +
        " s summed over calls), training " + fmt(train, 1) + " s (" + fmt(100 * train / Math.max(roll + train, 1e-9), 1) + "%).";
    }
    panel.appendChild(el("p", { class: "summary" }, text));
    panel.appendChild(grid);
    var rest = keys.filter(function (k) { return !used[k] && DATA.metrics[k].length; }).sort();
    if (rest.length) {
      var other = el("div", { class: "grid" }, rest.map(function (k) { return lineChart(k, [k]); }));
      panel.appendChild(el("details", {}, [el("summary", {}, "Other metrics (" + rest.length + ")"), other]));
    }
  }

  /* ------------------------------------------------------------------ trajectory table */
  var COLUMNS = [["step", "Step", true], ["idx", "#", true], ["prompt", "Prompt", false], ["reward", "Reward", true],
    ["advantage", "Adv.", true], ["tool_calls", "Calls", true], ["tool_errors", "Errors", true],
    ["tool_timeouts", "Timeouts", true], ["num_tokens", "Tokens", true], ["num_policy_tokens", "Trained", true],
    ["finish_reason", "Finish", false]];
  var state = { sort: "step", dir: 1, selected: null };

  function shortPrompt(p) {
    var s = String(p || "").replace(/<\|im_start\|>(system|user|assistant)\n?/g, "").replace(/<\|im_end\|>/g, " ");
    return s.replace(/\s+/g, " ").trim().slice(0, 120);
  }

  function renderTrajectories(panel) {
    if (!nTraj) {
      panel.appendChild(el("div", { class: "empty" }, "No trajectories/step_*.jsonl in this run (GRPO saves them every " +
        "save_trajectories_every steps)."));
      return;
    }
    DATA.trajectories.forEach(function (t, i) { t.idx = i; });
    var f = {};
    var num = function (id, label) { f[id] = el("input", { type: "number", step: "any", id: "f-" + id, oninput: update, onchange: update }); return el("label", {}, [label, f[id]]); };
    f.error = el("select", { id: "f-error", onchange: update }, [["any", "any"], ["failed", "error or timeout"], ["error", "error"],
      ["timeout", "timeout"], ["clean", "no error"]].map(function (o) { return el("option", { value: o[0] }, o[1]); }));
    var steps = [];
    DATA.trajectories.forEach(function (t) { if (steps.indexOf(t.step) < 0) steps.push(t.step); });
    f.step = el("select", { id: "f-step", onchange: update }, [el("option", { value: "" }, "all")].concat(
      steps.map(function (s) { return el("option", { value: String(s) }, String(s)); })));
    f.text = el("input", { type: "search", id: "f-text", placeholder: "text contains", oninput: update, onchange: update });
    var filters = el("div", { class: "filters" }, [num("rmin", "reward \u2265"), num("rmax", "reward \u2264"),
      num("cmin", "tool calls \u2265"), num("cmax", "tool calls \u2264"), el("label", {}, ["errors", f.error]),
      el("label", {}, ["step", f.step]), el("label", {}, ["search", f.text])]);
    var head = el("tr", {}, COLUMNS.map(function (c) {
      return el("th", { data: { key: c[0] }, onclick: function () {
        state.dir = state.sort === c[0] ? -state.dir : 1;
        state.sort = c[0];
        update();
      } }, c[1]);
    }));
    var tbody = el("tbody", {}, []), count = el("div", { class: "count", id: "traj-count" }, "");
    var table = el("table", { id: "traj-table" }, [el("thead", {}, head), tbody]);
    var detail = el("div", { class: "detail", id: "traj-detail" }, el("div", { class: "empty" }, "Click a row to read the trajectory."));
    panel.appendChild(filters);
    panel.appendChild(el("div", { class: "split" }, [el("div", {}, [count, el("div", { class: "table-wrap" }, table)]), detail]));

    function val(id) { var v = f[id].value; return v === "" ? null : Number(v); }
    function keep(t) {
      var rmin = val("rmin"), rmax = val("rmax"), cmin = val("cmin"), cmax = val("cmax"), e = f.error.value;
      if (rmin !== null && !(t.reward !== null && t.reward >= rmin)) return false;
      if (rmax !== null && !(t.reward !== null && t.reward <= rmax)) return false;
      if (cmin !== null && !(t.tool_calls >= cmin)) return false;
      if (cmax !== null && !(t.tool_calls <= cmax)) return false;
      if (e === "failed" && !(t.tool_errors + t.tool_timeouts > 0)) return false;
      if (e === "error" && !(t.tool_errors > 0)) return false;
      if (e === "timeout" && !(t.tool_timeouts > 0)) return false;
      if (e === "clean" && t.tool_errors + t.tool_timeouts > 0) return false;
      if (f.step.value !== "" && String(t.step) !== f.step.value) return false;
      var q = f.text.value.toLowerCase();
      return !q || (String(t.prompt) + "\n" + String(t.text)).toLowerCase().indexOf(q) >= 0;
    }
    function update() {
      var rows = DATA.trajectories.filter(keep), k = state.sort, d = state.dir;
      rows.sort(function (a, b) {
        var x = a[k], y = b[k];
        if (x === y) return a.idx - b.idx;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * d;
      });
      Array.prototype.forEach.call(head.children, function (th) {
        th.classList.toggle("asc", th.dataset.key === k && d > 0);
        th.classList.toggle("desc", th.dataset.key === k && d < 0);
      });
      tbody.textContent = "";
      rows.forEach(function (t) {
        var tr = el("tr", { class: t.idx === state.selected ? "selected" : "", data: { idx: String(t.idx) }, onclick: function () {
          state.selected = t.idx;
          Array.prototype.forEach.call(tbody.children, function (r) { r.classList.remove("selected"); });
          tr.classList.add("selected");
          showTrajectory(detail, t);
        } }, COLUMNS.map(function (c) {
          var v = c[0] === "prompt" ? shortPrompt(t.prompt) : t[c[0]];
          return el("td", { class: c[2] ? "num" : (c[0] === "prompt" ? "prompt" : ""), title: c[0] === "prompt" ? shortPrompt(t.prompt) : "" },
            c[0] === "reward" || c[0] === "advantage" ? fmt(v, 3) : fmt(v));
        }));
        tbody.appendChild(tr);
      });
      count.textContent = rows.length + " of " + nTraj + " trajectories";
    }
    update();
  }

  /* ------------------------------------------------------------------ one trajectory */
  function proseAndCode(text) {
    var out = [], re = /```([\w+-]*)\n?([\s\S]*?)```/g, last = 0, m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) out.push(el("div", { class: "prose" }, text.slice(last, m.index)));
      out.push(el("div", { class: "label" }, m[1] ? m[1] + " block" : "code block"));
      out.push(el("pre", { class: "code" }, m[2]));
      last = re.lastIndex;
    }
    if (last < text.length) out.push(el("div", { class: "prose" }, text.slice(last)));
    return out;
  }

  function toolStatus(turn) {
    if (turn.timed_out) return "timeout";
    return turn.ok === false ? "error" : "ok";
  }

  /* Control characters as visible symbols (U+2400 block), newlines as a return mark plus the break. */
  function visible(piece) {
    if (piece === "") return "\u2205";
    return piece.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, function (c) {
      return String.fromCharCode(c === "\x7f" ? 0x2421 : 0x2400 + c.charCodeAt(0));
    }).replace(/\n/g, "\u21b5\n");
  }

  function tokenView(t) {
    var box = el("div", { class: "tokens", id: "token-view" }, []), pos = 0;
    t.turns.forEach(function (turn, ti) {
      if (ti > 0) box.appendChild(el("span", { class: "turn-sep" }, []));
      for (var i = pos; i < Math.min(pos + (turn.tokens || 0), t.tokens.length); i++) {
        var m = t.loss_mask[i], piece = t.token_text ? t.token_text[i] : "[" + t.tokens[i] + "]";
        var lp = t.logprobs[i];
        box.appendChild(el("span", { class: "tok m" + (m ? 1 : 0), title: "token " + i + " \u00b7 id " + t.tokens[i] +
          " \u00b7 " + (m ? "trained (mask 1)" : "not trained (mask 0)") + (m && lp !== null && lp !== undefined ? " \u00b7 logp " + fmt(lp, 3) : "") },
          visible(piece)));
      }
      pos += turn.tokens || 0;
    });
    return box;
  }

  function showTrajectory(detail, t) {
    detail.textContent = "";
    var flags = [t.finish_reason ? "finish: " + t.finish_reason : null, t.hit_tool_budget ? "hit tool budget" : null,
      t.hit_token_budget ? "hit token budget" : null].filter(Boolean).join(" \u00b7 ");
    detail.appendChild(el("h2", {}, "Step " + t.step + " \u00b7 trajectory " + t.idx));
    detail.appendChild(el("div", { class: "meta" }, "reward " + fmt(t.reward, 3) + " \u00b7 advantage " + fmt(t.advantage, 3) +
      " \u00b7 " + t.tool_calls + " tool calls (" + t.tool_errors + " errors, " + t.tool_timeouts + " timeouts) \u00b7 " +
      t.num_tokens + " response tokens, " + t.num_policy_tokens + " trained" + (flags ? " \u00b7 " + flags : "") + " \u00b7 " + t.file));
    detail.appendChild(el("details", {}, [el("summary", {}, "Prompt"), el("pre", { class: "prompt" }, String(t.prompt || ""))]));
    var turns = el("div", { id: "turns" }, []), calls = 0;
    t.turns.forEach(function (turn) {
      if (turn.kind === "tool") {
        var st = toolStatus(turn);
        calls += 1;
        turns.appendChild(el("div", { class: "turn tool " + st }, [
          el("div", { class: "head" }, ["Tool call " + calls + " \u00b7 " + (turn.tokens || 0) + " output tokens (not trained)",
            el("span", { class: "badge " + st }, st)]),
          el("div", { class: "body" }, [el("div", { class: "label" }, "code"), el("pre", { class: "code" }, String(turn.code || "")),
            el("div", { class: "label" }, "output"), el("pre", { class: "output " + st }, String(turn.output || "")),
            turn.error ? el("div", { class: "errmsg" }, "error: " + turn.error) : null])]));
      } else {
        turns.appendChild(el("div", { class: "turn policy" }, [
          el("div", { class: "head" }, "Assistant \u00b7 " + (turn.tokens || 0) + " tokens (trained)"),
          el("div", { class: "body" }, proseAndCode(String(turn.text || "")))]));
      }
    });
    detail.appendChild(turns);
    detail.appendChild(el("h3", {}, "Tokens and loss mask"));
    var on = el("span", { class: "tok m1" }, "trained (loss mask 1)"), off = el("span", { class: "tok m0" }, "not trained (mask 0)");
    detail.appendChild(el("div", { class: "legend" }, [on, off, t.token_text ? "hover a token for its id and log-prob" :
      "this run saved no token text: showing token ids"]));
    detail.appendChild(tokenView(t));
  }

  /* ------------------------------------------------------------------ reward maps */
  function colour(v, scale) {
    if (v === null || v === undefined || !scale) return "transparent";
    var a = Math.min(1, Math.abs(v) / scale) * 0.85;
    return v >= 0 ? "rgba(20, 150, 40, " + a.toFixed(3) + ")" : "rgba(200, 30, 30, " + a.toFixed(3) + ")";
  }
  function maxAbs(lists) {
    var m = 0;
    lists.forEach(function (l) { (l || []).forEach(function (v) { if (v !== null && Math.abs(v) > m) m = Math.abs(v); }); });
    return m;
  }
  function scaleBar(scale, what) {
    return el("div", { class: "scale" }, [fmt(-scale), el("span", { class: "bar" }, []), fmt(scale), " " + what]);
  }
  function coloured(pieces, rewards, scale, cls, sep) {
    var box = el("div", { class: "rm-text " + cls }, []);
    pieces.forEach(function (p, i) {
      if (sep && i > 0) box.appendChild(document.createTextNode(" "));
      var span = el("span", { class: "seg", title: (cls === "mono" ? "token " : "sentence ") + i + ": reward " + fmt(rewards[i], 4) }, p);
      span.style.backgroundColor = colour(rewards[i], scale);
      box.appendChild(span);
    });
    return box;
  }
  function sideView(name, side, sScale, tScale) {
    if (!side) return el("div", { class: "card" }, [el("h3", {}, name), el("div", { class: "empty" }, "none")]);
    var parts = [el("h3", {}, name + (side.score !== null && side.score !== undefined ? " \u00b7 score " + fmt(side.score, 4) : ""))];
    if (side.sentences) {
      parts.push(el("div", { class: "label" }, "sentence rewards (sentence RM)"));
      parts.push(coloured(side.sentences, side.sentence_rewards, sScale, "sentences", !side.sentences_join));
    }
    if (side.tokens) {
      parts.push(el("div", { class: "label" }, "token rewards (endogenous)"));
      parts.push(coloured(side.tokens, side.token_rewards, tScale, "mono", false));
      var total = side.token_rewards.reduce(function (a, v) { return a + (v === null ? 0 : v); }, 0);
      parts.push(el("div", { class: "count" }, side.tokens.length + " tokens, sum of token rewards " + fmt(total, 4)));
    }
    return el("div", { class: "card rm-side" }, parts);
  }
  function renderRewardMaps(panel) {
    if (!nMaps) {
      panel.appendChild(el("div", { class: "empty" }, "No reward_maps/*.jsonl in this run. Write records with " +
        "jaxalign.viewer.write_reward_maps (format: jaxalign/viewer/data.py)."));
      return;
    }
    var view = el("div", { id: "rm-view" }, []);
    var select = el("select", { id: "rm-select", onchange: function () { show(Number(select.value)); } },
      DATA.reward_maps.map(function (r, i) {
        return el("option", { value: String(i) }, r.file + " \u00b7 " + (r.id || "#" + i) + (r.label ? " \u00b7 " + r.label : "") +
          " \u00b7 " + shortPrompt(r.prompt).slice(0, 60));
      }));
    panel.appendChild(el("div", { class: "filters" }, [el("label", {}, ["record", select])]));
    panel.appendChild(view);
    function show(i) {
      var r = DATA.reward_maps[i], sides = [r.chosen, r.rejected].filter(Boolean);
      var sScale = maxAbs(sides.map(function (s) { return s.sentence_rewards; }));
      var tScale = maxAbs(sides.map(function (s) { return s.token_rewards; }));
      view.textContent = "";
      view.appendChild(el("details", { open: true }, [el("summary", {}, "Prompt"), el("pre", {}, r.prompt)]));
      if (sScale) view.appendChild(scaleBar(sScale, "sentence reward"));
      if (tScale) view.appendChild(scaleBar(tScale, "token reward"));
      view.appendChild(el("div", { class: "rm-sides" }, [sideView("Chosen", r.chosen, sScale, tScale),
        sideView("Rejected", r.rejected, sScale, tScale)]));
      if (r.meta !== null && r.meta !== undefined) view.appendChild(el("pre", {}, JSON.stringify(r.meta, null, 2)));
    }
    show(0);
  }

  /* ------------------------------------------------------------------ config */
  function renderConfig(panel) {
    panel.appendChild(DATA.config ? el("pre", {}, DATA.config) : el("div", { class: "empty" }, "No config.yaml in this run."));
  }

  renderMetrics(panels.metrics);
  renderTrajectories(panels.trajectories);
  renderRewardMaps(panels.rewardmaps);
  renderConfig(panels.config);
  document.body.dataset.ready = "1";
})();
