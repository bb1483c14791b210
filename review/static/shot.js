/* foleyflow review — shot page: picture, envelope editor, decisions, A/B listening.
 *
 * Plain JavaScript, no build step. The page embeds its boot object in
 * <script id="boot" type="application/json"> (see docs/REVIEW_API.md).
 */
(function () {
  "use strict";

  // ---------------------------------------------------------------- basics
  var $ = function (id) { return document.getElementById(id); };
  var boot = JSON.parse($("boot").textContent);
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var CSRF = csrfMeta ? csrfMeta.getAttribute("content") : "";
  var SVGNS = "http://www.w3.org/2000/svg";
  var BUMP_PRE_S = 0.05;      // the curve "bump" that travels with a moved event starts this
  var BUMP_POST_S = 0.35;     // early and lasts this long (a hit's decay), or up to the next event
  var DRIFT_S = 0.04;         // audio is re-synced to the picture beyond this drift
  var HISTORY_MAX = 300;
  var CURVE_FLOOR_DB = -72;   // the curve's axis: dBFS RMS from here (silence) to 0, as a meter
  var KIND_COLORS = { impact: "#ff8a3d", step: "#39c5f2", scrape: "#e8c547", whoosh: "#b48cff" };
  var SPARE_COLORS = ["#59d98e", "#ff6f91", "#7fd1c7", "#d7e36a", "#f29ee0"];
  var STATE_LABEL = {
    pending_review: "pending review", approved: "approved",
    retake_requested: "retake requested", omitted: "omitted"
  };
  var DECISION_DONE = { approved: "Approved", retake_requested: "Retake requested", omitted: "Omitted" };

  var video = $("picture");
  var svg = $("plot");
  var audio = { preview: $("audio-preview"), A: $("audio-a"), B: $("audio-b") };

  var shot = null;        // the last shot JSON from the server
  var edit = null;        // working copy: {curve, events, prompt, category, position}
  var POSITION_FIELDS = { "pos-azimuth": "azimuth_deg", "pos-elevation": "elevation_deg",
                          "pos-distance": "distance_m" };
  var baseKey = "";       // content key of the server's latest envelope
  var undoStack = [];
  var redoStack = [];
  var lastTag = null;     // coalesces typing into one undo step
  var selected = -1;
  var overlay = null;     // {version, env} shown faintly on the plot
  var busy = false;
  var conflict = null;    // {kind: "save"|"decision", latest_version}
  var drag = null;        // pointer interaction in progress
  var geo = null;         // plot geometry
  var layers = {};        // svg groups
  var previewKey = null;  // content key the preview audio was rendered from
  var previewUrl = null;
  var mode = "none";      // which audio follows the picture: none | preview | ab
  var audible = "A";
  var abVersions = null;  // {A: v, B: v} loaded into the A/B players
  var kindColorCache = {};

  // ---------------------------------------------------------------- timecode
  /* SMPTE timecode of a frame count, the same arithmetic as tasks.ingest.timecode:
   * drop-frame applies to 30000/1001 and 60000/1001 only, with ';' before the frames, and
   * hours wrap at 24 (a shot running past midnight reads 00:00:… as in the queue). */
  function timecode(frames, num, den, dropFrame) {
    var nominal = Math.max(1, Math.ceil(num / den - 1e-9));
    var sign = "";
    if (frames < 0) { sign = "-"; frames = -frames; }
    var drop = !!dropFrame && ((num === 30000 && den === 1001) || (num === 60000 && den === 1001));
    if (drop) {
      var skip = Math.floor(nominal / 15);
      var per10 = nominal * 600 - skip * 9;
      var perMin = nominal * 60 - skip;
      var tens = Math.floor(frames / per10);
      var rest = frames - tens * per10;
      frames += skip * 9 * tens + (rest > skip ? skip * Math.floor((rest - skip) / perMin) : 0);
    }
    var ff = frames % nominal;
    var ss = Math.floor(frames / nominal) % 60;
    var mm = Math.floor(frames / (nominal * 60)) % 60;
    var hh = Math.floor(frames / (nominal * 3600)) % 24;  // SMPTE hours wrap at 24
    return sign + pad(hh) + ":" + pad(mm) + ":" + pad(ss) + (drop ? ";" : ":") + pad(ff);
  }
  function pad(n) { return n < 10 ? "0" + n : String(n); }
  function rate() { return shot && shot.rate ? shot.rate : [24, 1]; }
  function fps() { var r = rate(); return r[0] / r[1]; }
  /* The frame a time falls in; 1e-4 frame of tolerance (a few µs) for times kept to the µs:
     the start of a frame at an NTSC rate is stored up to 0.5 µs short of it. tasks.conform
     event_frame counts alike. */
  function frameAt(t) { var r = rate(); return Math.floor(t * r[0] / r[1] + 1e-4); }
  /* Record timecode of a time t seconds into the shot. */
  function tcAt(t) {
    var r = rate();
    return timecode((shot.record_in_frame || 0) + frameAt(t), r[0], r[1], shot.drop_frame);
  }
  function tcLength(seconds) {
    var r = rate();
    return timecode(Math.round(seconds * r[0] / r[1]), r[0], r[1], shot.drop_frame);
  }

  // ---------------------------------------------------------------- helpers
  function clamp(v, lo, hi) { return v < lo ? lo : v > hi ? hi : v; }
  function round(v, d) { var k = Math.pow(10, d); return Math.round(v * k) / k; }
  function duration() { return shot ? (shot.duration_s || shot.envelope.duration_s) : 1; }
  function rateHz() { return shot.envelope.rate_hz || 100; }
  function el(tag, attrs, parent) {
    var node = document.createElementNS(SVGNS, tag);
    for (var k in attrs) if (attrs[k] !== undefined && attrs[k] !== null) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }
  function h(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }
  function who(s) {
    if (!s) return "—";
    return s.indexOf("user:") === 0 ? s.slice(5) : s;
  }
  function localTime(iso) {
    if (!iso) return "—";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return iso;
    var opts = { day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit", hour12: false };
    if (d.getFullYear() !== new Date().getFullYear()) opts.year = "numeric";
    return d.toLocaleString(undefined, opts);
  }
  function stateLabel(s) { return STATE_LABEL[s] || String(s || "").replace(/_/g, " "); }
  function kindColor(kind) {
    if (KIND_COLORS[kind]) return KIND_COLORS[kind];
    if (!kindColorCache[kind]) {
      var hsh = 0;
      for (var i = 0; i < kind.length; i++) hsh = (hsh * 31 + kind.charCodeAt(i)) >>> 0;
      kindColorCache[kind] = SPARE_COLORS[hsh % SPARE_COLORS.length];
    }
    return kindColorCache[kind];
  }
  function isTyping(node) {
    if (!node) return false;
    if (node.isContentEditable) return true;
    var tag = node.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT") return true;
    if (tag === "INPUT") {
      var t = (node.type || "text").toLowerCase();
      return ["button", "checkbox", "radio", "submit", "reset", "range", "color", "file", "image"].indexOf(t) < 0;
    }
    return false;
  }

  // ---------------------------------------------------------------- messages
  var messageTimer = null;
  function say(text, kind, sticky) {
    var box = $("message");
    clearTimeout(messageTimer);
    if (!text) { box.hidden = true; box.textContent = ""; return; }
    box.className = "message message-" + (kind || "info");
    box.textContent = text;
    box.hidden = false;
    if (!sticky && kind !== "error") messageTimer = setTimeout(function () { box.hidden = true; }, 5000);
  }
  function sayHtmlLogin() {
    var box = $("message");
    clearTimeout(messageTimer);
    box.className = "message message-error";
    box.textContent = "Your session has ended. ";
    var a = h("a", null, "Log in again");
    a.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    box.appendChild(a);
    box.appendChild(document.createTextNode(" (your unsaved edit stays in this tab until you leave it)."));
    box.hidden = false;
  }
  function detailOf(body, status) {
    if (!body) return "HTTP " + status;
    var d = body.detail;
    if (Array.isArray(d)) {  // FastAPI validation errors
      return d.map(function (e) {
        var loc = (e.loc || []).filter(function (p) { return p !== "body"; }).join(".");
        return (loc ? loc + ": " : "") + (e.msg || JSON.stringify(e));
      }).join("; ");
    }
    if (d && typeof d === "object") return JSON.stringify(d);
    return d || body.error || ("HTTP " + status);
  }
  function readJson(resp) {
    return resp.text().then(function (t) {
      try { return t ? JSON.parse(t) : null; } catch (e) { return { detail: t.slice(0, 300) }; }
    });
  }
  /* A failed response shown to the user; returns the parsed body. */
  function reportFailure(resp, what) {
    return readJson(resp).then(function (body) {
      if (resp.status === 401) { sayHtmlLogin(); return body; }
      var text = detailOf(body, resp.status);
      if (resp.status === 403 && body && body.error === "csrf") {
        text = "The page's security token is no longer valid; reload the page (your unsaved edit will be lost unless you save it first in another way).";
      } else if (resp.status === 403) {
        text = "Not allowed: " + text;
      } else if (resp.status === 429) {
        var ra = resp.headers.get("Retry-After");
        text = "Too many requests" + (ra ? "; retry in " + ra + " s" : "") + ".";
      }
      say(what + " failed: " + text, "error");
      return body;
    });
  }

  function call(method, url, body, accept) {
    var opts = {
      method: method, credentials: "same-origin",
      headers: { "Accept": accept || "application/json" }
    };
    if (method !== "GET") opts.headers["X-CSRF-Token"] = CSRF;
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(url, opts);
  }

  // ---------------------------------------------------------------- edit model
  function fromEnvelope(env) {
    return {
      curve: (env.curve || []).slice(),
      events: (env.events || []).map(function (e) { return Object.assign({}, e); }),
      prompt: env.prompt == null ? "" : env.prompt,
      category: env.category == null ? null : env.category,
      position: positionOrNull(env.position)
    };
  }
  /* A position override without its blank fields; null when every field follows the picture. */
  function positionOrNull(p) {
    var out = {};
    var any = false;
    Object.keys(POSITION_FIELDS).forEach(function (id) {
      var k = POSITION_FIELDS[id];
      if (p && p[k] != null && p[k] !== "") { out[k] = Number(p[k]); any = true; }
    });
    return any ? out : null;
  }
  function contentKey(e) {
    return JSON.stringify([e.curve, e.events, e.prompt || "", e.category == null ? null : e.category,
                           e.position]);
  }
  function payload() {
    return {
      curve: edit.curve.slice(),
      events: edit.events.map(function (e) { return Object.assign({}, e); }),
      prompt: edit.prompt === "" ? null : edit.prompt,
      category: edit.category == null || edit.category === "" ? null : edit.category,
      position: edit.position
    };
  }
  function isDirty() { return !!edit && contentKey(edit) !== baseKey; }

  function snapshot() {
    return {
      curve: edit.curve.slice(),
      events: edit.events.map(function (e) { return Object.assign({}, e); }),
      prompt: edit.prompt, category: edit.category, position: edit.position, selected: selected
    };
  }
  function restore(s) {
    edit = { curve: s.curve.slice(), events: s.events.map(function (e) { return Object.assign({}, e); }),
             prompt: s.prompt, category: s.category, position: s.position };
    selected = s.selected < edit.events.length ? s.selected : -1;
  }
  /* Remember the state before an edit. Edits with the same tag in a row (typing) make one step. */
  function checkpoint(tag) {
    if (tag && tag === lastTag) return;
    undoStack.push(snapshot());
    if (undoStack.length > HISTORY_MAX) undoStack.shift();
    redoStack = [];
    lastTag = tag || null;
  }
  function undo() {
    if (!undoStack.length) return;
    redoStack.push(snapshot());
    restore(undoStack.pop());
    lastTag = null;
    changed();
  }
  function redo() {
    if (!redoStack.length) return;
    undoStack.push(snapshot());
    restore(redoStack.pop());
    lastTag = null;
    changed();
  }

  /* Move the curve's bump of the event at t0 to t1: the samples from BUMP_PRE_S before t0 to
   * BUMP_POST_S after it (its decay; cut 20 ms short of the next other event, `nextT`) are
   * copied to the same offsets around t1 (maximum with what is there); the old window is
   * refilled by linear interpolation between the values just outside it, so no trace of the
   * hit is left at its old time. Works from `src`, returns a new array. */
  function moveBump(src, t0, t1, nextT) {
    var hz = rateHz();
    var n = src.length;
    var c0 = Math.round(t0 * hz), c1 = Math.round(t1 * hz);
    if (c0 === c1 || !n) return src.slice();
    var post = BUMP_POST_S;
    if (nextT !== undefined && nextT !== null && nextT > t0) post = Math.min(post, Math.max(0.02, nextT - t0 - 0.02));
    var wPre = Math.round(BUMP_PRE_S * hz), wPost = Math.round(post * hz);
    var out = src.slice();
    var lo = Math.max(0, c0 - wPre), hi = Math.min(n - 1, c0 + wPost);
    if (lo > hi) return out;
    var left = lo - 1 >= 0 ? src[lo - 1] : null;
    var right = hi + 1 < n ? src[hi + 1] : null;
    if (left === null) left = right === null ? 0 : right;
    if (right === null) right = left;
    var span = (hi + 1) - (lo - 1);
    for (var i = lo; i <= hi; i++) out[i] = left + (right - left) * (i - (lo - 1)) / span;
    for (var k = -wPre; k <= wPost; k++) {
      var from = c0 + k, to = c1 + k;
      if (from < 0 || from >= n || to < 0 || to >= n) continue;
      if (src[from] > out[to]) out[to] = src[from];
    }
    return out;
  }

  /* The time of the first event after t0 other than event i (undefined if none). */
  function nextEventAfter(t0, i) {
    var best;
    edit.events.forEach(function (e, j) {
      if (j !== i && e.t > t0 && (best === undefined || e.t < best)) best = e.t;
    });
    return best;
  }

  function nearestXY(t) {
    var best = null, bd = Infinity;
    edit.events.forEach(function (e) {
      var d = Math.abs(e.t - t);
      if (d < bd) { bd = d; best = e; }
    });
    return best ? { x: best.x, y: best.y } : { x: 0.5, y: 0.5 };
  }
  function addEvent(t, strength) {
    checkpoint();
    var kindSel = $("new-kind");
    var kind = kindSel && kindSel.value ? kindSel.value : (shot.kinds && shot.kinds[0]) || "impact";
    var xy = nearestXY(t);
    edit.events.push({ t: round(clamp(t, 0, duration()), 6), strength: round(clamp(strength, 0, 1), 3),
                       x: xy.x, y: xy.y, kind: kind, confidence: 1.0 });
    selected = edit.events.length - 1;
    changed();
  }
  function deleteSelected() {
    if (!boot.can_edit || selected < 0 || selected >= edit.events.length) return;
    checkpoint();
    edit.events.splice(selected, 1);
    selected = -1;
    changed();
  }
  function moveEventTo(i, t) {
    var ev = edit.events[i];
    var nt = round(clamp(t, 0, duration()), 6);
    edit.curve = moveBump(edit.curve, ev.t, nt, nextEventAfter(ev.t, i));
    ev.t = nt;
  }

  /* After any change of the edit: redraw, update the panel, dirty flag and undo buttons. */
  function changed() {
    renderCurve();
    renderEvents();
    renderInspector();
    syncSoundInputs();
    updateDirty();
  }

  function updateDirty() {
    var dirty = isDirty();
    var d = $("dirty");
    d.dataset.dirty = dirty ? "true" : "false";
    d.textContent = dirty ? "● unsaved edit" : (shot ? "saved · v" + shot.latest_version : "—");
    d.title = dirty ? "The edit differs from the latest saved version" : "Matches the latest saved version";
    if ($("save")) $("save").disabled = !dirty || busy;
    if ($("undo")) $("undo").disabled = !undoStack.length;
    if ($("redo")) $("redo").disabled = !redoStack.length;
    var ap = $("approve");
    if (ap) ap.firstChild.nodeValue = dirty && boot.can_edit ? "Save & approve " : "Approve ";
    var base = (shot ? shot.shot + " · " + shot.reel : "Shot") + " — foleyflow review";
    document.title = (dirty ? "● " : "") + base;
    markPreviewStale();
  }

  // ---------------------------------------------------------------- load / apply
  function applyShot(json, opts) {
    opts = opts || {};
    var wasDirty = isDirty();
    var prevVersion = shot ? shot.latest_version : null;
    shot = json;
    var serverEdit = fromEnvelope(json.envelope);
    baseKey = contentKey(serverEdit);
    if (!edit || opts.replace || !wasDirty) {
      // keep the same event selected (the server keeps events in time order)
      var sel = edit && selected >= 0 ? edit.events[selected] : null;
      edit = serverEdit;
      selected = -1;
      if (sel) {
        edit.events.forEach(function (e, i) {
          if (selected < 0 && Math.abs(e.t - sel.t) < 1e-3 && e.kind === sel.kind) selected = i;
        });
      }
    } else if (prevVersion !== null && json.latest_version !== prevVersion) {
      say("v" + json.latest_version + " arrived while you have unsaved changes; saving will ask how to combine them.", "warn", true);
    }
    fillStatic();
    renderHeader();
    renderVersions();
    renderAll();
    syncSoundInputs();
    updateDirty();
  }

  function loadShot(opts) {
    return call("GET", boot.api).then(function (resp) {
      if (!resp.ok) return reportFailure(resp, "Loading the shot").then(function () { return false; });
      return resp.json().then(function (json) { applyShot(json, opts); return true; });
    }).catch(function (err) { say("Loading the shot failed: " + err.message, "error"); return false; });
  }

  var staticFilled = false;
  function fillStatic() {
    if (staticFilled) return;
    staticFilled = true;
    var kinds = shot.kinds && shot.kinds.length ? shot.kinds : ["impact", "step", "scrape", "whoosh"];
    var nk = $("new-kind");
    if (nk) {
      var remembered = null;
      try { remembered = localStorage.getItem("foleyflow.newKind"); } catch (e) { /* off */ }
      kinds.forEach(function (k) {
        var o = h("option", null, k); o.value = k;
        if (k === remembered) o.selected = true;
        nk.appendChild(o);
      });
      nk.addEventListener("change", function () {
        try { localStorage.setItem("foleyflow.newKind", nk.value); } catch (e) { /* off */ }
      });
    }
    var legend = $("kinds-legend");
    kinds.forEach(function (k) {
      var s = h("span", "kind-chip");
      var dot = h("i"); dot.style.background = kindColor(k);
      s.appendChild(dot); s.appendChild(document.createTextNode(k));
      legend.appendChild(s);
    });
    var cat = $("category");
    (shot.categories || []).forEach(function (c) {
      var o = h("option", null, c); o.value = c; cat.appendChild(o);
    });
    var r = rate();
    $("meta-rate").textContent = round(r[0] / r[1], 3) + (shot.drop_frame ? " DF" : "") + " fps";
  }

  function renderHeader() {
    $("version").textContent = "v" + shot.latest_version;
    var st = $("state");
    st.textContent = stateLabel(shot.state);
    st.dataset.state = shot.state;
    st.className = "badge state-" + shot.state;
    $("meta-in").textContent = shot.record_in || tcAt(0);
    $("meta-out").textContent = tcAt(duration());
    $("meta-dur").textContent = tcLength(duration());
    var decided = $("decided");
    if (decided && !decided.hidden && decided.dataset.decision !== shot.state) decided.hidden = true;
  }

  function syncSoundInputs() {
    var p = $("prompt");
    if (document.activeElement !== p && p.value !== (edit.prompt || "")) p.value = edit.prompt || "";
    var cat = $("category");
    var want = edit.category == null ? "" : edit.category;
    if (want && !Array.prototype.some.call(cat.options, function (o) { return o.value === want; })) {
      var o = h("option", null, want); o.value = want; cat.appendChild(o);
    }
    if (cat.value !== want) cat.value = want;
    Object.keys(POSITION_FIELDS).forEach(function (id) {
      var el = $(id);
      var v = edit.position && edit.position[POSITION_FIELDS[id]] != null ? String(edit.position[POSITION_FIELDS[id]]) : "";
      if (document.activeElement !== el && el.value !== v) el.value = v;
    });
  }

  // ---------------------------------------------------------------- plot
  function measure() {
    var w = Math.max(320, svg.clientWidth || svg.parentNode.clientWidth || 800);
    var hgt = Math.max(160, svg.clientHeight || 240);
    var g = { w: w, h: hgt, l: 40, r: 34, t: 24, b: 10 };
    g.W = g.w - g.l - g.r;
    g.H = g.h - g.t - g.b;
    return g;
  }
  function X(t) { return geo.l + (t / duration()) * geo.W; }
  function Y(a) { return geo.t + (1 - a) * geo.H; }       // an event's strength, 0..1
  function dB(v) { return v > 0 ? Math.max(CURVE_FLOOR_DB, 20 * Math.log10(v)) : CURVE_FLOOR_DB; }
  function YL(v) { return geo.t + Math.min(dB(v), 0) / CURVE_FLOOR_DB * geo.H; }  // the curve
  /* The curve's linear RMS at height y: the floor (and under it) is silence. */
  function levelAt(y) {
    var db = clamp((y - geo.t) / geo.H, 0, 1) * CURVE_FLOOR_DB;
    return db <= CURVE_FLOOR_DB + 0.5 ? 0 : Math.pow(10, db / 20);
  }
  function dbText(v) { return v > 0 ? dB(v).toFixed(1) + " dB" : "silence"; }
  function pointer(ev) {
    var r = svg.getBoundingClientRect();
    var x = ev.clientX - r.left, y = ev.clientY - r.top;
    return {
      x: x, y: y,
      t: clamp((x - geo.l) / geo.W * duration(), 0, duration()),
      a: clamp(1 - (y - geo.t) / geo.H, 0, 1),
      rms: levelAt(y),
      inside: x >= geo.l - 2 && x <= geo.l + geo.W + 2 && y >= 0 && y <= geo.t + geo.H + 4
    };
  }

  function renderAll() {
    if (!shot) return;
    geo = measure();
    svg.setAttribute("width", geo.w);
    svg.setAttribute("height", geo.h);
    svg.setAttribute("viewBox", "0 0 " + geo.w + " " + geo.h);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    layers.axes = el("g", { "class": "axes" }, svg);
    layers.overlay = el("g", { "class": "overlay" }, svg);
    layers.curve = el("g", { "class": "curve-layer" }, svg);
    layers.events = el("g", { "class": "events" }, svg);
    layers.top = el("g", { "class": "top" }, svg);
    renderAxes();
    renderOverlay();
    renderCurve();
    renderEvents();
    layers.hover = el("line", { "class": "hover-line", y1: geo.t, y2: geo.t + geo.H, x1: -10, x2: -10 }, layers.top);
    layers.hoverText = el("text", { "class": "hover-text", x: -100, y: geo.t - 8 }, layers.top);
    layers.playhead = el("line", { id: "playhead", "class": "playhead", x1: geo.l, x2: geo.l, y1: 0, y2: geo.t + geo.H }, layers.top);
    layers.playheadCap = el("path", { "class": "playhead-cap", d: "" }, layers.top);
    renderInspector();
    lastPlayheadT = -1;
  }

  function renderAxes() {
    var g = layers.axes, dur = duration();
    el("rect", { "class": "ruler-bg", x: 0, y: 0, width: geo.w, height: geo.t }, g);
    el("rect", { "class": "plot-bg", x: geo.l, y: geo.t, width: geo.W, height: geo.H }, g);
    // left: the curve in dBFS RMS; right: the events' strength
    for (var db = 0; db >= CURVE_FLOOR_DB; db -= 12) {
      var yl = YL(Math.pow(10, db / 20));
      el("line", { "class": db === 0 || db === CURVE_FLOOR_DB ? "grid grid-edge" : (db === -36 ? "grid grid-mid" : "grid"),
                   x1: geo.l, x2: geo.l + geo.W, y1: yl, y2: yl }, g);
      var tx = el("text", { "class": "y-label", x: geo.l - 6, y: yl + 3.5, "text-anchor": "end" }, g);
      tx.textContent = db === 0 ? "0 dB" : String(db);
    }
    [0, 0.5, 1].forEach(function (a) {
      var ts = el("text", { "class": "y-label strength-label", x: geo.l + geo.W + 4, y: Y(a) + 3.5, "text-anchor": "start" }, g);
      ts.textContent = a === 0 ? "0" : a === 1 ? "1" : ".5";
      var tt = el("title", {}, ts);
      tt.textContent = "event strength";
    });
    // frame ticks in the ruler when there is room
    var pxFrame = geo.W / (dur * fps());
    if (pxFrame >= 4) {
      var nf = Math.floor(dur * fps() + 1e-6), d = "";
      for (var f = 0; f <= nf; f++) {
        var x = Math.round(X(f / fps())) + 0.5;
        d += "M" + x + " " + (geo.t - 4) + "V" + geo.t;
      }
      el("path", { "class": "frame-ticks", d: d }, g);
    }
    // whole timecode seconds: a grid line at each, timecode labels where they fit
    var pxSec = geo.W / dur;
    var steps = [1, 2, 5, 10, 15, 30, 60, 120, 300];
    var step = steps[steps.length - 1];
    for (var i = 0; i < steps.length; i++) if (steps[i] * pxSec >= 92) { step = steps[i]; break; }
    secondMarks().forEach(function (m) {
      var labelled = m.sec % step === 0;
      if (!labelled && pxSec < 10) return;
      var xs = Math.round(X(m.t)) + 0.5;
      el("line", { "class": labelled ? "grid grid-sec" : "grid grid-sec minor", x1: xs, x2: xs,
                   y1: labelled ? 2 : geo.t - 8, y2: geo.t + geo.H }, g);
      if (labelled && xs + 80 <= geo.w) {
        var lab = el("text", { "class": "ruler-label", x: xs + 4, y: 12 }, g);
        lab.textContent = m.tc;
      }
    });
    el("line", { "class": "ruler-edge", x1: 0, x2: geo.w, y1: geo.t + 0.5, y2: geo.t + 0.5 }, g);
  }

  /* The frames inside the shot whose timecode starts a second ("…:00"), as
   * {t: seconds into the shot, sec: seconds since midnight on the display, tc}. */
  function secondMarks() {
    var r = rate(), out = [];
    var nf = Math.floor(duration() * r[0] / r[1] + 1e-6);
    for (var f = 0; f <= nf; f++) {
      var tc = timecode((shot.record_in_frame || 0) + f, r[0], r[1], shot.drop_frame);
      if (tc.slice(-2) !== "00") continue;
      var parts = tc.replace(";", ":").split(":");
      out.push({ t: f * r[1] / r[0], tc: tc,
                 sec: Number(parts[0]) * 3600 + Number(parts[1]) * 60 + Number(parts[2]) });
    }
    return out;
  }

  function curvePath(curve, hz) {
    if (!curve.length) return "";
    var out = [], dur = duration();
    for (var i = 0; i < curve.length; i++) {
      var t = Math.min(i / hz, dur);
      out.push((i ? "L" : "M") + X(t).toFixed(1) + " " + YL(curve[i]).toFixed(1));
    }
    return out.join("");
  }

  function renderCurve() {
    if (!geo || !layers.curve) return;
    var g = layers.curve;
    while (g.firstChild) g.removeChild(g.firstChild);
    var line = curvePath(edit.curve, rateHz());
    if (!line) return;
    var lastT = Math.min((edit.curve.length - 1) / rateHz(), duration());
    el("path", { "class": "curve-fill", d: line + "L" + X(lastT).toFixed(1) + " " + YL(0) + "L" + X(0) + " " + YL(0) + "Z" }, g);
    el("path", { "class": "curve", d: line }, g);
  }

  function renderEvents() {
    if (!geo || !layers.events) return;
    var g = layers.events;
    while (g.firstChild) g.removeChild(g.firstChild);
    edit.events.forEach(function (ev, i) {
      var x = X(ev.t), y = Y(ev.strength), color = kindColor(ev.kind);
      var grp = el("g", { "class": "event-g" + (i === selected ? " selected" : "") }, g);
      el("line", { "class": "stem", x1: x, x2: x, y1: Y(0), y2: y, stroke: color,
                   "stroke-dasharray": ev.confidence != null && ev.confidence < 0.5 ? "3 3" : null }, grp);
      var c = el("circle", {
        "class": "event" + (i === selected ? " selected" : ""), cx: x, cy: y, r: i === selected ? 7 : 6,
        fill: color, "data-index": i, "data-t": ev.t, "data-strength": ev.strength, "data-kind": ev.kind
      }, grp);
      var title = el("title", {}, c);
      title.textContent = ev.kind + " · " + tcAt(ev.t) + " · strength " + ev.strength.toFixed(2) +
        (ev.confidence != null ? " · confidence " + Number(ev.confidence).toFixed(2) : "");
    });
  }

  function renderOverlay() {
    var chip = $("overlay-chip");
    if (!geo || !layers.overlay) return;
    var g = layers.overlay;
    while (g.firstChild) g.removeChild(g.firstChild);
    if (!overlay) { chip.hidden = true; markViewing(); return; }
    var env = overlay.env, hz = env.rate_hz || rateHz();
    el("path", { "class": "overlay-curve", d: curvePath(env.curve || [], hz) }, g);
    (env.events || []).forEach(function (ev) {
      el("line", { "class": "overlay-stem", x1: X(ev.t), x2: X(ev.t), y1: Y(0), y2: Y(ev.strength) }, g);
      el("circle", { "class": "overlay-event", cx: X(ev.t), cy: Y(ev.strength), r: 5 }, g);
    });
    chip.hidden = false;
    chip.textContent = "Overlay: v" + overlay.version + "  ✕";
    markViewing();
  }

  function markViewing() {
    document.querySelectorAll("#versions .view-btn").forEach(function (b) {
      var on = overlay && Number(b.dataset.version) === overlay.version;
      b.classList.toggle("active", !!on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    });
  }

  function renderInspector() {
    var box = $("inspector");
    var ev = selected >= 0 ? edit.events[selected] : null;
    box.dataset.empty = ev ? "false" : "true";
    if (!ev) { renderSpots(); return; }
    $("insp-index").textContent = "#" + (selected + 1);
    $("insp-tc").textContent = tcAt(ev.t);
    $("insp-t").textContent = "+" + ev.t.toFixed(3) + " s";
    var s = $("insp-strength");
    if (document.activeElement !== s) s.value = ev.strength.toFixed(2);
    var k = $("insp-kind");
    var kinds = (shot.kinds || []).slice();
    if (kinds.indexOf(ev.kind) < 0) kinds.push(ev.kind);
    if (k.options.length !== kinds.length || Array.prototype.some.call(k.options, function (o, i) { return o.value !== kinds[i]; })) {
      k.innerHTML = "";
      kinds.forEach(function (kd) { var o = h("option", null, kd); o.value = kd; k.appendChild(o); });
    }
    k.value = ev.kind;
    $("insp-conf").textContent = ev.confidence != null ? "conf " + Number(ev.confidence).toFixed(2) : "";
    renderSpots();
  }

  function select(i) {
    selected = i;
    renderEvents();
    renderInspector();
  }

  // ---------------------------------------------------------------- picture spots
  /* Where the selected event (and any event under the playhead) happens in the frame. */
  var spotsKey = "";
  function renderSpots() {
    var box = $("spots");
    if (!shot || !edit || !video.videoWidth) { box.innerHTML = ""; spotsKey = ""; return; }
    var t = video.currentTime, near = 1.5 / fps();
    var show = [];
    edit.events.forEach(function (ev, i) {
      if (i === selected || Math.abs(ev.t - t) <= near) show.push(i);
    });
    var wrap = $("picture-wrap");
    var bw = video.clientWidth, bh = video.clientHeight;
    var scale = Math.min(bw / video.videoWidth, bh / video.videoHeight);
    var cw = video.videoWidth * scale, ch = video.videoHeight * scale;
    var ox = video.offsetLeft + (bw - cw) / 2, oy = video.offsetTop + (bh - ch) / 2;
    var key = show.join(",") + "|" + selected + "|" + Math.round(cw) + "|" + Math.round(ox) + "|" +
      show.map(function (i) { var e = edit.events[i]; return e.x + ":" + e.y + ":" + e.kind; }).join(",");
    if (key === spotsKey) return;
    spotsKey = key;
    box.innerHTML = "";
    show.forEach(function (i) {
      var ev = edit.events[i];
      var s = h("div", "spot" + (i === selected ? " selected" : "") + (Math.abs(ev.t - t) <= near ? " hit" : ""));
      s.style.left = (ox + clamp(ev.x, 0, 1) * cw) + "px";
      s.style.top = (oy + clamp(ev.y, 0, 1) * ch) + "px";
      s.style.borderColor = kindColor(ev.kind);
      s.title = ev.kind + " at " + tcAt(ev.t);
      box.appendChild(s);
    });
    void wrap;
  }

  // ---------------------------------------------------------------- pointer on the plot
  function eventIndexOf(target) {
    var c = target && target.closest ? target.closest("circle.event") : null;
    return c ? Number(c.getAttribute("data-index")) : -1;
  }

  svg.addEventListener("pointerdown", function (ev) {
    if (!shot || ev.button !== 0) return;
    var p = pointer(ev);
    var i = eventIndexOf(ev.target);
    if (i >= 0) {
      select(i);
      if (boot.can_edit) {
        var e = edit.events[i];
        drag = { type: "event", i: i, x0: p.x, y0: p.y, t0: e.t, s0: e.strength, curve0: edit.curve.slice(),
                 moved: false, id: ev.pointerId };
        svg.setPointerCapture(ev.pointerId);
        svg.classList.add("dragging");
      }
      ev.preventDefault();
      return;
    }
    if (!p.inside) return;
    if (ev.shiftKey && boot.can_edit) {
      checkpoint();
      drag = { type: "draw", last: null, id: ev.pointerId };
      drawTo(p);
      svg.setPointerCapture(ev.pointerId);
      svg.classList.add("drawing");
      ev.preventDefault();
      return;
    }
    if (selected >= 0) select(-1);
    seek(p.t);
    drag = { type: "scrub", id: ev.pointerId };
    svg.setPointerCapture(ev.pointerId);
    ev.preventDefault();
  });

  svg.addEventListener("pointermove", function (ev) {
    if (!shot || !geo) return;
    var p = pointer(ev);
    showHover(p);
    if (!drag || ev.pointerId !== drag.id) return;
    if (drag.type === "scrub") { seek(p.t); return; }
    if (drag.type === "draw") { drawTo(p); return; }
    if (drag.type === "event") {
      if (!drag.moved && Math.abs(p.x - drag.x0) < 3 && Math.abs(p.y - drag.y0) < 3) return;
      if (!drag.moved) {
        // the state before the drag, with the curve as it was
        var keep = edit.curve; edit.curve = drag.curve0; checkpoint(); edit.curve = keep;
        drag.moved = true;
      }
      var nt = clamp(drag.t0 + (p.x - drag.x0) / geo.W * duration(), 0, duration());
      var ns = clamp(drag.s0 + (drag.y0 - p.y) / geo.H, 0, 1);
      if (ev.shiftKey) {  // constrain to the dominant axis
        if (Math.abs(p.x - drag.x0) >= Math.abs(p.y - drag.y0)) ns = drag.s0; else nt = drag.t0;
      }
      var e = edit.events[drag.i];
      e.t = round(nt, 6);
      e.strength = round(ns, 3);
      edit.curve = moveBump(drag.curve0, drag.t0, e.t, nextEventAfter(drag.t0, drag.i));
      renderCurve();
      renderEvents();
      renderInspector();
      var d = $("dirty"); d.dataset.dirty = "true"; d.textContent = "● unsaved edit";
    }
  });

  function endDrag(ev) {
    if (!drag || (ev && ev.pointerId !== drag.id)) return;
    var d = drag;
    drag = null;
    try { svg.releasePointerCapture(d.id); } catch (e) { /* gone */ }
    svg.classList.remove("dragging", "drawing");
    if (d.type === "event" && d.moved) changed();
    if (d.type === "draw") changed();
  }
  svg.addEventListener("pointerup", endDrag);
  svg.addEventListener("pointercancel", endDrag);
  svg.addEventListener("pointerleave", function () { if (!drag) hideHover(); });

  svg.addEventListener("dblclick", function (ev) {
    if (!shot || !boot.can_edit || eventIndexOf(ev.target) >= 0 || ev.shiftKey) return;
    var p = pointer(ev);
    if (!p.inside || p.y < geo.t) return;
    addEvent(p.t, p.a);
    ev.preventDefault();
  });

  function drawTo(p) {
    var hz = rateHz(), n = edit.curve.length;
    if (!n) return;
    var i = clamp(Math.round(p.t * hz), 0, n - 1);
    var a = round(p.rms, 7);
    var last = drag.last;
    if (last && last.i !== i) {  // the samples between two pointer moves: a straight line in dB
      var step = i > last.i ? 1 : -1;
      var d0 = last.a > 0 ? dB(last.a) : CURVE_FLOOR_DB, d1 = a > 0 ? dB(a) : CURVE_FLOOR_DB;
      for (var j = last.i + step; j !== i; j += step) {
        var dj = d0 + (d1 - d0) * (j - last.i) / (i - last.i);
        edit.curve[j] = dj <= CURVE_FLOOR_DB ? 0 : round(Math.pow(10, dj / 20), 7);
      }
    }
    edit.curve[i] = a;
    drag.last = { i: i, a: a };
    renderCurve();
    var d = $("dirty"); d.dataset.dirty = "true"; d.textContent = "● unsaved edit";
  }

  function showHover(p) {
    if (!layers.hover) return;
    if (!p.inside) { hideHover(); return; }
    var x = X(p.t);
    layers.hover.setAttribute("x1", x); layers.hover.setAttribute("x2", x);
    // both scales at the pointer: the curve's level (left) and an event's strength (right)
    var txt = tcAt(p.t) + (p.y >= geo.t ? "  " + dbText(p.rms) + " · strength " + p.a.toFixed(2) : "");
    layers.hoverText.textContent = txt;
    var right = x + 6 + 130 > geo.w;
    layers.hoverText.setAttribute("x", right ? x - 6 : x + 6);
    layers.hoverText.setAttribute("text-anchor", right ? "end" : "start");
    layers.hoverText.setAttribute("y", geo.t - 8);
    svg.classList.add("hovering");
  }
  function hideHover() {
    if (!layers.hover) return;
    layers.hover.setAttribute("x1", -10); layers.hover.setAttribute("x2", -10);
    layers.hoverText.textContent = "";
    svg.classList.remove("hovering");
  }

  $("overlay-chip").addEventListener("click", function () { overlay = null; renderOverlay(); });

  // ---------------------------------------------------------------- inspector & sound inputs
  var inspStrength = $("insp-strength");
  inspStrength.addEventListener("input", function () {
    if (!boot.can_edit || selected < 0) return;
    var v = parseFloat(inspStrength.value);
    if (isNaN(v)) return;
    checkpoint("strength:" + selected);
    edit.events[selected].strength = round(clamp(v, 0, 1), 3);
    renderEvents(); updateDirty();
  });
  inspStrength.addEventListener("blur", function () { lastTag = null; renderInspector(); });
  $("insp-kind").addEventListener("change", function () {
    if (!boot.can_edit || selected < 0) return;
    checkpoint();
    edit.events[selected].kind = $("insp-kind").value;
    changed();
  });
  if ($("insp-delete")) $("insp-delete").addEventListener("click", deleteSelected);

  var promptEl = $("prompt");
  promptEl.addEventListener("input", function () {
    if (!boot.can_edit || !edit) return;
    checkpoint("prompt");
    edit.prompt = promptEl.value;
    updateDirty();
  });
  promptEl.addEventListener("blur", function () { lastTag = null; });
  $("category").addEventListener("change", function () {
    if (!boot.can_edit || !edit) return;
    checkpoint();
    edit.category = $("category").value || null;
    updateDirty();
  });

  Object.keys(POSITION_FIELDS).forEach(function (id) {
    var el = $(id);
    el.addEventListener("input", function () {
      if (!boot.can_edit || !edit) return;
      if (el.value !== "" && !isFinite(Number(el.value))) return;
      checkpoint(id);
      var next = Object.assign({}, edit.position || {});
      next[POSITION_FIELDS[id]] = el.value === "" ? null : Number(el.value);
      edit.position = positionOrNull(next);
      updateDirty();
    });
    el.addEventListener("blur", function () { lastTag = null; });
  });

  // ---------------------------------------------------------------- save / conflict
  function setBusy(on) {
    busy = on;
    document.body.classList.toggle("busy", on);
    ["save", "approve", "retake", "omit", "retake-send", "save-mine", "load-theirs"].forEach(function (id) {
      var b = $(id);
      if (b) b.disabled = on || (id === "save" && !isDirty());
    });
  }

  /* Save the edit as a new version. Resolves true when the server has it. */
  function save(baseVersion) {
    if (!boot.can_edit || !shot || busy) return Promise.resolve(false);
    if (baseVersion == null && !isDirty()) {
      say("Nothing to save: the edit matches v" + shot.latest_version + ".", "info");
      return Promise.resolve(true);
    }
    var sentKey = contentKey(edit);
    var commentEl = $("save-comment");
    var comment = commentEl && commentEl.value.trim() ? commentEl.value.trim() : null;
    var body = { base_version: baseVersion != null ? baseVersion : shot.latest_version,
                 envelope: payload(), comment: comment };
    setBusy(true);
    say("Saving…", "info", true);
    return call("POST", boot.api + "/versions", body).then(function (resp) {
      if (resp.status === 200 || resp.status === 201) {
        return readJson(resp).then(function (json) {
          hideConflict();
          if (commentEl) commentEl.value = "";
          var next = json && json.envelope ? Promise.resolve(json) :
            call("GET", boot.api).then(function (r) { return r.json(); });
          return next.then(function (j) {
            var mine = contentKey(edit) === sentKey;
            applyShot(j, { replace: mine });
            if (!mine) updateDirty();
            say(resp.status === 201 ? "Saved as v" + j.latest_version + "." : "Nothing new to save: the edit matches v" + j.latest_version + ".", "ok");
            return true;
          });
        });
      }
      if (resp.status === 409) {
        return readJson(resp).then(function (b) { say(""); showConflict("save", b || {}); return false; });
      }
      return reportFailure(resp, "Saving").then(function () { return false; });
    }).catch(function (err) {
      say("Saving failed: " + err.message + " (your edit is still here).", "error");
      return false;
    }).then(function (ok) { setBusy(false); updateDirty(); return ok; });
  }

  function showConflict(kind, body) {
    conflict = { kind: kind, latest_version: body.latest_version, latest_by: body.latest_by };
    var txt = body.detail || "The shot changed since you loaded it.";
    var extra = [];
    if (body.latest_version != null) extra.push("latest is v" + body.latest_version);
    if (body.latest_by) extra.push("by " + who(body.latest_by));
    $("conflict-text").textContent = txt + (extra.length ? " (" + extra.join(", ") + ")" : "") +
      (kind === "save" ? ". Your edit is kept." : ".");
    var mine = $("save-mine");
    mine.hidden = !(kind === "save" && boot.can_edit);
    $("conflict").hidden = false;
  }
  function hideConflict() { conflict = null; $("conflict").hidden = true; }

  $("load-theirs").addEventListener("click", function () {
    if (isDirty()) checkpoint();  // discarding stays undoable
    loadShot({ replace: true }).then(function (ok) {
      if (!ok) return;
      hideConflict();
      selected = -1; changed();
      say("Loaded v" + shot.latest_version + (undoStack.length ? " — Ctrl+Z brings your edit back." : "."), "ok");
    });
  });
  $("save-mine").addEventListener("click", function () {
    if (!conflict) return;
    save(conflict.latest_version);
  });

  // ---------------------------------------------------------------- decisions
  function decide(decision, comment) {
    if (!boot.can_decide || !shot || busy) return Promise.resolve(false);
    var first = Promise.resolve(true);
    if (decision === "approved" && isDirty() && boot.can_edit) {
      first = save().then(function (ok) {
        if (!ok) say("Not approved: the edit could not be saved. " + ($("message").textContent || ""), "error");
        return ok;
      });
    }
    return first.then(function (ok) {
      if (!ok) return false;
      var body = { version: shot.latest_version, decision: decision, comment: comment || null,
                   expect_state: shot.state };
      setBusy(true);
      return call("POST", boot.api + "/decision", body).then(function (resp) {
        if (resp.ok) {
          return resp.json().then(function (json) {
            hideConflict();
            applyShot(json);
            showDecided(decision, body.version);
            return true;
          });
        }
        if (resp.status === 409) {
          return readJson(resp).then(function (b) { showConflict("decision", b || {}); return false; });
        }
        return reportFailure(resp, "The decision").then(function () { return false; });
      }).catch(function (err) {
        say("The decision failed: " + err.message, "error");
        return false;
      }).then(function (r) { setBusy(false); updateDirty(); return r; });
    });
  }

  function showDecided(decision, version) {
    var box = $("decided");
    if (!box) return;
    $("decided-text").textContent = (DECISION_DONE[decision] || decision) + " v" + version + ".";
    box.hidden = false;
    box.dataset.decision = decision;
    var note = decision === "approved" ? "Approved v" + version + " — synthesis and re-conform are queued." :
      (DECISION_DONE[decision] || decision) + " v" + version + ".";
    if (isDirty() && decision !== "approved") note += " Your unsaved edit was not saved.";
    say(note, "ok", isDirty());
    closeRetake();
  }

  function openRetake() {
    var box = $("retake-box");
    if (!box || !boot.can_decide) return;
    box.hidden = false;
    $("retake-comment").focus();
  }
  function closeRetake() {
    var box = $("retake-box");
    if (box) box.hidden = true;
  }
  function sendRetake() {
    var text = $("retake-comment").value.trim();
    if (!text) {
      say("A retake needs a note saying what should change.", "error");
      $("retake-comment").focus();
      return;
    }
    decide("retake_requested", text).then(function (ok) {
      if (ok) $("retake-comment").value = "";
    });
  }
  if (boot.can_decide) {
    $("approve").addEventListener("click", function () { decide("approved"); });
    $("omit").addEventListener("click", function () { decide("omitted"); });
    $("retake").addEventListener("click", function () {
      if ($("retake-box").hidden) openRetake(); else sendRetake();
    });
    $("retake-box").addEventListener("submit", function (ev) { ev.preventDefault(); sendRetake(); });
    $("retake-cancel").addEventListener("click", closeRetake);
    $("retake-comment").addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); sendRetake(); }
      else if (ev.key === "Escape") { ev.preventDefault(); closeRetake(); $("retake-comment").blur(); }
    });
  }

  // ---------------------------------------------------------------- versions & A/B
  function renderVersions() {
    var list = $("versions");
    var prevA = abChoice("A"), prevB = abChoice("B");
    list.innerHTML = "";
    var versions = (shot.versions || []).slice().sort(function (a, b) { return b.version - a.version; });
    var latest = shot.latest_version;
    var older = versions.filter(function (v) { return v.version !== latest; });
    var fresh = renderedLatest !== latest;  // first render, or a new version arrived
    var defA = prevA != null && !fresh ? prevA : (older.length ? older[0].version : latest);
    var defB = prevB != null && !fresh ? prevB : latest;
    renderedLatest = latest;
    versions.forEach(function (v) {
      var li = h("li", "version-row state-" + v.state + (v.version === latest ? " latest" : ""));
      li.dataset.version = v.version;
      var ab = h("span", "ab-radios");
      ["A", "B"].forEach(function (side) {
        var lab = h("label", "ab-radio ab-" + side.toLowerCase());
        lab.title = "Use v" + v.version + " as " + side;
        var r = h("input"); r.type = "radio"; r.name = "ab-" + side.toLowerCase(); r.value = v.version;
        r.checked = v.version === (side === "A" ? defA : defB);
        r.addEventListener("change", function () { if (mode === "ab") loadAB(false); });
        lab.appendChild(r); lab.appendChild(document.createTextNode(side));
        ab.appendChild(lab);
      });
      li.appendChild(ab);

      var main = h("div", "version-main");
      var line1 = h("div", "version-line");
      line1.appendChild(h("strong", "vnum", "v" + v.version));
      line1.appendChild(h("span", "badge small state-" + v.state, stateLabel(v.state)));
      var src = h("span", "vsrc", v.source || ""); line1.appendChild(src);
      var viewBtn = h("button", "btn btn-tiny view-btn", "view");
      viewBtn.type = "button"; viewBtn.dataset.version = v.version;
      viewBtn.title = "Show v" + v.version + " faintly on the plot";
      viewBtn.addEventListener("click", function () { toggleOverlay(v.version); });
      line1.appendChild(viewBtn);
      main.appendChild(line1);

      var line2 = h("div", "version-line meta");
      line2.appendChild(h("span", "vby", who(v.created_by)));
      var time = h("time", "vat", localTime(v.created_at)); time.dateTime = v.created_at || ""; time.title = v.created_at || "";
      line2.appendChild(time);
      if (v.parent != null) line2.appendChild(h("span", "vparent", "from v" + v.parent));
      main.appendChild(line2);
      if (v.comment) main.appendChild(h("div", "vcomment", v.comment));
      (v.decisions || []).forEach(function (d) {
        var dl = h("div", "decision-line state-" + d.decision);
        dl.appendChild(h("span", "dmark", d.decision === "approved" ? "✓" : d.decision === "omitted" ? "⊘" : "↺"));
        dl.appendChild(h("span", "dwhat", stateLabel(d.decision)));
        dl.appendChild(h("span", "dwho", who(d.by)));
        var dt = h("time", "dat", localTime(d.at)); dt.title = d.at || ""; dl.appendChild(dt);
        if (d.comment) dl.appendChild(h("div", "dcomment", d.comment));
        main.appendChild(dl);
      });
      li.appendChild(main);
      list.appendChild(li);
    });
    markViewing();
    markAudible();
    if (mode === "ab" && abVersions && (abVersions.A !== abChoice("A") || abVersions.B !== abChoice("B"))) loadAB(false);
  }

  var renderedLatest = null;
  function abChoice(side) {
    var r = document.querySelector('#versions input[name="ab-' + side.toLowerCase() + '"]:checked');
    return r ? Number(r.value) : null;
  }

  function toggleOverlay(v) {
    if (overlay && overlay.version === v) { overlay = null; renderOverlay(); return; }
    call("GET", boot.api + "/versions/" + v).then(function (resp) {
      if (!resp.ok) return reportFailure(resp, "Loading v" + v);
      return resp.json().then(function (env) {
        overlay = { version: v, env: env };
        renderOverlay();
      });
    }).catch(function (err) { say("Loading v" + v + " failed: " + err.message, "error"); });
  }

  /* A version's audio as a local blob URL: versions never change, and a blob is always
   * seekable (the API need not answer range requests for WAVs). */
  var versionAudio = {};
  function versionAudioUrl(v) {
    if (!versionAudio[v]) {
      versionAudio[v] = call("GET", boot.api + "/versions/" + v + "/audio", undefined, "audio/wav").then(function (resp) {
        if (!resp.ok) {
          delete versionAudio[v];
          return reportFailure(resp, "Audio of v" + v).then(function () { return null; });
        }
        return resp.blob().then(function (blob) { return URL.createObjectURL(blob); });
      }, function (err) {
        delete versionAudio[v];
        say("Audio of v" + v + " failed: " + err.message, "error");
        return null;
      });
    }
    return versionAudio[v];
  }
  function loadSide(side, v) {
    var a = audio[side];
    if (a.dataset.version === String(v)) return Promise.resolve(true);
    a.dataset.version = String(v);
    a.dataset.src = boot.api + "/versions/" + v + "/audio";
    return versionAudioUrl(v).then(function (url) {
      if (!url || a.dataset.version !== String(v)) return false;
      a.src = url;
      return true;
    });
  }
  var abLoading = 0;
  function loadAB(startPlaying) {
    var a = abChoice("A"), b = abChoice("B");
    if (a == null || b == null) { say("Pick an A and a B version.", "error"); return; }
    abVersions = { A: a, B: b };
    setMode("ab");
    var ticket = ++abLoading;
    $("ab-play").classList.add("working");
    Promise.all([loadSide("A", a), loadSide("B", b)]).then(function (res) {
      if (ticket !== abLoading) return;
      $("ab-play").classList.remove("working");
      if (!res[0] || !res[1] || mode !== "ab") return;
      markAudible();
      if (startPlaying) startPlayback();
      else if (!video.paused) syncAll(true, true);
    });
  }

  function setMode(m) {
    if (mode !== m) {
      activeAudios().forEach(function (a) { a.pause(); });
      mode = m;
    }
    markAudible();
    if (!video.paused) syncAll(true, true);
  }

  function markAudible() {
    audio.A.muted = !(mode === "ab" && audible === "A");
    audio.B.muted = !(mode === "ab" && audible === "B");
    audio.preview.muted = mode !== "preview";
    var label = $("audio-mode"), ab = $("ab-label");
    label.dataset.mode = mode;
    document.querySelectorAll("#versions .version-row").forEach(function (li) {
      li.classList.remove("audible", "is-a", "is-b");
    });
    if (mode === "ab" && abVersions) {
      var v = abVersions[audible];
      label.textContent = "Hearing " + audible + " · v" + v;
      ab.textContent = "hearing " + audible + " (v" + v + ")";
      ab.dataset.audible = audible;
      var rowA = document.querySelector('#versions .version-row[data-version="' + abVersions.A + '"]');
      var rowB = document.querySelector('#versions .version-row[data-version="' + abVersions.B + '"]');
      if (rowA) rowA.classList.add("is-a");
      if (rowB) rowB.classList.add("is-b");
      var cur = audible === "A" ? rowA : rowB;
      if (cur) cur.classList.add("audible");
    } else if (mode === "preview") {
      label.textContent = previewKey === (edit ? contentKey(edit) : null) ? "Hearing preview of edit" : "Hearing preview (stale)";
      ab.textContent = "";
      delete ab.dataset.audible;
    } else {
      label.textContent = "No sound — L preview · X A/B";
      if (!boot.can_edit) label.textContent = "No sound — X for A/B";
      ab.textContent = "";
      delete ab.dataset.audible;
    }
  }
  function markPreviewStale() { if (mode === "preview") markAudible(); }

  function toggleAB() {
    if (mode !== "ab") { loadAB(true); return; }
    audible = audible === "A" ? "B" : "A";
    markAudible();
  }

  function preview() {
    if (!boot.can_edit || !shot) return;
    var key = contentKey(edit);
    if (previewUrl && previewKey === key) {
      setMode("preview");
      startPlayback();
      return;
    }
    var btn = $("preview");
    if (btn.disabled) return;
    btn.disabled = true; btn.classList.add("working");
    say("Rendering preview…", "info", true);
    call("POST", boot.api + "/preview", { envelope: payload() }, "audio/wav").then(function (resp) {
      if (!resp.ok) return reportFailure(resp, "Preview");
      return resp.blob().then(function (blob) {
        if (previewUrl) URL.revokeObjectURL(previewUrl);
        previewUrl = URL.createObjectURL(blob);
        previewKey = key;
        audio.preview.src = previewUrl;
        say("Preview ready.", "ok");
        setMode("preview");
        startPlayback();
      });
    }).catch(function (err) {
      say("Preview failed: " + err.message, "error");
    }).then(function () { btn.disabled = false; btn.classList.remove("working"); });
  }

  // ---------------------------------------------------------------- transport & sync
  function activeAudios() {
    if (mode === "preview") return [audio.preview];
    if (mode === "ab") return [audio.A, audio.B];
    return [];
  }
  function seek(t) {
    t = clamp(t, 0, duration());
    if (video.duration && t > video.duration) t = video.duration;
    video.currentTime = t;
    syncAll(true, false);
    updatePlayhead(true);
  }
  function stepFrames(n) {
    if (!video.paused) video.pause();
    var f = frameAt(video.currentTime) + n;
    seek((f + 0.5) / fps());  // the middle of the frame, so the frame shown is unambiguous
  }
  function startPlayback() {
    if (video.ended || video.currentTime >= (video.duration || duration()) - 0.02) video.currentTime = 0;
    if (video.paused) {
      var p = video.play();
      if (p && p.catch) p.catch(function (err) { say("Playback failed: " + err.message, "error"); });
    } else {
      syncAll(true, true);
    }
  }
  function togglePlay() {
    if (video.paused) startPlayback(); else video.pause();
  }
  /* Keep the active audio on the picture's clock. An audio element starts (or resumes after a
   * seek) a little after it is told to, so each one learns that lag ("lead") and seeks that far
   * ahead; drift is judged on a smoothed estimate once a seek has settled, and a re-sync happens
   * only beyond DRIFT_S, so the audio is not sought over and over. */
  function syncAll(force, play) {
    var vt = video.currentTime, now = performance.now();
    var playing = !video.paused;
    activeAudios().forEach(function (a) {
      if (!a.getAttribute("src") || a.readyState < 1) return;
      var within = !a.duration || vt < a.duration - 0.01;
      if (a.playbackRate !== video.playbackRate) a.playbackRate = video.playbackRate;
      if (force) {
        resync(a, vt, now, playing);
      } else if (playing && within && !a.paused && !a.seeking && now >= (a._settle || 0)) {
        var d = vt - a.currentTime;  // > 0: the audio is late
        if (a._learn) {
          a._learn = false;
          if (Math.abs(d) < 0.3) a._lead = clamp((a._lead || 0) + d, 0, 0.25);
        }
        a._drift = a._drift == null ? d : a._drift * 0.7 + d * 0.3;
        if (Math.abs(a._drift) > DRIFT_S) resync(a, vt, now, true);
      }
      if ((play || playing) && a.paused && within) {
        var p = a.play();
        if (p && p.catch) p.catch(function () { /* interrupted by a pause: fine */ });
      }
      if (!playing && !play && !a.paused) a.pause();
    });
  }
  function resync(a, vt, now, playing) {
    var target = vt + (playing ? (a._lead || 0) : 0);
    if (a.duration) target = Math.min(target, a.duration);
    try { a.currentTime = target; } catch (e) { /* not seekable yet */ }
    a._settle = now + 300;
    a._learn = playing;
    a._drift = null;
  }
  video.addEventListener("play", function () { syncAll(true, true); updatePlayButton(); });
  video.addEventListener("playing", function () { syncAll(true, true); });
  video.addEventListener("pause", function () {
    activeAudios().forEach(function (a) { a.pause(); });
    updatePlayButton();
  });
  video.addEventListener("seeked", function () { syncAll(true, !video.paused); });
  video.addEventListener("ended", function () { activeAudios().forEach(function (a) { a.pause(); }); updatePlayButton(); });
  video.addEventListener("loadedmetadata", function () { spotsKey = ""; renderSpots(); });
  video.addEventListener("error", function () {
    var err = video.error;
    say("The picture could not be played" + (err && err.message ? ": " + err.message : "") + ".", "error");
  });
  [audio.A, audio.B, audio.preview].forEach(function (a) {
    a.addEventListener("canplay", function () { if (!video.paused && activeAudios().indexOf(a) >= 0) syncAll(false, true); });
    a.addEventListener("error", function () {
      if (!a.getAttribute("src")) return;
      var which = a === audio.preview ? "Preview audio" : "Audio of v" + (abVersions ? abVersions[a === audio.A ? "A" : "B"] : "?");
      say(which + " could not be loaded.", "error");
    });
  });

  var loopBox = $("loop");
  try { loopBox.checked = localStorage.getItem("foleyflow.loop") !== "0"; } catch (e) { loopBox.checked = true; }
  video.loop = loopBox.checked;
  loopBox.addEventListener("change", function () {
    video.loop = loopBox.checked;
    try { localStorage.setItem("foleyflow.loop", loopBox.checked ? "1" : "0"); } catch (e) { /* off */ }
  });

  function updatePlayButton() {
    var b = $("play");
    b.setAttribute("aria-pressed", video.paused ? "false" : "true");
    b.classList.toggle("active", !video.paused);
  }
  $("play").addEventListener("click", togglePlay);
  $("to-start").addEventListener("click", function () { seek(0); });
  if ($("preview")) $("preview").addEventListener("click", preview);
  $("ab-play").addEventListener("click", function () {
    if (mode === "ab" && !video.paused) { toggleAB(); return; }
    loadAB(true);
  });
  if ($("save")) $("save").addEventListener("click", function () { save(); });
  if ($("undo")) $("undo").addEventListener("click", undo);
  if ($("redo")) $("redo").addEventListener("click", redo);

  var lastPlayheadT = -1, lastTc = "";
  function updatePlayhead(force) {
    if (!shot || !geo || !layers.playhead) return;
    var t = video.currentTime || 0;
    if (!force && t === lastPlayheadT) return;
    lastPlayheadT = t;
    var x = X(clamp(t, 0, duration()));
    layers.playhead.setAttribute("x1", x);
    layers.playhead.setAttribute("x2", x);
    layers.playheadCap.setAttribute("d", "M" + (x - 5) + " 0H" + (x + 5) + "V6L" + x + " 11L" + (x - 5) + " 6Z");
    var tc = tcAt(t);
    if (tc !== lastTc) {
      lastTc = tc;
      $("tc").textContent = tc;
      $("burnin").textContent = tc;
    }
    $("tc-rel").textContent = "+" + t.toFixed(3) + " s";
    renderSpots();
  }
  function frame() {
    updatePlayhead(false);
    if (!video.paused) syncAll(false, false);
    requestAnimationFrame(frame);
  }

  // ---------------------------------------------------------------- keyboard
  document.addEventListener("keydown", function (ev) {
    if (ev.defaultPrevented) return;
    var mod = ev.ctrlKey || ev.metaKey;
    var key = ev.key;
    var lower = key.length === 1 ? key.toLowerCase() : key;
    var typing = isTyping(document.activeElement);

    // Ctrl+S saves from anywhere (so the browser's "save page" never opens).
    if (mod && !ev.altKey && lower === "s") {
      ev.preventDefault();
      if (boot.can_edit) save();
      return;
    }
    if (typing) {
      if (key === "Escape") { document.activeElement.blur(); }
      return;
    }
    if (mod && !ev.altKey && lower === "z") {
      ev.preventDefault();
      if (!boot.can_edit) return;
      if (ev.shiftKey) redo(); else undo();
      return;
    }
    if (mod && !ev.altKey && lower === "y") { ev.preventDefault(); if (boot.can_edit) redo(); return; }
    if (mod || ev.altKey) return;

    switch (lower) {
      case " ":
        ev.preventDefault(); togglePlay(); return;
      case "Home":
        ev.preventDefault(); seek(0); return;
      case "End":
        ev.preventDefault(); seek(duration()); return;
      case "ArrowLeft": case "ArrowRight":
        ev.preventDefault();
        var n = (key === "ArrowLeft" ? -1 : 1) * (ev.shiftKey ? 10 : 1);
        if (selected >= 0 && boot.can_edit) {
          checkpoint("nudge:" + selected);
          var e = edit.events[selected];
          var f = Math.round(e.t * fps()) + n;
          moveEventTo(selected, f / fps());
          changed();
        } else {
          stepFrames(n);
        }
        return;
      case "Delete": case "Backspace":
        if (selected >= 0 && boot.can_edit) { ev.preventDefault(); deleteSelected(); }
        return;
      case "Escape":
        if ($("retake-box") && !$("retake-box").hidden) { closeRetake(); return; }
        if (selected >= 0) { select(-1); return; }
        if (overlay) { overlay = null; renderOverlay(); return; }
        if (!$("conflict").hidden) return;
        say("");
        return;
      case "a":
        if (boot.can_decide) { ev.preventDefault(); decide("approved"); }
        return;
      case "r":
        if (boot.can_decide) { ev.preventDefault(); openRetake(); }
        return;
      case "o":
        if (boot.can_decide) { ev.preventDefault(); decide("omitted"); }
        return;
      case "l":
        if (boot.can_edit) { ev.preventDefault(); preview(); }
        return;
      case "x":
        ev.preventDefault(); toggleAB(); return;
      case "n":
        ev.preventDefault();
        window.location.href = boot.next_url || boot.queue_url || "/";
        return;
      case "p":
        if (boot.prev_url) { ev.preventDefault(); window.location.href = boot.prev_url; }
        return;
    }
  });
  // keys other than typing ones are handled on the page, so a clicked button keeps no focus
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest && ev.target.closest("button, input[type=radio], input[type=checkbox], a.btn");
    if (b && ev.detail > 0 && b.blur) b.blur();
  });
  window.addEventListener("beforeunload", function (ev) {
    if (isDirty()) { ev.preventDefault(); ev.returnValue = ""; return ""; }
  });

  // ---------------------------------------------------------------- start
  if (window.ResizeObserver) {
    var pending = false;
    new ResizeObserver(function () {
      if (pending) return;
      pending = true;
      requestAnimationFrame(function () { pending = false; if (shot) { renderAll(); updatePlayhead(true); } spotsKey = ""; renderSpots(); });
    }).observe($("plot-wrap"));
  } else {
    window.addEventListener("resize", function () { if (shot) { renderAll(); updatePlayhead(true); } });
  }
  if (boot.can_decide && boot.next_url && $("next")) $("next").href = boot.next_url;
  updatePlayButton();
  markAudible();
  loadShot().then(function (ok) {
    if (ok) updatePlayhead(true);
    requestAnimationFrame(frame);
  });
})();
