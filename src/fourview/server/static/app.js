"use strict";
// The page's script: submits a job (JSON for text, multipart for photos), polls GET /jobs/{id} for its
// progress, and shows the result: the GLB in the viewer, the turntable, the views and download links.
// Files are fetched with the API key header (when the server has one) and shown from blob URLs.

const $ = (id) => document.getElementById(id);
const viewer = new GlbViewer($("viewer"));
const SETTINGS = ["seed", "steps", "faces", "texture_size", "turntable"];
const GENERATOR_SETTINGS = ["seed", "steps"];  // a four-photo job runs no generator: the server refuses them
let apiKey = sessionStorage.getItem("fourview-api-key") || "";
let current = null, pollTimer = null, blobUrls = [];

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers, apiKey ? { "X-API-Key": apiKey } : {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).detail || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function kind() { return document.querySelector("input[name=kind]:checked").value; }

function showKind() {
  const k = kind();
  $("photo-row").hidden = k !== "photo";
  $("views-row").hidden = k !== "views";
  $("prompt-row").hidden = k === "views";
  $("prompt").placeholder = k === "photo" ? "what the photo shows (optional)" : "a red mug";
}

function request() {
  const k = kind(), settings = {}, prompt = $("prompt").value.trim();
  for (const name of SETTINGS) {
    if (k === "views" && GENERATOR_SETTINGS.includes(name)) continue;
    const value = $(name).value.trim();
    if (value !== "") settings[name] = Number(value);
  }
  if (k === "text") {
    if (!prompt) throw new Error("Type a prompt first, e.g. 'a red mug'.");
    return { body: JSON.stringify(Object.assign({ prompt }, settings)), headers: { "Content-Type": "application/json" } };
  }
  const form = new FormData();
  for (const [name, value] of Object.entries(settings)) form.append(name, String(value));
  if (k === "photo") {
    if (!$("photo").files.length) throw new Error("Choose a photo first.");
    if (prompt) form.append("prompt", prompt);
    form.append("photo", $("photo").files[0]);
  } else {
    for (let i = 0; i < 4; i++) {
      if (!$("view" + i).files.length) throw new Error("Choose all four photos first.");
      form.append("views", $("view" + i).files[0]);
    }
  }
  return { body: form, headers: {} };
}

async function submit(event) {
  event.preventDefault();
  apiKey = $("api-key").value.trim() || apiKey;
  if (apiKey) sessionStorage.setItem("fourview-api-key", apiKey);
  try {
    const { body, headers } = request();
    $("submit").disabled = true;
    const job = await (await api("/jobs", { method: "POST", body, headers })).json();
    follow(job.id);
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    $("submit").disabled = false;
  }
}

function clearResult() {
  delete $("result").dataset.shown;
  for (const url of blobUrls) URL.revokeObjectURL(url);
  blobUrls = [];
  $("downloads").textContent = "";
  $("turntable-image").removeAttribute("src");
  $("views-image").removeAttribute("src");
  viewer.clear();
}

function follow(id) {
  current = id;
  clearResult();
  $("progress").value = 0;
  poll();
}

async function poll() {
  clearTimeout(pollTimer);
  const id = current;
  let job;
  try {
    job = await (await api("/jobs/" + id)).json();
  } catch (e) {
    setStatus(e.message, true);
    return;
  }
  if (id !== current) return;
  const active = job.status === "queued" || job.status === "running";
  $("progress").value = job.progress;
  const where = job.status === "queued" && job.queue_position ? ` (${job.queue_position} ahead)` : "";
  setStatus(active ? `${job.status}: ${job.stage}${where}` : job.status + (job.error ? ": " + job.error : ""), job.status === "failed");
  $("cancel").hidden = !active;
  if (active) pollTimer = setTimeout(poll, 700);
  else refreshJobs();
  if (job.status === "done") await showResult(job);
}

async function showResult(job) {
  delete $("result").dataset.shown;
  try {
    for (const [name, url] of Object.entries(job.files)) {
      const blob = await (await api(url)).blob();
      const href = URL.createObjectURL(blob);
      blobUrls.push(href);
      const link = document.createElement("a");
      link.href = href;
      link.download = `fourview-${job.id.slice(0, 8)}-${name}`;
      link.id = "download-" + name.replace(".", "-");
      link.textContent = name;
      $("downloads").append(link);
      if (name === "turntable.gif") $("turntable-image").src = href;
      if (name === "views.png") $("views-image").src = href;
      if (name === "model.glb") await viewer.load(await blob.arrayBuffer());
    }
    $("result").dataset.shown = job.id;  // every file fetched and shown
  } catch (e) {
    setStatus("the result could not be shown: " + e.message, true);
  }
}

async function refreshJobs() {
  let jobs;
  try {
    jobs = (await (await api("/jobs?limit=30")).json()).jobs;
  } catch (e) {
    return;  // e.g. no API key yet
  }
  const list = $("jobs");
  list.textContent = "";
  for (const job of jobs) {
    const item = document.createElement("li");
    const what = job.settings.prompt || (job.inputs && (job.inputs.photo || (job.inputs.views || []).join(", "))) || job.kind;
    item.textContent = `${job.status} · ${job.kind} · ${what}`;
    item.title = job.id;
    item.addEventListener("click", () => follow(job.id));
    list.append(item);
  }
}

async function cancel() {
  try {
    await api("/jobs/" + current, { method: "DELETE" });
    poll();
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function health() {
  try {
    const h = await (await fetch("/health")).json();
    $("key-row").hidden = !h.api_key_required;
    const states = h.workers.map((w) => `${w.device}: ${w.state === "loading" ? "loading the models" : w.state}`);
    $("health").textContent = `fourview ${h.version} · ${states.join(", ")} · ${h.queued} queued`;
    if (h.workers.some((w) => w.state === "loading")) setTimeout(health, 2000);
  } catch (e) {
    $("health").textContent = "the server does not answer";
  }
}

$("job-form").addEventListener("submit", submit);
$("cancel").addEventListener("click", cancel);
for (const radio of document.querySelectorAll("input[name=kind]")) radio.addEventListener("change", showKind);
showKind();
health();
refreshJobs();
if (viewer.canvas.dataset.error) setStatus(viewer.canvas.dataset.error, true);
