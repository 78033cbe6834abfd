// objdet's page: sends photos as the study's JSON batch (split under the server's body and image
// limits), draws the boxes it gets back, filters them by score, and shows where the time went.
// No dependency and no request to anything but the server that served it.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { shown: [], limits: { max_body_bytes: 5800000, max_images: 256 } };

function colour(classId) {
  return `hsl(${(classId * 137.508) % 360} 85% 55%)`;
}

function say(text) { $("status").textContent = text; }
function problem(text) { $("problem").textContent = text; }

function authHeaders() {
  const token = $("token").value.trim();
  sessionStorage.setItem("objdet-token", token);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// The model the server runs (from /healthz): its name, format, input size, and a legend of its
// classes in the colours their boxes are drawn in (any class count, any names).
function showModel(m) {
  $("model").textContent =
    `Model: ${m.file} (${m.format}, ${m.input.width}×${m.input.height}${m.input.dynamic ? " or as the photo needs" : ""}, ${m.classes} classes)`;
  const list = $("classes");
  list.replaceChildren();
  m.names.forEach((name, id) => {
    const item = document.createElement("span");
    item.className = "class";
    const swatch = document.createElement("i");
    swatch.style.background = colour(id);
    item.append(swatch, name);
    list.append(item);
  });
  $("classes-summary").textContent = `${m.names.length} classes`;
  $("classes-box").hidden = m.names.length === 0;
  if (typeof m.score_threshold === "number") {
    $("threshold").value = String(m.score_threshold);
    $("threshold-value").textContent = m.score_threshold.toFixed(2);
  }
}

async function loadLimits() {
  try {
    const res = await fetch("healthz");
    const h = await res.json();
    if (h.limits) state.limits = h.limits;
    if (h.model) showModel(h.model);
  } catch (_) { /* keep the defaults */ }
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).replace(/^data:[^,]*,/, ""));
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

// Batches whose JSON stays under 90 % of the body limit and the image limit.
function batches(items) {
  const out = [];
  let cur = [], bytes = 64;
  const limit = state.limits.max_body_bytes * 0.9;
  for (const it of items) {
    const size = it.b64.length + it.name.length + 8;
    if (cur.length && (bytes + size > limit || cur.length >= state.limits.max_images)) {
      out.push(cur); cur = []; bytes = 64;
    }
    cur.push(it); bytes += size;
  }
  if (cur.length) out.push(cur);
  return out;
}

async function detect(files) {
  problem("");
  if (!files.length) return;
  say(`Reading ${files.length} photo(s)…`);
  const items = [];
  for (const f of files) items.push({ name: f.name, file: f, b64: await readBase64(f) });
  const groups = batches(items);
  const timings = [];
  let done = 0;
  for (const group of groups) {
    say(`Detecting ${done + 1}–${done + group.length} of ${items.length}…`);
    const body = JSON.stringify({ images: group.map((i) => i.b64), names: group.map((i) => i.name) });
    let res;
    try {
      res = await fetch("api/detect", { method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() }, body });
    } catch (e) {
      problem(`The server could not be reached: ${e.message}`);
      say("");
      return;
    }
    const text = await res.text();
    let json = null;
    try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
    if (!res.ok) {
      if (res.status === 401) {
        problem("This server needs an API token: enter it above (the server's API_TOKEN) and try again.");
      } else if (res.status === 403 && !json?.error) {
        problem("The API refused the request: it needs AWS credentials (ApiAuth=IAM). Use `objdet detect --endpoint`, or deploy with ApiAuth=JWT for browsers.");
      } else {
        const e = json?.error;
        problem(e ? `${res.status} ${e.code}: ${e.message}` : `${res.status}: ${text.slice(0, 200)}`);
      }
      say("");
      return;
    }
    timings.push({ timing: json.timing, header: res.headers.get("server-timing") || "" });
    json.results.forEach((r, k) => state.shown.push({ result: r, file: group[k].file }));
    done += group.length;
  }
  render();
  showTiming(timings, items.length);
  say(`${items.length} photo(s) answered.`);
}

function render() {
  const threshold = Number($("threshold").value);
  $("threshold-value").textContent = threshold.toFixed(2);
  const results = $("results");
  results.replaceChildren();
  for (const { result, file } of state.shown) {
    const card = document.createElement("article");
    card.className = "result";
    card.dataset.name = result.name;
    const h = document.createElement("h2");
    h.textContent = result.name;
    card.append(h);
    if (result.error) {
      const e = document.createElement("p");
      e.className = "error";
      e.textContent = `${result.error.code}: ${result.error.message}`;
      card.append(e);
      results.append(card);
      continue;
    }
    const shown = result.objects.filter((o) => o.score >= threshold);
    const frame = document.createElement("div");
    frame.className = "frame";
    const img = document.createElement("img");
    img.alt = `${result.name}: ${shown.map((o) => o.label).join(", ") || "no objects above the threshold"}`;
    img.src = file._url || (file._url = URL.createObjectURL(file));
    frame.append(img);
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 0 ${result.width} ${result.height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    const fontSize = Math.max(14, result.width / 28);
    for (const o of shown) {
      const { x1, y1, x2, y2 } = o.box;
      for (const polygon of o.mask || []) drawMask(svg, polygon, colour(o.class_id));
      for (const cls of ["halo", "box"]) {
        // A rotated box is drawn by its corners; any other box as the rectangle it is.
        const r = document.createElementNS(svg.namespaceURI, o.rotated_box ? "polygon" : "rect");
        r.setAttribute("class", cls);
        if (o.rotated_box) {
          r.setAttribute("points", o.rotated_box.corners.map((p) => p.join(",")).join(" "));
        } else {
          r.setAttribute("x", x1); r.setAttribute("y", y1);
          r.setAttribute("width", Math.max(0, x2 - x1)); r.setAttribute("height", Math.max(0, y2 - y1));
        }
        if (cls === "box") r.setAttribute("stroke", colour(o.class_id));
        svg.append(r);
      }
      if (o.keypoints) drawKeypoints(svg, o.keypoints, colour(o.class_id), fontSize / 4);
      const label = `${o.label} ${o.score.toFixed(2)}`;
      const bg = document.createElementNS(svg.namespaceURI, "rect");
      bg.setAttribute("x", x1); bg.setAttribute("y", Math.max(0, y1 - fontSize * 1.3));
      bg.setAttribute("width", label.length * fontSize * 0.6 + 6); bg.setAttribute("height", fontSize * 1.3);
      bg.setAttribute("fill", colour(o.class_id));
      const t = document.createElementNS(svg.namespaceURI, "text");
      t.setAttribute("class", "tag");
      t.setAttribute("x", x1 + 3); t.setAttribute("y", Math.max(fontSize, y1 - fontSize * 0.3));
      t.setAttribute("font-size", fontSize); t.setAttribute("fill", "#000");
      t.textContent = label;
      svg.append(bg, t);
    }
    frame.append(svg);
    card.append(frame);
    const list = document.createElement("ol");
    list.className = "objects";
    for (const o of shown) {
      const li = document.createElement("li");
      li.textContent = `${o.label} (${(o.score * 100).toFixed(0)} %)`;
      list.append(li);
    }
    if (!shown.length) {
      const li = document.createElement("li");
      li.textContent = "no objects above the threshold";
      list.append(li);
    }
    card.append(list);
    results.append(card);
  }
}

// An instance mask: one polygon [x1, y1, x2, y2, ...] of it, filled translucent and outlined.
function drawMask(svg, polygon, stroke) {
  const p = document.createElementNS(svg.namespaceURI, "polygon");
  const points = [];
  for (let i = 0; i + 1 < polygon.length; i += 2) points.push(`${polygon[i]},${polygon[i + 1]}`);
  p.setAttribute("points", points.join(" "));
  p.setAttribute("class", "mask");
  p.setAttribute("fill", stroke);
  p.setAttribute("stroke", stroke);
  svg.append(p);
}

// COCO's person skeleton (keypoint indices, from 0), drawn when the keypoints are COCO's 17.
const COCO_SKELETON = [[15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6], [5, 7],
  [6, 8], [7, 9], [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6]];

// Keypoints the model sees (confidence >= 0.5, as Ultralytics draws them, or no confidence), and
// the skeleton's edges between two seen points.
function drawKeypoints(svg, keypoints, fill, radius) {
  const seen = (k) => k && (k.score === undefined || k.score >= 0.5);
  if (keypoints.length === 17 && keypoints[0].name === "nose") {
    for (const [a, b] of COCO_SKELETON) {
      if (!seen(keypoints[a]) || !seen(keypoints[b])) continue;
      const l = document.createElementNS(svg.namespaceURI, "line");
      l.setAttribute("class", "bone");
      l.setAttribute("x1", keypoints[a].x); l.setAttribute("y1", keypoints[a].y);
      l.setAttribute("x2", keypoints[b].x); l.setAttribute("y2", keypoints[b].y);
      l.setAttribute("stroke", fill);
      svg.append(l);
    }
  }
  for (const k of keypoints) {
    if (!seen(k)) continue;
    const c = document.createElementNS(svg.namespaceURI, "circle");
    c.setAttribute("class", "keypoint");
    c.setAttribute("cx", k.x); c.setAttribute("cy", k.y); c.setAttribute("r", radius);
    c.setAttribute("fill", fill);
    if (k.name) {
      const title = document.createElementNS(svg.namespaceURI, "title");
      title.textContent = k.name;
      c.append(title);
    }
    svg.append(c);
  }
}

const STAGES = [["receive", "#8e44ad"], ["s3", "#16a085"], ["decode", "#e67e22"], ["inference", "#2980b9"]];

function showTiming(timings, images) {
  const sum = (k) => timings.reduce((a, t) => a + (t.timing?.[k] || 0), 0);
  const total = sum("total_ms"), inference = sum("inference_ms_total"), decode = sum("decode_ms"), receive = sum("receive_ms");
  const stages = {};
  for (const { header } of timings) {
    for (const part of header.split(",")) {
      const m = part.trim().match(/^([a-z0-9_-]+);dur=([0-9.]+)/i);
      if (m) stages[m[1]] = (stages[m[1]] || 0) + Number(m[2]);
    }
  }
  const panel = $("timing");
  panel.hidden = false;
  panel.replaceChildren();
  const h = document.createElement("h2");
  h.textContent = `Timing (${images} photo(s), ${timings.length} request(s))`;
  h.style.fontSize = "1rem";
  const table = document.createElement("table");
  for (const [name, ms] of [["receive", receive], ["decode + resize", decode], ["inference", inference],
    ["average inference per photo", inference / Math.max(1, images)], ["total in the server", total]]) {
    const tr = table.insertRow();
    tr.insertCell().textContent = name;
    tr.insertCell().textContent = `${ms.toFixed(1)} ms`;
  }
  // Server-Timing: the stages as a bar (decode and inference are summed over images, which run
  // in parallel, so the bar shows shares of the work, not of the wall time).
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.setAttribute("role", "img");
  const work = STAGES.reduce((a, [k]) => a + (stages[k] || 0), 0) || 1;
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const [k, c] of STAGES) {
    if (!stages[k]) continue;
    const s = document.createElement("span");
    s.style.width = `${(100 * stages[k]) / work}%`;
    s.style.background = c;
    s.title = `${k}: ${stages[k].toFixed(1)} ms`;
    bar.append(s);
    const l = document.createElement("span");
    const i = document.createElement("i");
    i.style.background = c;
    l.append(i, `${k} ${stages[k].toFixed(1)} ms`);
    legend.append(l);
  }
  bar.setAttribute("aria-label", `Server-Timing: ${legend.textContent}`);
  panel.append(h, table, bar, legend);
}

$("files").addEventListener("change", (e) => detect([...e.target.files]));
$("threshold").addEventListener("input", render);
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); detect([...e.dataTransfer.files]); });
document.addEventListener("paste", (e) => {
  const files = [...(e.clipboardData?.files || [])];
  if (files.length) detect(files);
});
$("token").value = sessionStorage.getItem("objdet-token") || "";
loadLimits();
