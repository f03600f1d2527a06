// The StreamStyle preview page: polls the newest frame and the service's stats, and sends every
// control as one POST to /api/control, which the service loop applies from its next frame on.
"use strict";

const $ = (id) => document.getElementById(id);
let session = null;       // the session shown and controlled
let lastDone = null;      // for fps: done count and time of the previous stats poll
let presetNames = "";
let beside = "";          // the input channel shown beside the output ("" for none)

async function control(op, value) {
  const body = JSON.stringify({ op, value, session });
  const r = await fetch("/api/control", { method: "POST", headers: { "Content-Type": "application/json" }, body });
  const reply = await r.json();
  $("status").textContent = reply.ok ? "" : `${reply.code}: ${reply.message}`;
  refreshStats();
  return reply;
}

function fmt(x, digits) { return x === null || x === undefined ? "-" : Number(x).toFixed(digits); }

function showStats(stats) {
  const sel = $("session");
  const ids = stats.sessions.map((s) => String(s.session));
  if (sel.dataset.ids !== ids.join(",")) {
    sel.innerHTML = ids.map((id) => `<option value="${id}">${id}</option>`).join("");
    sel.dataset.ids = ids.join(",");
  }
  if (session === null || !ids.includes(String(session))) {
    session = stats.watching !== null && ids.includes(String(stats.watching)) ? stats.watching : (ids.length ? Number(ids[0]) : null);
  }
  sel.value = String(session);
  const s = stats.sessions.find((x) => x.session === session);
  const channels = s ? s.channels.join(",") : "";
  const bsel = $("beside-channel");
  if (bsel.dataset.channels !== channels) {
    bsel.innerHTML = `<option value="">nothing</option>` +
      (s ? s.channels.map((c) => `<option value="${c}">${c}</option>`).join("") : "");
    bsel.dataset.channels = channels;
    bsel.value = beside;
  }
  const now = performance.now();
  if (s) {
    if (lastDone && now > lastDone.t) {
      $("o-fps").textContent = fmt((s.done - lastDone.done) * 1000 / (now - lastDone.t), 1);
    }
    lastDone = { done: s.done, t: now };
    $("o-p50").textContent = fmt(s.latency_p50_ms, 2);
    $("o-p99").textContent = fmt(s.latency_p99_ms, 2);
    $("o-done").textContent = s.done;
    $("o-late").textContent = s.late;
    $("o-dropped").textContent = s.dropped;
    $("o-pages").textContent = s.cache_pages;
    $("look").textContent = `prompt ${JSON.stringify(s.prompt)}\nsteps ${s.steps}  strength ${fmt(s.strength, 2)}` +
      `  ${s.enabled ? "on" : "off (bypassed)"}${s.preset ? "  preset " + s.preset : ""}`;
    if (document.activeElement !== $("steps")) $("steps").value = String(s.steps);
    if (document.activeElement !== $("enabled")) $("enabled").checked = s.enabled;
    if (document.activeElement !== $("record")) $("record").checked = s.recording !== null || s.capture !== null;
    if (document.activeElement !== $("strength")) {
      $("strength").value = String(Math.round(s.strength * 100));
      $("strength-value").textContent = fmt(s.strength, 2);
    }
  }
  $("o-free").textContent = stats.service.cache_pages_free;
  const names = Object.keys(stats.presets).join(",");
  if (names !== presetNames) {
    presetNames = names;
    $("presets").innerHTML = "";
    for (const name of Object.keys(stats.presets)) {
      const b = document.createElement("button");
      b.textContent = name;
      b.dataset.preset = name;
      b.addEventListener("click", () => control("preset", name));
      $("presets").appendChild(b);
    }
  }
  document.body.dataset.statsAt = String(now);
}

async function refreshStats() {
  try {
    const r = await fetch("/api/stats");
    if (r.ok) showStats(await r.json());
  } catch (e) { $("status").textContent = "the service is not answering"; }
}

async function show(img, path) {
  const r = await fetch(path);
  if (r.status !== 200) return;
  const url = URL.createObjectURL(await r.blob());
  const old = img.src;
  img.onload = () => {
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    img.dataset.number = r.headers.get("X-Frame-Number");  // set once the picture is shown
    img.dataset.shows = r.headers.get("X-Shows");
  };
  img.src = url;
}

function nextFrame() {
  // The input view is asked for only while one is chosen: only then does the service copy it.
  const views = [show($("frame"), "/frame.jpg")];
  if (beside) views.push(show($("beside"), "/beside.jpg"));
  Promise.all(views).catch(() => {}).finally(() => setTimeout(nextFrame, 66));
}

$("session").addEventListener("change", (e) => { session = Number(e.target.value); lastDone = null; control("watch"); });
$("beside-channel").addEventListener("change", async (e) => {
  const reply = await control("view", e.target.value || null);
  if (!reply.ok) { e.target.value = beside; return; }
  beside = e.target.value;
  $("beside-view").hidden = !beside;
  $("beside-caption").textContent = beside;
  delete $("beside").dataset.number;
});
$("prompt-form").addEventListener("submit", (e) => { e.preventDefault(); control("prompt", $("prompt").value); });
$("blend").addEventListener("input", (e) => {
  const w = Number(e.target.value) / 100;
  $("blend-value").textContent = w.toFixed(2);
  const a = $("blend-a").value, b = $("blend-b").value;
  control("blend", a && b ? [a, b, w] : w);  // without both prompts: the session's blend pair
});
$("steps").addEventListener("change", (e) => control("steps", Number(e.target.value)));
$("strength").addEventListener("input", (e) => {
  const v = Number(e.target.value) / 100;
  $("strength-value").textContent = v.toFixed(2);
  control("strength", v);
});
$("enabled").addEventListener("change", (e) => control("enabled", e.target.checked));
$("record").addEventListener("change", (e) => control("record", [e.target.checked, e.target.checked ? $("record-what").value : null]));

refreshStats();
setInterval(refreshStats, 500);
nextFrame();
