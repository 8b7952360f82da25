// The page of `python -m agame_jax.app`: load a video, paint objects, run, view, download.
// The server holds the video, the masks and the results; this page keeps the label map of
// the frame being painted and draws the frame with a mask or result layer on one canvas.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  config: null, video: null, t: 0, objects: [1], objectId: 1, labels: null,
  frameImage: null, resultLayer: null, view: "masks", hidden: new Set(), playing: null,
  painting: false, drawSeq: 0, poll: null,
};

// The DAVIS / PASCAL VOC palette (the colours the masks are saved with).
const PALETTE = Array.from({ length: 256 }, (_, i) => {
  let c = i, r = 0, g = 0, b = 0;
  for (let j = 0; j < 8; j++) {
    r |= ((c >> 0) & 1) << (7 - j); g |= ((c >> 1) & 1) << (7 - j); b |= ((c >> 2) & 1) << (7 - j);
    c >>= 3;
  }
  return [r, g, b];
});
const colour = (id) => `rgb(${PALETTE[id].join(",")})`;

function showMessage(text, kind = "error", actions = []) {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  for (const [label, action] of actions) {
    const button = document.createElement("button");
    button.textContent = label;
    button.onclick = action;
    box.appendChild(button);
  }
  box.hidden = false;
}
const clearMessage = () => { $("message").hidden = true; };

// fetch that turns the server's {"error": …} answers into thrown errors with the details.
async function api(path, options = {}) {
  const response = await fetch(path, options);
  const type = response.headers.get("content-type") || "";
  if (!response.ok) {
    let body = { error: `${response.status} ${response.statusText}` };
    if (type.includes("json")) body = await response.json();
    if (!body.error) body.error = `${response.status} ${response.statusText}`;
    const error = new Error(body.error);
    error.details = body;
    throw error;
  }
  return type.includes("json") ? response.json() : response;
}

async function init() {
  const cfg = state.config = await api("/api/config");
  const w = $("weights");
  w.textContent = `Weights: ${cfg.weights.summary}.`;
  if (cfg.weights.kind === "demo") w.classList.add("demo");
  $("load-hint").textContent = `MP4, WebM, GIF or a zip of frames, up to ${cfg.max_upload_mb} MB. ` +
    `Frames are scaled to ${cfg.work_size} px (long side) for the model; the results come back ` +
    `at the video's size.`;
  const select = $("sample");
  for (const name of cfg.samples) select.add(new Option(name, name));
  if (!cfg.samples.length) { select.add(new Option("(none found)", "")); select.disabled = true;
                             $("load-sample").disabled = true; }
}

async function loadVideo(request) {
  clearMessage();
  showMessage("Loading the video…", "info");
  try {
    setVideo(await request());
    clearMessage();
  } catch (e) {
    showMessage(e.message);
  }
}

$("upload").onclick = () => {
  const file = $("video-file").files[0];
  if (!file) return showMessage("Choose a video file first.");
  if (file.size > state.config.max_upload_mb * 2 ** 20)
    return showMessage(`${file.name} is larger than the upload limit of ` +
      `${state.config.max_upload_mb} MB (${(file.size / 2 ** 20).toFixed(1)} MB); start the app ` +
      `with --max-upload-mb to raise it`);
  loadVideo(() => api(`/api/videos?filename=${encodeURIComponent(file.name)}`,
                      { method: "POST", body: file }));
};
$("load-sample").onclick = () => loadVideo(() =>
  api(`/api/videos/sample?name=${encodeURIComponent($("sample").value)}`, { method: "POST" }));

function setVideo(info) {
  stop();
  if (state.poll) clearInterval(state.poll);     // the previous video's run carries on alone
  state.poll = null;
  $("run").disabled = false;
  state.video = info;
  state.objects = [1]; state.objectId = 1; state.hidden = new Set();
  state.view = "masks";
  document.querySelector('input[name=view][value=masks]').checked = true;
  $("view-results").disabled = true;
  $("workspace").hidden = false;
  $("video-title").textContent = `${info.name}: ${info.frames} frames, ${info.width}x${info.height} (${info.source})`;
  const stage = $("stage");
  stage.width = info.width; stage.height = info.height;
  $("scrub").max = info.frames - 1;
  $("progress").value = 0; $("progress-text").textContent = "";
  setDownloads(false);
  $("inside-maps").replaceChildren();
  updateMasks(info);
  showFrame(0);
}

// Objects: from the masks given so far, plus those added with "+".
function updateMasks(info) {
  state.video.masks = info.masks;
  const given = Object.values(info.masks).flat();
  state.objects = [...new Set([...state.objects, ...given])].sort((a, b) => a - b);
  const frames = Object.keys(info.masks).map(Number);
  $("mask-frames").textContent = frames.length
    ? "Masks given on frame(s) " + frames.map((t) => `${t} (object ${info.masks[t].join(", ")})`).join("; ")
    : "No mask yet: paint an object on the frame.";
  renderObjects();
}

function renderObjects() {
  const box = $("objects");
  box.replaceChildren();
  for (const id of state.objects) {
    const b = document.createElement("button");
    b.className = "swatch" + (id === state.objectId ? " selected" : "");
    b.style.background = colour(id);
    b.textContent = id; b.title = `paint object ${id}`; b.dataset.object = id;
    b.onclick = () => { state.objectId = id; setTool("brush"); renderObjects(); };
    box.appendChild(b);
  }
  const toggles = $("toggles"), inside = $("inside-object");
  toggles.replaceChildren(); inside.replaceChildren();
  for (const id of state.objects) {
    const label = document.createElement("label");
    label.className = "toggle";
    label.innerHTML = `<input type="checkbox" data-object="${id}" ${state.hidden.has(id) ? "" : "checked"}>` +
                      `<i style="background:${colour(id)}"></i>object ${id}`;
    label.querySelector("input").onchange = (e) => {
      e.target.checked ? state.hidden.delete(id) : state.hidden.add(id);
      showFrame(state.t);
    };
    toggles.appendChild(label);
    inside.add(new Option(`${id}`, id));
  }
}

$("add-object").onclick = () => {
  state.objectId = Math.max(0, ...state.objects) + 1;
  state.objects.push(state.objectId);
  setTool("brush");
  renderObjects();
};
function setTool(tool) { document.querySelector(`input[name=tool][value=${tool}]`).checked = true; }
const tool = () => document.querySelector("input[name=tool]:checked").value;

// Show frame t in the current view; stage.dataset tells what is drawn (tests wait on it).
async function showFrame(t) {
  const seq = ++state.drawSeq, v = state.video;
  state.t = t;
  $("scrub").value = t;
  $("frame-label").textContent = `frame ${t} / ${v.frames - 1}`;
  $("stage").dataset.ready = "0";
  const image = new Image();
  image.src = `/api/videos/${v.id}/frames/${t}.jpg`;
  let layer = null, labels = null;
  try {
    await image.decode();
    if (state.view === "results") {
      layer = new Image();
      layer.src = `/api/videos/${v.id}/results/${t}/layer.png?v=${v.results_version}` +
                  `&hide=${[...state.hidden].join(",")}`;
      await layer.decode();
    } else {
      const raw = await api(`/api/videos/${v.id}/masks/${t}.raw`);
      labels = new Uint8Array(await raw.arrayBuffer());
    }
  } catch (e) {
    if (seq === state.drawSeq) showMessage(`Frame ${t} could not be shown: ${e.message}`);
    return;
  }
  if (seq !== state.drawSeq) return;          // a later frame was asked for meanwhile
  state.frameImage = image; state.resultLayer = layer; state.labels = labels;
  draw();
}

function draw() {
  const stage = $("stage"), ctx = stage.getContext("2d");
  ctx.drawImage(state.frameImage, 0, 0);
  if (state.view === "results" && state.resultLayer) {
    ctx.drawImage(state.resultLayer, 0, 0);
  } else if (state.labels) {
    const { width, height } = stage;
    const layer = new ImageData(width, height);
    for (let i = 0; i < state.labels.length; i++) {
      const id = state.labels[i];
      if (id === 0) continue;
      const [r, g, b] = PALETTE[id];
      layer.data.set([r, g, b, 140], 4 * i);
    }
    const off = new OffscreenCanvas(width, height);
    off.getContext("2d").putImageData(layer, 0, 0);
    ctx.drawImage(off, 0, 0);
  }
  stage.dataset.frame = state.t; stage.dataset.view = state.view; stage.dataset.ready = "1";
}

$("scrub").oninput = (e) => { stop(); showFrame(Number(e.target.value)); };
$("play").onclick = () => {
  if (state.playing) return stop();
  $("play").textContent = "❚❚";
  const fps = Math.min(state.video.fps || 12, 12);
  state.playing = setInterval(() => showFrame((state.t + 1) % state.video.frames), 1000 / fps);
};
function stop() {
  if (state.playing) clearInterval(state.playing);
  state.playing = null;
  $("play").textContent = "▶";
}
for (const radio of document.querySelectorAll("input[name=view]"))
  radio.onchange = (e) => { state.view = e.target.value; showFrame(state.t); };

// Painting: brush or eraser discs on the frame's label map, saved when a stroke ends.
function paintAt(event) {
  const stage = $("stage"), box = stage.getBoundingClientRect();
  const x = (event.clientX - box.left) * stage.width / box.width;
  const y = (event.clientY - box.top) * stage.height / box.height;
  const r = Number($("brush-size").value) * stage.width / box.width / 2;
  const id = tool() === "eraser" ? 0 : state.objectId;
  const { width, height } = stage;
  for (let j = Math.max(0, Math.floor(y - r)); j <= Math.min(height - 1, Math.ceil(y + r)); j++)
    for (let i = Math.max(0, Math.floor(x - r)); i <= Math.min(width - 1, Math.ceil(x + r)); i++)
      if ((i - x) ** 2 + (j - y) ** 2 <= r * r) state.labels[j * width + i] = id;
  draw();
}
$("stage").onpointerdown = async (e) => {
  if (!state.video) return;
  if (state.view !== "masks") {                  // painting edits the given masks
    document.querySelector("input[name=view][value=masks]").checked = true;
    state.view = "masks";
    await showFrame(state.t);
  }
  stop();
  state.painting = true;
  $("stage").setPointerCapture(e.pointerId);
  paintAt(e);
};
$("stage").onpointermove = (e) => { if (state.painting) paintAt(e); };
$("stage").onpointerup = async () => {
  if (!state.painting) return;
  state.painting = false;
  await saveMask();
};

async function saveMask() {
  const v = state.video;
  try {
    updateMasks(await api(`/api/videos/${v.id}/masks/${state.t}`,
                          { method: "PUT", body: state.labels }));
    $("stage").dataset.saved = `${state.t}:${Date.now()}`;
  } catch (e) { showMessage(`The mask was not saved: ${e.message}`); }
}

$("clear-mask").onclick = async () => { state.labels.fill(0); draw(); await saveMask(); };

async function uploadMask(file, resize) {
  const v = state.video, t = state.t;
  try {
    updateMasks(await api(`/api/videos/${v.id}/masks/${t}/png?resize=${resize}`,
                          { method: "POST", body: file }));
    clearMessage();
    state.view = "masks";
    document.querySelector("input[name=view][value=masks]").checked = true;
    showFrame(t);
  } catch (e) {
    const actions = e.details && e.details.can_resize
      ? [["Resize it (nearest neighbour)", () => uploadMask(file, true)]] : [];
    showMessage(`${file.name}: ${e.message}`, "error", actions);
  }
}
$("mask-file").onchange = (e) => { if (e.target.files[0]) uploadMask(e.target.files[0], false); };

// Running: start the job, then poll its progress.
$("run").onclick = async () => {
  clearMessage();
  try {
    await api(`/api/videos/${state.video.id}/run`, { method: "POST" });
  } catch (e) { return showMessage(e.message); }
  $("run").disabled = true;
  setDownloads(false);
  state.poll = setInterval(pollJob, 300);
};

async function pollJob() {
  const v = state.video;
  let job;
  try { job = await api(`/api/videos/${v.id}/job`); } catch (e) { return; }
  $("progress").max = job.total || 1; $("progress").value = job.done;
  const text = {
    waiting: "waiting for the model (another video is running)…",
    compiling: "compiling the model for this frame size (the first run takes longest)…",
    running: `${job.done} / ${job.total} frames, ${job.fps ? job.fps.toFixed(1) : "–"} frames/s`,
    done: `done: ${job.total} frames in ${job.seconds?.toFixed(1)} s, ` +
          `${job.compile_seconds?.toFixed(1)} s of it compiling; the model ran at ` +
          `${job.model_fps ? job.model_fps.toFixed(1) : "–"} frames/s`,
    error: `failed: ${job.message}`,
  }[job.state] || job.state;
  $("progress-text").textContent = text;
  if (job.state !== "done" && job.state !== "error") return;
  clearInterval(state.poll);
  $("run").disabled = false;
  if (job.state === "error") return showMessage(`The segmentation failed: ${job.message}`);
  v.results_version = job.results_version;
  $("view-results").disabled = false;
  $("view-results").checked = true;
  state.view = "results";
  setDownloads(true);
  showFrame(state.t);
}

function setDownloads(ready) {
  const v = state.video;
  for (const [id, path] of [["download-masks", "masks.zip"], ["download-overlay", "overlay.mp4"]]) {
    const a = $(id);
    a.classList.toggle("disabled", !ready);
    if (ready) a.href = `/api/videos/${v.id}/${path}`; else a.removeAttribute("href");
  }
}

// Look inside: the appearance model's per-component posteriors for one object.
$("inside").onclick = async () => {
  const v = state.video, id = $("inside-object").value, box = $("inside-maps");
  box.replaceChildren(Object.assign(document.createElement("p"),
    { className: "hint", textContent: "tracing the model (compiles once per video)…" }));
  try {
    const out = await api(`/api/videos/${v.id}/inside?object=${id}&t=${state.t}`);
    box.replaceChildren(Object.assign(document.createElement("p"), { className: "hint",
      textContent: `Object ${out.object}, frame ${out.frame} (traced from frame ${out.start}): ` +
                   "each mixture component's posterior, 0 dark to 1 yellow, at the model's stride 16." }));
    out.images.forEach((src, k) => {
      const fig = document.createElement("figure");
      fig.innerHTML = `<img src="${src}" alt="${out.names[k]}"><figcaption>${out.names[k]}</figcaption>`;
      box.appendChild(fig);
    });
  } catch (e) {
    box.replaceChildren();
    showMessage(e.message);
  }
};

init().catch((e) => showMessage(`The page could not start: ${e.message}`));
