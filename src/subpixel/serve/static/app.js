// The page of `subpixel serve`: pick a file, send it to /api/upscale, show progress, compare
// and download. No build step, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const ZOOM = 2; // crop magnification, in upscaled pixels per screen pixel
const state = { file: null, catalogue: null, results: [], originalUrl: null };

function jobId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setStatus(text, fraction) {
  $("status").hidden = text === null;
  $("status-text").textContent = text || "";
  const bar = $("progress");
  if (fraction === undefined || fraction === null) bar.removeAttribute("value");
  else bar.value = fraction;
}

function bytesText(n) {
  return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${Math.ceil(n / 1024)} KiB`;
}

// ---------------------------------------------------------------- models and options
async function loadCatalogue() {
  const response = await fetch("/api/models");
  state.catalogue = await response.json();
  const model = $("model");
  for (const entry of state.catalogue.models) {
    model.add(new Option(entry.name, entry.name, false, entry.name === state.catalogue.default));
  }
  for (const precision of state.catalogue.precisions) {
    $("precision").add(new Option(precision, precision));
  }
  model.addEventListener("change", fillScales);
  fillScales();
}

function currentModel() {
  return state.catalogue.models.find((m) => m.name === $("model").value);
}

function fillScales() {
  const entry = currentModel();
  const scale = $("scale");
  const previous = scale.value || "3";
  scale.replaceChildren();
  for (const s of entry.scales) scale.add(new Option(`x${s}`, String(s)));
  scale.value = entry.scales.map(String).includes(previous) ? previous : String(entry.scales[0]);
  const macs = Object.entries(entry.macs_per_pixel)
    .map(([s, m]) => `${Math.round(m).toLocaleString("en")} at ${s}`)
    .join(", ");
  $("model-info").textContent =
    `${entry.name}: ${entry.parameters.toLocaleString("en")} parameters; ` +
    `multiply-adds per output pixel ${macs}`;
}

// ---------------------------------------------------------------- choosing a file
function chooseFile(file) {
  if (!file) return;
  state.file = file;
  $("file-name").textContent = `${file.name} (${bytesText(file.size)})`;
  $("go").disabled = false;
  upscale();
}

function wireDropZone() {
  const drop = $("drop");
  $("file").addEventListener("change", () => chooseFile($("file").files[0]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    chooseFile(event.dataTransfer.files[0]);
  });
  $("go").addEventListener("click", upscale);
}

// ---------------------------------------------------------------- upscaling
function upscale() {
  const file = state.file;
  showError("");
  if (file.size > state.catalogue.max_upload) {
    showError(
      `${file.name} is ${bytesText(file.size)}, over this server's limit of ` +
        `${bytesText(state.catalogue.max_upload)}`,
    );
    return;
  }
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("model", $("model").value);
  form.append("scale", $("scale").value);
  form.append("precision", $("precision").value);
  delete $("result").dataset.ready;
  $("result").hidden = true; // a new file's answer replaces the last one
  const job = jobId();
  const request = new XMLHttpRequest();
  request.open("POST", `/api/upscale?job=${job}`);
  request.responseType = "blob";
  let polling = null;
  const started = performance.now();
  $("go").disabled = true;
  setStatus("uploading", 0);
  request.upload.onprogress = (event) => {
    if (event.lengthComputable) {
      setStatus(`uploading ${Math.round((100 * event.loaded) / event.total)}%`, event.loaded / event.total);
    }
  };
  request.upload.onload = () => {
    setStatus("waiting for the server", null);
    polling = setInterval(() => poll(job), 300);
  };
  const finish = () => {
    clearInterval(polling);
    setStatus(null);
    $("go").disabled = false;
  };
  request.onerror = () => {
    finish();
    showError("the server could not be reached (is `subpixel serve` still running?)");
  };
  request.onload = async () => {
    finish();
    if (request.status !== 200) {
      showError(await errorText(request.response, request.status));
      return;
    }
    const seconds = (performance.now() - started) / 1000;
    showResult(file, request.response, request.getResponseHeader("Content-Disposition"), seconds);
  };
  request.send(form);
}

async function poll(job) {
  const response = await fetch(`/api/jobs/${job}`);
  if (!response.ok) return; // not registered yet, or already answered
  const status = await response.json();
  if (status.state === "queued") {
    setStatus(status.ahead ? `queued: ${status.ahead} ahead` : "queued", null);
  } else if (status.state === "upscaling") {
    const unit = state.file.type.startsWith("video/") ? "frames" : "tiles";
    if (status.total) setStatus(`upscaling: ${status.done}/${status.total} ${unit}`, status.done / status.total);
    else setStatus(status.done ? `upscaling: ${status.done} ${unit}` : "upscaling", null);
  }
}

async function errorText(blob, status) {
  try {
    return JSON.parse(await blob.text()).error || `error ${status}`;
  } catch {
    return `error ${status}`;
  }
}

function downloadName(disposition, fallback) {
  const utf8 = /filename\*=UTF-8''([^;]+)/i.exec(disposition || "");
  if (utf8) return decodeURIComponent(utf8[1]);
  const plain = /filename="([^"]+)"/i.exec(disposition || "");
  return plain ? plain[1] : fallback;
}

// ---------------------------------------------------------------- the result
function showResult(file, blob, disposition, seconds) {
  for (const url of state.results) URL.revokeObjectURL(url);
  const resultUrl = URL.createObjectURL(blob);
  const originalUrl = URL.createObjectURL(file);
  state.results = [resultUrl, originalUrl];
  const name = downloadName(disposition, `upscaled-${file.name}`);
  $("download").href = resultUrl;
  $("download").download = name;
  $("download").textContent = `Download ${name} (${bytesText(blob.size)})`;
  $("result").hidden = false;
  const isVideo = blob.type.startsWith("video/");
  $("video").hidden = !isVideo;
  document.querySelector(".comparison").hidden = isVideo;
  $("zoom").hidden = isVideo;
  $("no-preview").hidden = true;
  const info = `${$("model").value} x${$("scale").value} in ${seconds.toFixed(1)} s`;
  $("result-info").textContent = info;
  if (isVideo) {
    $("video").src = resultUrl;
    $("result").dataset.ready = "video";
    return;
  }
  const after = $("after");
  const before = $("before");
  after.onload = () => {
    $("result-info").textContent =
      `${info}: ${before.naturalWidth || "?"}x${before.naturalHeight || "?"} → ` +
      `${after.naturalWidth}x${after.naturalHeight}`;
    zoomAt(0.5, 0.5);
    $("result").dataset.ready = "image";
  };
  after.onerror = () => {
    document.querySelector(".comparison").hidden = true;
    $("zoom").hidden = true;
    $("no-preview").hidden = false;
    $("no-preview").textContent = `This browser cannot show ${blob.type || "this format"}; the download holds the result.`;
    $("result").dataset.ready = "no-preview";
  };
  before.src = originalUrl;
  after.src = resultUrl;
  setSplit(Number($("slider").value));
}

function setSplit(percent) {
  $("before").style.clipPath = `inset(0 ${100 - percent}% 0 0)`;
  $("divider").style.left = `${percent}%`;
}

function zoomAt(fx, fy) {
  const after = $("after");
  if (!after.naturalWidth) return;
  const crop = $("zoom-after");
  const width = after.naturalWidth * ZOOM;
  const height = after.naturalHeight * ZOOM;
  const x = Math.min(Math.max(fx * width - crop.clientWidth / 2, 0), Math.max(width - crop.clientWidth, 0));
  const y = Math.min(Math.max(fy * height - crop.clientHeight / 2, 0), Math.max(height - crop.clientHeight, 0));
  for (const [id, url] of [["zoom-before", state.results[1]], ["zoom-after", state.results[0]]]) {
    const box = $(id);
    box.style.backgroundImage = `url("${url}")`;
    box.style.backgroundSize = `${width}px ${height}px`;
    box.style.backgroundPosition = `${-x}px ${-y}px`;
  }
}

function wireComparison() {
  const slider = $("slider");
  slider.addEventListener("input", () => setSplit(Number(slider.value)));
  $("compare").addEventListener("pointermove", (event) => {
    const box = $("compare").getBoundingClientRect();
    zoomAt((event.clientX - box.left) / box.width, (event.clientY - box.top) / box.height);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  wireDropZone();
  wireComparison();
  loadCatalogue().catch(() => showError("could not load the list of models from the server"));
});
