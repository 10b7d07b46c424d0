// The SDEdit page: a paint layer (the guide), a strength layer (a t0 per pixel, edits only) and a mask
// layer over it, drawn at the model's
// resolution times `zoom` (small models enlarged to about DISPLAY css pixels, larger ones 1:1); the
// palette, the canvas's starting colour and the hint follow the model (/api/info: shape, polarity,
// background). Jobs go to api/jobs and are polled until their PNGs are ready. Every path is relative, so
// the page works wherever its model is mounted (/ or /m/<name>/); a menu switches between the site's models.
// The canvas is shared by the Edit and Inpaint tabs; everything else (inputs, job, status, results)
// belongs to one tab.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, tab: "edit", zoom: 24, display: [384, 384], bg: "#000000", undo: [], drawing: null,
                tabs: {}, initial: null, rendered: null };
const DISPLAY = 384;          // small models are enlarged by a whole factor to about this many CSS pixels
const MAX_DISPLAY = 768;      // larger models are shown 1:1 up to this size, and scaled down beyond it
const GREYS = [0, 64, 128, 192, 255];
const COLOURS = [["#000000", "black"], ["#ffffff", "white"], ["#808080", "grey"], ["#d62828", "red"],
                 ["#f77f00", "orange"], ["#fcbf49", "yellow"], ["#6a994e", "green"], ["#2a9d8f", "teal"],
                 ["#87ceeb", "sky blue"], ["#3a86ff", "blue"], ["#1d3557", "navy"], ["#8d5524", "brown"]];
const ON_WHITE = [["#ffcc4d", "yellow"], ["#dd2e44", "red"], ["#77b255", "green"], ["#3b88c3", "blue"],
                  ["#c1694f", "brown"], ["#292f33", "black"], ["#f4900c", "orange"], ["#f4abba", "pink"],
                  ["#ffffff", "white"]];     // saturated colours of colour emoji, drawn on white
const POLARITY_HINT = {
  "light-on-dark": () => "This model's pictures are light strokes on a dark background: paint light on the black canvas.",
  "natural": () => "Paint in colour over the grey canvas (fill a background first), or upload a photo and paint over it.",
  "on-white": (info) => `Paint ${info.shape[0] === 1 ? "dark" : "in colour"} on white, as the ` +
                        `${info.data_kind || "model's pictures"} are drawn.`,
};
const MASK_RGB = "#ff3b30";
const STRENGTH_GREEN = 160;   // t0 = a is painted as (255 a, 160, 255 (1 - a)): the server reads a = R / (R + B)
const INPUTS = ["steps", "n", "seed", "sampler", "t0", "repeats", "label"];

// ---- per-tab state ---------------------------------------------------------------------------------

function tabState(tab) {
  if (!state.tabs[tab]) state.tabs[tab] = { inputs: null, job: null, status: "ready", progress: 0, message: "", shown: null };
  return state.tabs[tab];
}

function update(tab, changes) {
  Object.assign(tabState(tab), changes);
  if (tab === state.tab) render();
}

function message(text) { update(state.tab, { message: text || "" }); }
function status(text) { update(state.tab, { status: text }); }

function render() {
  const t = tabState(state.tab);
  $("status").textContent = t.status;
  $("progress").value = t.progress;
  $("message").textContent = t.message;
  $("run").disabled = !!t.job; $("cancel").disabled = !t.job;
  if (state.rendered !== t.shown) { show(t.shown); state.rendered = t.shown; }
}

function saveInputs(tab) {
  tabState(tab).inputs = Object.fromEntries(INPUTS.map((id) => [id, $(id).value]));
}

function loadInputs(tab) {
  const sel = $("sampler"); sel.innerHTML = "";
  for (const s of state.info.samplers[tab]) sel.add(new Option(s, s));
  $("n").max = tab === "sample" ? state.info.limits.samples : state.info.limits.results;
  const v = tabState(tab).inputs || { ...state.initial, ...state.info.defaults[tab] };
  for (const id of INPUTS) $(id).value = v[id];
  $("t0-out").textContent = (+$("t0").value).toFixed(2);
}

async function api(path, options = {}) {
  const r = await fetch(path, options);
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: `server answered ${r.status} ${r.statusText}` }; }
  if (!r.ok) throw new Error(body.error || `server answered ${r.status}`);
  return body;
}

// ---- canvas ------------------------------------------------------------------------------------

const paint = () => $("paint"), mask = () => $("mask"), strength = () => $("strength");
const LAYERS = { paint, mask, strength };
const ctx = (c) => c.getContext("2d", { willReadFrequently: true });

function setupCanvas() {
  const [, H, W] = state.info.shape;
  state.zoom = Math.max(1, Math.floor(DISPLAY / Math.max(H, W)));
  state.bg = state.info.background || "#000000";
  $("colour").value = state.info.polarity === "on-white" ? ON_WHITE[0][0] : "#ffffff";   // the brush shows on the canvas
  const fit = Math.min(1, MAX_DISPLAY / (state.zoom * Math.max(H, W)));
  state.display = [W * state.zoom * fit, H * state.zoom * fit];          // CSS pixels of the canvas and the results
  for (const c of [paint(), mask(), strength()]) { c.width = W * state.zoom; c.height = H * state.zoom; }
  paint().style.width = `${state.display[0]}px`;          // at most the screen's width (CSS); the layers cover it
  clearLayer("paint"); clearLayer("mask"); clearLayer("strength"); state.undo = [];
  const shown = state.zoom > 1 ? `shown ${state.zoom}× enlarged` : fit < 1 ? `shown at ${Math.round(100 * fit)}%` : "shown 1:1";
  $("canvas-hint").textContent = `${W}×${H} model pixels, ${shown}; the model sees exactly these pixels (the guide beside ` +
    `the results). ${(POLARITY_HINT[state.info.polarity] || (() => ""))(state.info)}`;
}

function brushPixels() {      // the brush diameter in model pixels: a percentage of the image's longer side
  const [, H, W] = state.info.shape;
  return +$("brush").value / 100 * Math.max(H, W);
}

function layer() { return document.querySelector("input[name=layer]:checked").value; }

function brushColour() {
  if (state.info.shape[0] === 1) { const g = +$("grey").value; return `rgb(${g},${g},${g})`; }
  return $("colour").value;
}

function strengthColour(a) {  // the strength brush's colour for t0 = a: blue (keep) .. orange (change completely)
  const r = Math.round(255 * a);
  return `rgb(${r},${STRENGTH_GREEN},${255 - r})`;
}

function snapshot() {
  state.undo.push([paint(), mask(), strength()].map((c) => ctx(c).getImageData(0, 0, c.width, c.height)));
  if (state.undo.length > 40) state.undo.shift();
}

function undo() {
  const s = state.undo.pop();
  if (!s) return;
  [paint(), mask(), strength()].forEach((c, i) => ctx(c).putImageData(s[i], 0, 0));
}

function clearLayer(which) {
  const c = LAYERS[which](), g = ctx(c);
  if (which === "paint") { g.fillStyle = state.bg; g.fillRect(0, 0, c.width, c.height); }
  else g.clearRect(0, 0, c.width, c.height);
}

function point(e) {
  const c = mask(), r = c.getBoundingClientRect();
  return [(e.clientX - r.left) * c.width / r.width, (e.clientY - r.top) * c.height / r.height];
}

function stroke(from, to) {
  const which = layer(), erase = $("eraser").checked, overlay = which !== "paint";
  const g = ctx(LAYERS[which]());
  g.save();
  g.lineCap = g.lineJoin = "round";
  g.lineWidth = brushPixels() * state.zoom;
  g.globalCompositeOperation = overlay && erase ? "destination-out" : "source-over";
  g.strokeStyle = g.fillStyle = which === "mask" ? MASK_RGB : which === "strength" ? strengthColour(+$("amount").value)
                                : (erase ? state.bg : brushColour());
  g.beginPath(); g.moveTo(from[0], from[1]); g.lineTo(to[0] + 0.01, to[1]); g.stroke();
  g.restore();
}

function setupDrawing() {
  const c = mask();
  c.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    c.setPointerCapture(e.pointerId);
    snapshot();
    state.drawing = point(e);
    stroke(state.drawing, state.drawing);
  });
  c.addEventListener("pointermove", (e) => {
    if (!state.drawing) return;
    const p = point(e); stroke(state.drawing, p); state.drawing = p;
  });
  const end = () => { state.drawing = null; };
  c.addEventListener("pointerup", end); c.addEventListener("pointercancel", end);
  document.addEventListener("keydown", (e) => { if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); undo(); } });
}

function isEmpty(c) {         // an overlay layer (mask, strength) with nothing painted on it
  const d = ctx(c).getImageData(0, 0, c.width, c.height).data;
  for (let i = 3; i < d.length; i += 4) if (d[i]) return false;
  return true;
}

function drawImageOnPaint(url) {
  return new Promise((resolve, reject) => {
    const im = new Image();
    im.onload = () => {
      snapshot();
      const g = ctx(paint());
      g.imageSmoothingEnabled = false;
      g.drawImage(im, 0, 0, paint().width, paint().height);
      resolve();
    };
    im.onerror = () => reject(new Error("the image could not be shown"));
    im.src = url;
  });
}

async function upload(file) {
  message("");
  const limit = state.info.limits.upload_bytes;
  if (file.size > limit) { message(`${file.name} is ${(file.size / 1e6).toFixed(1)} MB; the limit is ${(limit / 1e6).toFixed(1)} MB`); return; }
  status(`reading ${file.name}…`);
  try {
    const r = await api("api/upload", { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
    await drawImageOnPaint(r.image);
    status(`${file.name}: ${r.width}×${r.height}, resized to the model's resolution` +
           (r.inverted ? ", inverted (drawn dark on light; the model draws light on dark)" : "") + "; paint over it");
  } catch (e) {               // the server calls the upload "the file": name it
    message(e.message.startsWith("the file") ? file.name + e.message.slice(8) : `${file.name}: ${e.message}`);
    status("ready");
  }
}

// ---- controls ----------------------------------------------------------------------------------

const RUN_LABEL = { edit: "Run SDEdit", inpaint: "Inpaint", sample: "Sample" };

function setTab(tab) {
  if (state.initial) saveInputs(state.tab);
  else state.initial = Object.fromEntries(INPUTS.map((id) => [id, $(id).value]));    // the page's own defaults
  state.tab = tab;
  document.body.className = `tab-${tab}`;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
  $("run").textContent = RUN_LABEL[tab];
  loadInputs(tab);
  if (tab === "inpaint") selectLayer("mask");
  updateLayer();
  render();
}

function updateLayer() {
  document.body.classList.toggle("layer-mask", layer() === "mask");
  document.body.classList.toggle("layer-strength", layer() === "strength");
}

function selectLayer(which) { document.querySelector(`input[name=layer][value=${which}]`).checked = true; updateLayer(); }

function setupControls() {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => setTab(b.dataset.tab));
  for (const r of document.querySelectorAll("input[name=layer]")) r.addEventListener("change", updateLayer);
  const showBrush = () => {
    const px = brushPixels();
    $("brush-out").textContent = `${$("brush").value}% · ${px < 10 ? +px.toFixed(1) : Math.round(px)} px`;
  };
  $("brush").addEventListener("input", showBrush); showBrush();
  $("t0").addEventListener("input", () => { $("t0-out").textContent = (+$("t0").value).toFixed(2); });
  const showAmount = () => {
    $("amount-out").textContent = (+$("amount").value).toFixed(2);
    $("amount-swatch").style.background = strengthColour(+$("amount").value);
  };
  $("amount").addEventListener("input", showAmount); showAmount();
  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", () => { snapshot(); clearLayer(layer()); });
  $("fill").addEventListener("click", () => { snapshot(); const g = ctx(paint()); g.fillStyle = brushColour(); g.fillRect(0, 0, paint().width, paint().height); });
  $("upload").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); e.target.value = ""; });
  $("reseed").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2 ** 31); });
  $("run").addEventListener("click", run);
  $("cancel").addEventListener("click", cancel);
  setupPalette();
  if (state.info.num_classes > 0) {
    $("label-field").hidden = false;
    if (state.info.reads_class) $("label").add(new Option("read from the drawing (edit)", "auto"));
    for (let k = 0; k < state.info.num_classes; k++) $("label").add(new Option(className(k), String(k)));
  }
  setupModelMenu();
}

function className(k) {      // the data's name of class k (emoji: its category), else the number
  const names = state.info.class_names;
  return names && names[k] !== undefined ? names[k] : String(k);
}

function setupModelMenu() {   // the site's models: choosing one opens its page
  const models = state.info.models || [], menu = $("model-menu");
  $("model-field").hidden = models.length < 2;
  for (const m of models) {
    const [C, H, W] = m.shape;
    const o = new Option(`${m.name} (${W}×${H}${C === 3 ? " colour" : ""})`, m.href);
    o.selected = m.current; menu.add(o);
  }
  menu.addEventListener("change", () => { window.location.href = menu.value; });
}

function setupPalette() {     // grey levels for a 1-channel model; colours and a colour picker for RGB, by polarity
  const grey = state.info.shape[0] === 1;
  $("grey-group").hidden = !grey; $("colour-group").hidden = grey;
  const colours = state.info.polarity === "on-white" ? ON_WHITE : COLOURS;
  const swatches = grey ? GREYS.map((g) => [`rgb(${g},${g},${g})`, `grey ${g}`, () => { $("grey").value = g; }])
                        : colours.map(([hex, name]) => [hex, name, () => { $("colour").value = hex; }]);
  for (const [css, name, pick] of swatches) {
    const b = document.createElement("button");
    b.style.background = css; b.title = name; b.setAttribute("aria-label", name);
    b.addEventListener("click", () => { pick(); $("eraser").checked = false; });
    $("swatches").appendChild(b);
  }
}

// ---- jobs --------------------------------------------------------------------------------------

function settings(body, condition) {    // the settings that made a set of results, as the page's labels name them
  const parts = [body.sampler, `${body.steps} steps`, `${body.n} results`];
  if (body.kind === "edit") parts.push(`t0 ${body.t0.toFixed(2)}`, `${body.repeats} repeat(s)`);
  if (condition) parts.push(`class ${condition.read ? "read from the drawing: " : ""}${className(condition.label)}`);
  else if (body.label !== -1 && body.kind !== "edit") parts.push(`class ${className(body.label)}`);
  return parts.join(" · ");
}

function request(tab) {
  const body = { kind: tab, steps: +$("steps").value, n: +$("n").value, sampler: $("sampler").value,
                 label: $("label").value === "auto" ? "auto" : +$("label").value };
  if ($("seed").value !== "") body.seed = +$("seed").value;
  if (tab === "edit") {
    body.t0 = +$("t0").value; body.repeats = +$("repeats").value;
    if (!isEmpty(strength())) body.t0_map = strength().toDataURL("image/png");
  }
  if (tab !== "sample") {
    body.image = paint().toDataURL("image/png");
    if (!isEmpty(mask())) body.mask = mask().toDataURL("image/png");
  }
  return body;
}

function canvasIsEmpty() {    // nothing but the starting colour
  const n = parseInt(state.bg.slice(1), 16), bg = [n >> 16, (n >> 8) & 255, n & 255];
  const d = ctx(paint()).getImageData(0, 0, paint().width, paint().height).data;
  for (let i = 0; i < d.length; i += 4) if (d[i] !== bg[0] || d[i + 1] !== bg[1] || d[i + 2] !== bg[2]) return false;
  return true;
}

async function run() {
  const tab = state.tab;
  if (tab !== "sample" && canvasIsEmpty() &&
      !window.confirm("The canvas is empty: nothing is painted or uploaded. Run on it anyway?")) return;
  update(tab, { message: "", status: "sending…", progress: 0 });
  let job;
  const body = request(tab);
  try {
    job = await api("api/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (e) { update(tab, { status: "not run", progress: 0, message: e.message }); return; }
  update(tab, { job: job.id });
  poll(tab, job, body);
}

function waiting(job) {      // a queued job: how many jobs run or wait before it
  if (!job.ahead) return "starting…";
  return `waiting: ${job.ahead} job${job.ahead > 1 ? "s" : ""} ahead in the queue`;
}

async function poll(tab, job, body) {
  const t = tabState(tab);
  while (t.job === job.id) {
    if (["done", "error", "cancelled"].includes(job.status)) break;
    update(tab, { progress: job.progress, status: job.status === "queued" ? waiting(job)
                                                   : `working… ${Math.round(job.progress * 100)}% (${job.nfe} score evaluations)` });
    await new Promise((r) => setTimeout(r, 250));
    try { job = await api(`api/jobs/${job.id}`); }
    catch (e) { update(tab, { job: null, status: "lost track of the job", progress: 0, message: e.message }); return; }
  }
  if (t.job !== job.id) return;
  if (job.status === "done") update(tab, { job: null, status: `done: ${job.message}; seed ${job.seed}`, progress: 1,
                                           shown: { ...job, settings: `${settings(body, job.condition)} · seed ${job.seed}` } });
  else if (job.status === "error") update(tab, { job: null, status: "failed", progress: 0, message: job.message });
  else update(tab, { job: null, status: t.shown ? "cancelled; the results shown are those of the earlier run below"
                                                 : "cancelled", progress: 0 });
}

async function cancel() {
  const id = tabState(state.tab).job;
  if (!id) return;
  try { await api(`api/jobs/${id}/cancel`, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" }); }
  catch (e) { message(e.message); }
}

function shownSize(job) {     // CSS pixels of a result: the canvas's size; samples half of it, but never below 1:1
  const [, , W] = state.info.shape, [dw, dh] = state.display;
  const f = job.kind === "sample" ? Math.min(1, Math.max(0.5, W / dw)) : 1;
  return [Math.round(dw * f), Math.round(dh * f)];
}

function figure(job, url, caption, name, extra) {
  const f = document.createElement("figure");
  const img = document.createElement("img");
  img.src = url; img.alt = caption; [img.width, img.height] = shownSize(job);
  const cap = document.createElement("figcaption");
  cap.append(caption);
  const a = document.createElement("a"); a.href = url; a.download = name; a.textContent = "PNG"; a.title = "download";
  cap.append(a);
  if (extra) cap.append(extra);
  f.append(img, cap);
  return [f, img];
}

function show(job) {
  const box = $("results"); box.innerHTML = "";
  $("grid-link").hidden = !job;
  $("results-settings").textContent = job ? job.settings : "";
  if (!job) return;
  const tag = `${job.kind}-seed${job.seed}`;
  if (job.images.guide) { const [f] = figure(job, job.images.guide, "guide", `${tag}-guide.png`); f.classList.add("guide"); box.append(f); }
  if (job.images.mask) {
    const [f, img] = figure(job, job.images.mask, "mask", `${tag}-mask.png`);
    img.alt = "mask"; img.title = "white = kept from the guide, black = regenerated";
    f.querySelector("figcaption").firstChild.textContent = "mask (white = kept)";
    f.classList.add("guide"); box.append(f);
  }
  if (job.images.t0map) {
    const [f, img] = figure(job, job.images.t0map, "t0 map", `${tag}-t0map.png`);
    img.alt = "t0 map"; img.title = "grey level = t0: black = kept from the guide, white = t0 1";
    f.querySelector("figcaption").firstChild.textContent = "t0 map (black = kept)";
    f.classList.add("guide"); box.append(f);
  }
  job.results.forEach((url, i) => {
    const use = document.createElement("button");
    use.textContent = "edit"; use.title = "load into the Paint & edit tab's canvas as the new guide (with a fresh mask)";
    use.addEventListener("click", () => editResult(url, i + 1));
    const [f, img] = figure(job, url, `#${i + 1}`, `${tag}-${i + 1}.png`, use);
    img.classList.add("result");
    box.append(f);
  });
  $("grid-link").href = job.images.grid; $("grid-link").download = `${tag}-grid.png`;
}

async function editResult(url, k) {   // a result as the new guide: the edit tab, a fresh mask, the paint layer
  if (state.tab !== "edit") setTab("edit");
  await drawImageOnPaint(url);                                        // one undo step brings back both layers
  clearLayer("mask");
  selectLayer("paint");
  status(`result #${k} is the new guide (the mask is cleared); paint over it and run again`);
}

// ---- start -------------------------------------------------------------------------------------

async function start() {
  try { state.info = await api("api/info"); }
  catch (e) { message(`cannot reach the server: ${e.message}`); return; }
  const [C, H, W] = state.info.shape;
  $("model-info").textContent = `model ${state.info.name} · ${W}×${H}×${C} · ${state.info.sde}` +
    (state.info.num_classes ? ` · ${state.info.num_classes} classes` : "");
  setupCanvas(); setupDrawing(); setupControls(); setTab("edit");
  document.body.dataset.ready = "1";
}

start();
