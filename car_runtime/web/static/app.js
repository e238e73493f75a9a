// car-runtime cockpit: plain JS, no build step. Talks only to /api/ (see docs/web.md).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

const HEARTBEAT_MS = 100;
const clientId = sessionStorage.getItem("clientId") || (() => {
  const id = Array.from(crypto.getRandomValues(new Uint8Array(12)), b => b.toString(16).padStart(2, "0")).join("");
  sessionStorage.setItem("clientId", id);
  return id;
})();

const S = {
  csrf: null, youControl: false, controlled: false, ws: null, wsTimer: null, hbTimer: null,
  telemetry: null, tab: "drive", view: "camera", live: null, calibrating: false,
  cal: null, draft: null, pulse: { servo: null, motor: null }, speedTimer: null, facts: {},
};
// Diagnostics for benchmarks and tests: what the live view drew, and how stale it was.
window.__live = { frames: 0, lastSeq: 0, staleMs: [] };

async function api(method, path, body) {
  const headers = { "X-Client-Id": clientId };
  if (S.csrf) headers["X-CSRF-Token"] = S.csrf;
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
  let res;
  try {
    res = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  } catch (e) {
    return { ok: false, status: 0, data: { error: "the car does not answer (" + e.message + ")" } };
  }
  let data = {};
  try { data = await res.json(); } catch (e) { data = { error: res.status + " " + res.statusText }; }
  if (res.status === 401 && path !== "/api/login") showLogin("Logged out: " + (data.error || ""));
  return { ok: res.ok && data.ok !== false, status: res.status, data };
}

function say(el, text, kind) {
  el.textContent = text || "";
  el.className = "msg" + (kind ? " " + kind : "");
}

function banner(text, bad) {
  const b = $("#banner");
  b.hidden = !text;
  b.textContent = text || "";
  b.className = "banner" + (bad ? " bad" : "");
}

// ---------------------------------------------------------------- login and session
function showLogin(msg) {
  stopLive();
  if (S.ws) { S.ws.onclose = null; S.ws.close(); S.ws = null; }
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = msg || "";
  $("#password").focus();
}

async function boot() {
  const r = await api("GET", "/api/session");
  if (!r.ok || !r.data.logged_in) { showLogin(); return; }
  S.csrf = r.data.csrf;
  S.facts = r.data;
  $("#login").hidden = true;
  $("#app").hidden = false;
  if (!r.data.controlled) await takeControl(false);
  connect();
  route();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const r = await api("POST", "/api/login", { password: $("#password").value });
  $("#password").value = "";
  if (!r.ok) { $("#login-error").textContent = r.data.error || "login failed"; return; }
  S.csrf = r.data.csrf;
  boot();
});

$("#logout").addEventListener("click", async () => {
  await api("POST", "/api/logout");
  S.csrf = null;
  showLogin("Logged out.");
});

async function takeControl(announce = true) {
  const r = await api("POST", "/api/control");
  if (r.ok) { S.youControl = true; if (announce) say($("#drive-msg"), r.data.message, "good"); }
  else if (announce) say($("#drive-msg"), r.data.error, "bad");
  renderControl();
}

// ---------------------------------------------------------------- WebSocket: telemetry + heartbeat
function connect() {
  if (S.ws) return;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/api/ws?client=${clientId}`);
  S.ws = ws;
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    if (msg.t === "telemetry") onTelemetry(msg);
  };
  ws.onopen = () => { banner(""); startHeartbeat(); };
  ws.onclose = () => {
    S.ws = null;
    stopHeartbeat();
    $("#state").textContent = "offline";
    $("#state").className = "pill fault";
    $("#start").disabled = true;
    banner("Connection to the car lost: reconnecting… (the car stopped)", true);
    clearTimeout(S.wsTimer);
    S.wsTimer = setTimeout(async () => {
      const r = await api("GET", "/api/session");
      if (r.ok && r.data.logged_in) connect();
    }, 1000);
  };
}

function startHeartbeat() {
  stopHeartbeat();
  // Heartbeats only while this page is visible: a hidden page cannot be stopped by hand,
  // so the deadman disarms the car.
  S.hbTimer = setInterval(() => {
    if (S.ws && S.ws.readyState === 1 && S.youControl && document.visibilityState === "visible") S.ws.send("hb");
  }, HEARTBEAT_MS);
}

function stopHeartbeat() { clearInterval(S.hbTimer); S.hbTimer = null; }

// ---------------------------------------------------------------- telemetry -> page
const fmt = (v, digits = 1) => (v === null || v === undefined) ? "—" : (typeof v === "number" ? v.toFixed(digits) : String(v));

function onTelemetry(m) {
  S.telemetry = m;
  S.youControl = !!m.you_control;
  S.controlled = m.web.controlled;
  const st = m.status;
  const calibrating = st.calibrating;
  const pill = $("#state");
  const stateName = calibrating ? "calibrating" : st.state;
  pill.textContent = stateName;
  pill.className = "pill " + stateName;
  let stateText = st.state;
  if (st.state === "fault") stateText += st.exit_reason ? ": " + st.exit_reason : " (STOP clears it)";
  if (st.loading) stateText += ` · loading ${st.loading.name} (${st.loading.phase}, ${st.loading.elapsed_s} s)`;
  if (calibrating) stateText += " · calibrating";
  $("#state-text").textContent = stateText;
  $("#model-name").textContent = st.model;
  $("#fps").textContent = fmt(st.fps);
  $("#age").textContent = m.frame_age_ms ? `${fmt(m.frame_age_ms.p50)}/${fmt(m.frame_age_ms.p99)} ms` : "—";
  if (document.activeElement !== $("#speed") && !S.speedTimer) {
    $("#speed").value = st.max_speed_pct;
    $("#speed-value").textContent = fmt(st.max_speed_pct, 0);
  }
  $("#start").disabled = !S.youControl || st.state === "armed" || calibrating;
  for (const id of ["#speed", "#speed-up", "#speed-down"]) $(id).disabled = !S.youControl;
  const warnings = (m.web.warnings || []).slice();
  if (!S.youControl) warnings.unshift(S.controlled ? "Watching: another page controls the car. You can STOP it." : "Nobody controls the car.");
  banner(warnings.join(" · "), false);
  renderControl();
  const load = m.web.last_load;
  if (load && load.at !== S.lastLoadAt) {
    S.lastLoadAt = load.at;
    say($("#load-msg"), load.ok ? load.message : `${load.error} (${load.message})`, load.ok ? "good" : "bad");
    if (S.tab === "models") refreshModels();
  }
  if (S.tab === "status") renderStatus(m);
  const rec = m.status.recording;
  const recKey = rec ? `${rec.state} ${rec.session} ${rec.sessions}` : "";
  if (S.tab === "runs" && recKey !== S.recKey) refreshRuns();  // a session opened or closed
  S.recKey = recKey;
  S.calibrating = calibrating;
  renderCalibrationState();
}

function renderControl() {
  const c = $("#control");
  c.textContent = "";
  if (S.youControl) { c.textContent = "you control"; return; }
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = "Take control";
  b.addEventListener("click", () => takeControl(true));
  c.append(S.controlled ? "watching " : "", b);
}

function guardianText(g, trips) {
  if (!g) return "none (no PWM output: nothing to guard)";
  if (!g.alive) return `LOST: ${g.failure || "gone"}`;
  return `pid ${g.pid}, deadline ${g.deadline_ms} ms, ${trips || 0} trips`;
}

function recordingText(r) {
  if (!r) return "off (set record_dir)";
  if (r.error) return `stopped: ${r.error}`;
  const dropped = r.dropped_total ? `, ${r.dropped_total} dropped` : "";
  if (r.state === "recording") return `recording ${r.session}: ${r.frames} frames${dropped}`;
  return `${r.state}, ${r.sessions} sessions${dropped}`;
}

function renderStatus(m) {
  const st = m.status, sys = m.system || {};
  const stages = st.stages || {};
  const rows = [
    ["state", st.state], ["model", st.model], ["action space", st.action_space_type],
    ["fps", fmt(st.fps)], ["frame age p50 / p99 (ms)", m.frame_age_ms ? `${fmt(m.frame_age_ms.p50)} / ${fmt(m.frame_age_ms.p99)}` : null],
    ...Object.entries(stages).map(([k, v]) => [`${k} p50 / p99 (ms)`, `${fmt(v.p50_ms, 2)} / ${fmt(v.p99_ms, 2)}`]),
    ["frames / driven", `${st.frames} / ${st.driven}`], ["stale / skipped frames", `${st.stale} / ${st.skipped}`],
    ["deadline misses", st.deadline_misses], ["clamped / non-finite", `${st.clamped} / ${st.nonfinite}`],
    ["deadman", st.deadman_ms ? `${st.deadman_ms} ms, ${st.deadman_trips} trips` : "OFF"],
    ["max speed (%)", st.max_speed_pct],
    ["CPU (all cores, %)", sys.cpu_pct], ["car-runtime CPU (% of a core)", sys.process_cpu_pct],
    ["CPU temperature (°C)", sys.cpu_temp_c], ["CPU frequency (MHz)", sys.cpu_freq_mhz],
    ["memory used", sys.memory ? `${sys.memory.used_pct} % of ${sys.memory.total_mb} MB` : null],
    ...Object.entries(sys.disk_free_mb || {}).map(([k, v]) => [`free disk: ${k} (MB)`, v]),
    ["battery (%)", sys.battery_pct],
    ["battery level", sys.battery_level ? `${sys.battery_level.level} / ${sys.battery_level.max}` : null],
    ["pages / live views", `${m.web.pages} / ${m.web.viewers}`],
    ["guardian", guardianText(st.guardian, st.guardian_trips)],
    ["recording", recordingText(st.recording)],
  ];
  const known = new Set(["state", "fps", "frame_age_ms", "frames", "stale", "skipped", "deadline_misses", "clamped",
    "nonfinite", "deadman_ms", "deadman_trips", "hook_errors", "calibrating", "stages", "model", "model_path",
    "action_space_type", "loading", "max_speed_pct", "armed_requested", "driven", "exit_reason",
    "guardian", "guardian_trips", "recording"]);
  for (const [k, v] of Object.entries(st)) if (!known.has(k)) rows.push([k, typeof v === "object" ? JSON.stringify(v) : v]);
  const t = $("#status-table");
  t.textContent = "";
  for (const [k, v] of rows) {
    const tr = t.insertRow();
    tr.insertCell().textContent = k;
    const td = tr.insertCell();
    if (v === null || v === undefined) { td.textContent = "absent"; td.className = "absent"; }
    else td.textContent = typeof v === "number" ? String(v) : v;
  }
}

// ---------------------------------------------------------------- drive
$("#start").addEventListener("click", async () => {
  say($("#drive-msg"), "arming…");
  if (S.ws && S.ws.readyState === 1) S.ws.send("hb");  // the deadman wants a fresh heartbeat
  const r = await api("POST", "/api/arm");
  say($("#drive-msg"), r.ok ? r.data.message : r.data.error, r.ok ? "good" : "bad");
});

async function stop() {
  const r = await api("POST", "/api/stop");
  say($("#drive-msg"), r.ok ? "STOPPED: " + r.data.message : (r.data.error || "stop failed"), r.ok ? "good" : "bad");
}
$("#stop").addEventListener("click", stop);
document.addEventListener("keydown", (ev) => {
  if (ev.code === "Space" && !["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) {
    ev.preventDefault();
    stop();
  }
});

function sendSpeed(pct) {
  pct = Math.max(0, Math.min(100, Math.round(pct)));
  $("#speed").value = pct;
  $("#speed-value").textContent = pct;
  clearTimeout(S.speedTimer);
  S.speedTimer = setTimeout(async () => {
    const r = await api("POST", "/api/max_speed", { pct });
    S.speedTimer = null;
    if (!r.ok) say($("#drive-msg"), r.data.error, "bad");
  }, 80);
}
$("#speed").addEventListener("input", (ev) => sendSpeed(Number(ev.target.value)));
$("#speed-up").addEventListener("click", () => sendSpeed(Number($("#speed").value) + 1));
$("#speed-down").addEventListener("click", () => sendSpeed(Number($("#speed").value) - 1));

// ---------------------------------------------------------------- live view (MJPEG parsed here)
$("#view-camera").addEventListener("click", () => setView("camera"));
$("#view-model").addEventListener("click", () => setView("model"));

function setView(v) {
  S.view = v;
  $("#view-camera").classList.toggle("on", v === "camera");
  $("#view-model").classList.toggle("on", v === "model");
  $("#live-canvas").classList.toggle("pixelated", v === "model");
  stopLive();
  syncLive();
}

function syncLive() {
  const want = S.tab === "drive" && document.visibilityState === "visible" && !$("#app").hidden;
  if (want && !S.live) startLive();
  if (!want && S.live) stopLive();
}

function stopLive() {
  if (S.live) { S.live.abort(); S.live = null; }
  $("#live-note").textContent = "live view paused";
}

const CRLF2 = [13, 10, 13, 10];
function findSeq(buf, seq, from) {
  outer: for (let i = from; i <= buf.length - seq.length; i++) {
    for (let j = 0; j < seq.length; j++) if (buf[i + j] !== seq[j]) continue outer;
    return i;
  }
  return -1;
}

async function startLive() {
  if (S.facts.video_fps === 0) { $("#live-note").textContent = "live view off (web_video_fps: 0)"; return; }
  const ctrl = new AbortController();
  S.live = ctrl;
  $("#live-note").textContent = "connecting…";
  let res;
  try {
    res = await fetch(`/api/live.mjpg?view=${S.view}`, { signal: ctrl.signal, credentials: "same-origin" });
  } catch (e) { if (S.live === ctrl) { S.live = null; setTimeout(syncLive, 1000); } return; }
  if (!res.ok || !res.body) {
    let msg = res.status + "";
    try { msg = (await res.json()).error; } catch (e) { /* keep the status */ }
    $("#live-note").textContent = "live view: " + msg;
    if (S.live === ctrl) S.live = null;
    return;
  }
  const reader = res.body.getReader();
  let buf = new Uint8Array(0);
  const canvas = $("#live-canvas"), g = canvas.getContext("2d");
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const merged = new Uint8Array(buf.length + value.length);
      merged.set(buf); merged.set(value, buf.length); buf = merged;
      for (;;) {
        const end = findSeq(buf, CRLF2, 0);
        if (end < 0) break;
        const head = new TextDecoder().decode(buf.subarray(0, end));
        const h = {};
        for (const line of head.split("\r\n")) {
          const k = line.indexOf(":");
          if (k > 0) h[line.slice(0, k).trim().toLowerCase()] = line.slice(k + 1).trim();
        }
        const len = parseInt(h["content-length"], 10);
        if (!(len >= 0)) { buf = buf.subarray(end + 4); continue; }
        if (buf.length < end + 4 + len) break;
        const jpeg = buf.slice(end + 4, end + 4 + len);
        buf = buf.subarray(end + 4 + len);
        await drawFrame(g, canvas, jpeg, h);
      }
    }
  } catch (e) { /* aborted or dropped */ }
  if (S.live === ctrl) { S.live = null; setTimeout(syncLive, 1000); }
}

async function drawFrame(g, canvas, jpeg, h) {
  let bmp;
  try { bmp = await createImageBitmap(new Blob([jpeg], { type: "image/jpeg" })); } catch (e) { return; }
  if (canvas.width !== bmp.width * (S.view === "model" ? 1 : 1)) { canvas.width = bmp.width; canvas.height = bmp.height; }
  g.drawImage(bmp, 0, 0);
  bmp.close();
  if (S.view === "camera") drawOverlay(g, canvas, h);
  const now = performance.timeOrigin + performance.now();
  const stale = now - parseFloat(h["x-capture-epoch-ms"]);
  const L = window.__live;
  L.frames++; L.lastSeq = parseInt(h["x-frame-seq"], 10);
  L.staleMs.push(stale);
  if (L.staleMs.length > 600) L.staleMs.shift();
  $("#live-note").textContent = `frame ${h["x-frame-seq"]} · age when sent ${h["x-frame-age-ms"]} ms`;
}

function drawOverlay(g, canvas, h) {
  const w = canvas.width, ht = canvas.height, s = w / 160;
  const angle = parseFloat(h["x-angle"]) || 0, throttle = parseFloat(h["x-throttle"]) || 0;
  // steering: an arrow from the bottom centre (positive angle = left, as on the car)
  const cx = w / 2, cy = ht - 6 * s, len = 40 * s, a = -Math.PI / 2 - angle * Math.PI / 4;
  g.lineWidth = 3 * s; g.strokeStyle = "#58a6ff";
  g.beginPath(); g.moveTo(cx, cy); g.lineTo(cx + len * Math.cos(a), cy + len * Math.sin(a)); g.stroke();
  // throttle: a bar on the right edge
  const bh = Math.abs(throttle) * (ht / 2 - 8 * s);
  g.fillStyle = throttle >= 0 ? "#2ea043" : "#da3633";
  g.fillRect(w - 8 * s, throttle >= 0 ? ht / 2 - bh : ht / 2, 5 * s, bh);
  g.font = `${Math.round(6 * s)}px system-ui, sans-serif`;
  g.fillStyle = "rgba(0,0,0,.6)"; g.fillRect(0, 0, w, 9 * s);
  g.fillStyle = "#fff";
  const action = h["x-action"] === "" ? "–" : "#" + h["x-action"];
  g.fillText(`${h["x-state"]} ${action}  ${h["x-steering-deg"]}°  ${h["x-speed-mps"]} m/s  thr ${throttle.toFixed(2)}`, 3 * s, 6.8 * s);
}

document.addEventListener("visibilitychange", syncLive);

// ---------------------------------------------------------------- tabs
function route() {
  const tab = (location.hash || "#drive").slice(1);
  const known = ["drive", "models", "calibrate", "status", "runs"];
  const prev = S.tab;
  S.tab = known.includes(tab) ? tab : "drive";
  for (const t of known) $("#tab-" + t).hidden = t !== S.tab;
  $$("nav a").forEach(a => a.classList.toggle("on", a.dataset.tab === S.tab));
  if (prev === "calibrate" && S.tab !== "calibrate" && S.calibrating) endCalibration();
  if (S.tab === "models") refreshModels();
  if (S.tab === "calibrate") loadCalibration();
  if (S.tab === "runs") refreshRuns();
  if (S.tab === "status" && S.telemetry) renderStatus(S.telemetry);
  syncLive();
}
window.addEventListener("hashchange", route);

// ---------------------------------------------------------------- models
function sizeText(b) { return b >= 1048576 ? (b / 1048576).toFixed(1) + " MB" : (b / 1024).toFixed(0) + " kB"; }

async function refreshModels() {
  const r = await api("GET", "/api/models");
  const list = $("#model-list");
  list.textContent = "";
  if (!r.ok) { say($("#load-msg"), r.data.error, "bad"); return; }
  if (!r.data.models.length) { list.innerHTML = '<div class="card muted">No models yet: upload one above.</div>'; return; }
  for (const m of r.data.models) {
    const card = document.createElement("div");
    card.className = "card model" + (m.current ? " current" : "");
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = m.name + " ";
    if (m.current) { const t = document.createElement("span"); t.className = "tag"; t.textContent = "driving"; name.append(t); }
    const actions = document.createElement("div");
    actions.className = "actions";
    const load = document.createElement("button");
    load.type = "button"; load.textContent = "Load";
    load.disabled = !m.runnable || m.current || !S.youControl || r.data.loading !== null;
    load.addEventListener("click", () => loadModel(m));
    actions.append(load);
    if (m.deletable) {
      const del = document.createElement("button");
      del.type = "button"; del.textContent = "Delete";
      del.disabled = m.current || !S.youControl;
      del.addEventListener("click", () => deleteModel(m));
      actions.append(del);
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    const sensors = m.sensors ? m.sensors.join(", ") : "?";
    const space = m.action_space_type ? `${m.action_space_type}, ${m.actions} action${m.actions === 1 ? "" : "s"}` : "";
    meta.textContent = `${m.folder} · ${sensors} · ${space} · ${sizeText(m.size_bytes)} · ${new Date(m.mtime_s * 1000).toLocaleString()}`;
    card.append(name, actions, meta);
    if (m.problem) { const p = document.createElement("div"); p.className = "problem"; p.textContent = m.problem; card.append(p); }
    list.append(card);
  }
}

async function loadModel(m) {
  say($("#load-msg"), `loading ${m.name}… the car waits at neutral`);
  const r = await api("POST", "/api/models/load", { id: m.id });
  if (!r.ok) say($("#load-msg"), r.data.error, "bad");
}

async function deleteModel(m) {
  if (!confirm(`Delete ${m.name}?`)) return;
  const r = await api("POST", "/api/models/delete", { id: m.id });
  say($("#load-msg"), r.ok ? r.data.message : r.data.error, r.ok ? "good" : "bad");
  refreshModels();
}

$("#upload-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = $("#upload-file").files[0];
  const msg = $("#upload-msg");
  if (!f) { say(msg, "choose a model.tar.gz first", "bad"); return; }
  const cap = S.facts.max_upload_bytes;
  if (cap && f.size > cap) { say(msg, `${f.name} is ${(f.size / 1048576).toFixed(1)} MiB; the limit is ${(cap / 1048576).toFixed(0)} MiB`, "bad"); return; }
  const form = new FormData();
  form.append("file", f, f.name);
  say(msg, `uploading ${f.name}…`);
  const r = await api("POST", "/api/models", form);
  say(msg, r.ok ? r.data.message : r.data.error, r.ok ? "good" : "bad");
  if (r.ok) $("#upload-file").value = "";
  refreshModels();
});

// ---------------------------------------------------------------- recorded runs
function runMeta(run) {
  const start = run.start_epoch_s ? new Date(run.start_epoch_s * 1000).toLocaleString() : "no start time";
  const dropped = run.dropped === null ? "? dropped" : `${run.dropped} dropped`;
  return `${run.model} · ${start} · ${run.duration_s.toFixed(1)} s · ${run.frames} frames · ${dropped} · ${sizeText(run.size_bytes)}`;
}

async function refreshRuns() {
  const r = await api("GET", "/api/runs");
  const list = $("#run-list"), info = $("#runs-info");
  list.textContent = "";
  if (!r.ok) { say($("#runs-msg"), r.data.error, "bad"); return; }
  if (!r.data.dir) { info.textContent = r.data.message; info.className = "warn"; return; }
  const rec = r.data.recorder;
  let text = `${r.data.runs.length} run${r.data.runs.length === 1 ? "" : "s"} in ${r.data.dir}, ${sizeText(r.data.total_bytes)}`;
  if (rec && rec.state === "recording") text += ` · recording ${rec.session} (${rec.frames} frames)`;
  else if (rec && rec.state === "waiting") text += " · the next run is recorded when the car drives";
  if (rec && rec.error) text += ` · recorder stopped: ${rec.error}`;
  info.textContent = text;
  info.className = rec && rec.error ? "warn" : "muted";
  if (!r.data.runs.length) { list.innerHTML = '<div class="card muted">No recorded runs yet: they appear here after the car drives.</div>'; return; }
  for (const run of r.data.runs) {
    const card = document.createElement("div");
    card.className = "card run " + run.status;
    card.dataset.run = run.name;
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = run.name + " ";
    if (run.status !== "complete") {
      const t = document.createElement("span");
      t.className = "tag " + run.status;
      t.textContent = run.status === "recording" ? "recording now"
        : run.frames > 0 ? "torn (cut off; replayable)" : "torn (nothing readable)";
      name.append(t);
    }
    const actions = document.createElement("div");
    actions.className = "actions";
    if (run.status === "recording") {
      const wait = document.createElement("span");
      wait.className = "muted"; wait.textContent = "closes 15 s after the car stops";
      actions.append(wait);
    } else {
      const dl = document.createElement("a");
      dl.className = "button"; dl.textContent = "Download";
      dl.href = "/api/runs/download?name=" + encodeURIComponent(run.name);
      dl.setAttribute("download", run.name + ".tar");
      const del = document.createElement("button");
      del.type = "button"; del.textContent = "Delete";
      del.disabled = !S.youControl || run.downloading;
      del.addEventListener("click", () => deleteRun(run));
      actions.append(dl, del);
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = runMeta(run);
    card.append(name, meta, actions);
    list.append(card);
  }
}

async function deleteRun(run) {
  if (!confirm(`Delete the recorded run ${run.name}?`)) return;
  const r = await api("POST", "/api/runs/delete", { name: run.name });
  say($("#runs-msg"), r.ok ? r.data.message : r.data.error, r.ok ? "good" : "bad");
  refreshRuns();
}

// ---------------------------------------------------------------- calibration
const MARKS = { servo: ["mid", "left", "right"], motor: ["mid", "forward", "reverse"] };

function draftFrom(cal) {
  // the wizard's marks from a calibration: positive angle = left, positive throttle = forward
  const d = {};
  for (const ch of ["servo", "motor"]) {
    const c = cal[ch], pos = c.polarity > 0 ? c.max : c.min, neg = c.polarity > 0 ? c.min : c.max;
    d[ch] = ch === "servo" ? { mid: c.mid, left: pos, right: neg } : { mid: c.mid, forward: pos, reverse: neg };
  }
  return d;
}

function calFromDraft(d) {
  const out = {};
  for (const ch of ["servo", "motor"]) {
    const [mid, p, n] = MARKS[ch].map(k => d[ch][k]);
    out[ch] = { min: Math.min(p, n), mid, max: Math.max(p, n), polarity: p > mid ? 1 : -1 };
  }
  return out;
}

async function loadCalibration() {
  const r = await api("GET", "/api/calibration");
  if (!r.ok) { say($("#cal-msg"), r.data.error, "bad"); return; }
  S.cal = r.data;
  S.draft = draftFrom(r.data);
  S.pulse = r.data.pulse || { servo: r.data.servo.mid, motor: r.data.motor.mid };
  $("#cal-file").textContent = "file: " + r.data.file;
  renderDraft();
}

function renderCalibrationState() {
  $("#cal-begin").disabled = S.calibrating || !S.youControl;
  $("#cal-end").disabled = !S.calibrating;
  $("#cal-panels").hidden = !S.calibrating;
}

function renderDraft() {
  if (!S.draft) return;
  const cal = calFromDraft(S.draft);
  for (const ch of ["servo", "motor"]) {
    const card = $(`[data-channel=${ch}]`);
    $(".pulse-ns", card).textContent = S.pulse[ch] ?? "—";
    const t = $(".draft", card);
    t.textContent = "";
    const head = t.insertRow();
    for (const k of ["min", "mid", "max", "polarity"]) { const th = document.createElement("th"); th.textContent = k; head.append(th); }
    const row = t.insertRow();
    for (const k of ["min", "mid", "max", "polarity"]) row.insertCell().textContent = cal[ch][k];
  }
}

async function sendPulse(ch, ns) {
  const r = await api("POST", "/api/calibration/pulse", { channel: ch, ns });
  if (!r.ok) { say($("#cal-msg"), r.data.error, "bad"); return; }
  S.pulse = { servo: r.data.servo, motor: r.data.motor };
  renderDraft();
}

$("#cal-begin").addEventListener("click", async () => {
  const r = await api("POST", "/api/calibration/begin");
  if (!r.ok) { say($("#cal-msg"), r.data.error, "bad"); return; }
  S.calibrating = true;
  say($("#cal-msg"), "calibrating: the car is disarmed", "good");
  await loadCalibration();
  renderCalibrationState();
});

async function endCalibration() {
  const r = await api("POST", "/api/calibration/end");
  S.calibrating = false;
  say($("#cal-msg"), r.ok ? "calibration finished: outputs at neutral" : r.data.error, r.ok ? "good" : "bad");
  renderCalibrationState();
}
$("#cal-end").addEventListener("click", endCalibration);

for (const ch of ["servo", "motor"]) {
  const card = $(`[data-channel=${ch}]`);
  $$("[data-step]", card).forEach(b => b.addEventListener("click", () =>
    sendPulse(ch, (S.pulse[ch] ?? S.cal[ch].mid) + Number(b.dataset.step))));
  $$("[data-mark]", card).forEach(b => b.addEventListener("click", () => {
    if (S.pulse[ch] == null) return;
    S.draft[ch][b.dataset.mark] = S.pulse[ch];
    say($("#cal-msg"), `${ch} ${b.dataset.mark} = ${S.pulse[ch]} ns (Save to keep it)`);
    renderDraft();
  }));
}

$("#cal-save").addEventListener("click", async () => {
  const r = await api("POST", "/api/calibration", calFromDraft(S.draft));
  say($("#cal-msg"), r.ok ? r.data.message : r.data.error, r.ok ? "good" : "bad");
  if (r.ok) { S.cal = r.data; S.draft = draftFrom(r.data); renderDraft(); }
});
$("#cal-reload").addEventListener("click", loadCalibration);

boot();
