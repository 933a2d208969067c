// binsr serve: the page. Images are upscaled one after another (the server runs one engine job at a
// time anyway); each card polls /api/progress for its tiles while its upload is being processed.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const ui = {
  model: $("#model"), scale: $("#scale"), ensemble: $("#ensemble"), zip: $("#zip"), drop: $("#drop"), files: $("#files"),
  limits: $("#limits"), status: $("#status"), results: $("#results"), card: $("#card"),
};
const server = { models: [], default: null, maxUpload: Infinity, maxEnsemble: 0 };
const queue = [];
const done = [];  // {name, blob} of every finished image, for the zip
let running = false;

function jobId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function mib(bytes) {
  return `${(bytes / 2 ** 20).toFixed(bytes < 2 ** 20 ? 2 : 0)} MiB`;
}

async function loadModels() {
  try {
    const reply = await fetch("/api/models");
    const info = await reply.json();
    server.models = info.models;
    server.default = info.default;
    server.maxUpload = info.max_upload_bytes;
    server.maxEnsemble = info.max_ensemble_pixels;
    for (const m of info.models) {
      const psnr = m.set5_psnr ? `, Set5 ${m.set5_psnr.toFixed(2)} dB` : "";
      ui.model.add(new Option(`${m.name} (x${m.scale}${psnr})`, m.name));
    }
    for (const s of info.scales) ui.scale.add(new Option(`x${s}`, String(s)));
    ui.model.value = info.default;
    syncScale();
    ui.model.disabled = ui.scale.disabled = false;
    ui.ensemble.disabled = !info.max_ensemble_pixels;
    const ensemble = info.max_ensemble_pixels
      ? `, ${info.max_ensemble_pixels.toLocaleString("en")} with the self-ensemble` : "";
    ui.limits.textContent = `up to ${mib(info.max_upload_bytes)} and ${info.max_pixels.toLocaleString("en")} pixels per picture` +
      ensemble;
  } catch (err) {
    ui.status.textContent = `cannot reach the binsr server: ${err}`;
  }
}

function syncScale() {
  const m = server.models.find((x) => x.name === ui.model.value);
  if (m) ui.scale.value = String(m.scale);
}

function pickModelForScale() {
  const s = Number(ui.scale.value);
  const pick = server.models.find((x) => x.scale === s && x.default) || server.models.find((x) => x.scale === s);
  if (pick) ui.model.value = pick.name;
}

function addFiles(files) {
  const start = performance.now();
  for (const file of files) {
    const el = ui.card.content.firstElementChild.cloneNode(true);
    $(".name", el).textContent = file.name;
    $(".message", el).textContent = "waiting";
    ui.results.append(el);
    queue.push({ file, el, start, model: ui.model.value, scale: ui.scale.value, ensemble: ui.ensemble.checked });
  }
  pump();
}

async function pump() {
  if (running) return;
  running = true;
  while (queue.length) await processItem(queue.shift());
  running = false;
}

function form(item) {
  const data = new FormData();
  data.append("image", item.file, item.file.name);
  if (item.model) data.append("model", item.model);
  if (item.scale) data.append("scale", item.scale);
  if (item.ensemble) data.append("self_ensemble", "1");
  return data;
}

async function errorText(reply) {
  try {
    return (await reply.json()).error;
  } catch {
    return `${reply.status} ${reply.statusText}`;
  }
}

function fileName(reply, fallback) {
  const m = /filename\*=UTF-8''([^;]+)/.exec(reply.headers.get("Content-Disposition") || "");
  return m ? decodeURIComponent(m[1]) : fallback;
}

function loaded(img, url) {
  img.src = url;
  return img.decode();
}

async function processItem(item) {
  const { el } = item;
  const bar = $("progress", el);
  const message = $(".message", el);
  const fail = (text) => {
    el.dataset.state = "error";
    message.textContent = text;
  };
  if (item.file.size > server.maxUpload) {
    fail(`${mib(item.file.size)} is over this server's limit of ${mib(server.maxUpload)}`);
    return;
  }
  el.dataset.state = "running";
  message.textContent = "uploading";
  const id = jobId();
  const poll = setInterval(async () => {
    const reply = await fetch(`/api/progress/${id}`).catch(() => null);
    if (!reply || !reply.ok) return;
    const p = await reply.json();
    if (p.state === "queued") {
      message.textContent = p.ahead ? `queued behind ${p.ahead} job(s)` : "queued";
    } else if (p.tiles_total) {
      bar.max = p.tiles_total;
      bar.value = p.tiles_done;
      message.textContent = `upscaling: tile ${p.tiles_done} of ${p.tiles_total}`;
    }
  }, 150);
  let reply;
  try {
    reply = await fetch(`/api/upscale?job=${id}`, { method: "POST", body: form(item) });
  } catch (err) {
    fail(`the upload failed: ${err}`);
    return;
  } finally {
    clearInterval(poll);
  }
  if (!reply.ok) {
    fail(await errorText(reply));
    return;
  }
  const blob = await reply.blob();
  const name = fileName(reply, item.file.name.replace(/\.[^.]*$/, "") + ".png");
  const engine = Number(reply.headers.get("X-Engine-Seconds"));
  const model = reply.headers.get("X-Binsr-Model") +
    (reply.headers.get("X-Binsr-Self-Ensemble") === "1" ? " (x8 self-ensemble)" : "");
  const after = $(".after", el);
  const before = $(".before", el);
  await Promise.all([loaded(after, URL.createObjectURL(blob)), loaded(before, URL.createObjectURL(item.file)).catch(() => null)]);
  $(".figure", el).hidden = false;
  setupCompare(el);
  const seconds = (performance.now() - item.start) / 1000;
  el.dataset.resultSeconds = seconds.toFixed(3);
  el.dataset.engineSeconds = engine.toFixed(3);
  el.dataset.serverTiming = reply.headers.get("Server-Timing") || "";
  $(".info", el).textContent = `${after.naturalWidth}×${after.naturalHeight} · ${model} · engine ${engine.toFixed(2)} s · ` +
    `drop to result ${seconds.toFixed(2)} s`;
  const link = $(".download", el);
  link.href = after.src;
  link.download = name;
  link.hidden = false;
  done.push({ name, blob });
  ui.zip.disabled = false;
  message.textContent = "";
  // the "before" side: the input enlarged with bicubic by the server (the browser's own scaling
  // of the original stays there if that fails)
  const bic = await fetch("/api/bicubic", { method: "POST", body: form(item) }).catch(() => null);
  if (bic && bic.ok) await loaded(before, URL.createObjectURL(await bic.blob())).catch(() => null);
  el.dataset.state = "done";
}

function setupCompare(el) {
  const compare = $(".compare", el);
  const slider = $(".slider", el);
  const zoom = $(".zoom", el);
  const view = $(".view", el);
  const after = $(".after", el);
  const set = (pct) => {
    const v = Math.min(100, Math.max(0, pct));
    compare.style.setProperty("--pos", `${v}%`);
    slider.value = String(v);
  };
  const fromPointer = (e) => {
    const r = compare.getBoundingClientRect();
    set(((e.clientX - r.left) / r.width) * 100);
  };
  compare.addEventListener("pointerdown", (e) => {
    e.preventDefault();  // no native image drag, which would cancel the pointer
    compare.setPointerCapture(e.pointerId);
    fromPointer(e);
  });
  compare.addEventListener("pointermove", (e) => {
    if (compare.hasPointerCapture(e.pointerId)) fromPointer(e);
  });
  slider.addEventListener("input", () => set(Number(slider.value)));
  zoom.hidden = false;
  zoom.addEventListener("click", () => {
    const actual = view.classList.toggle("actual");
    // 1:1 = one image pixel per screen pixel
    after.style.width = actual ? `${after.naturalWidth / window.devicePixelRatio}px` : "";
    zoom.textContent = actual ? "Fit" : "Zoom 1:1";
  });
  set(50);
}

// ZIP (PKWARE APPNOTE 6.3.x, sections 4.3.7, 4.3.12 and 4.3.16): entries stored without
// compression (PNGs are deflated already), UTF-8 names (flag bit 11), no ZIP64 (4 GiB in all).
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function header(fields) {
  const size = fields.reduce((n, [bytes]) => n + bytes, 0);
  const view = new DataView(new ArrayBuffer(size));
  let at = 0;
  for (const [bytes, value] of fields) {
    if (bytes === 2) view.setUint16(at, value, true);
    else view.setUint32(at, value, true);
    at += bytes;
  }
  return new Uint8Array(view.buffer);
}

async function zipBlob(entries) {
  const parts = [];
  const central = [];
  let offset = 0;
  const now = new Date();
  const time = (now.getHours() << 11) | (now.getMinutes() << 5) | (now.getSeconds() >> 1);
  const date = ((now.getFullYear() - 1980) << 9) | ((now.getMonth() + 1) << 5) | now.getDate();
  const seen = new Map();
  for (const { name, blob } of entries) {
    const n = (seen.get(name) || 0) + 1;
    seen.set(name, n);
    const unique = n === 1 ? name : name.replace(/(\.[^.]*)?$/, ` (${n})$1`);
    const nameBytes = new TextEncoder().encode(unique);
    const data = new Uint8Array(await blob.arrayBuffer());
    const crc = crc32(data);
    const common = [[2, 20], [2, 0x0800], [2, 0], [2, time], [2, date], [4, crc], [4, data.length], [4, data.length],
      [2, nameBytes.length], [2, 0]];
    parts.push(header([[4, 0x04034b50], ...common]), nameBytes, data);
    central.push(header([[4, 0x02014b50], [2, 20], ...common, [2, 0], [2, 0], [2, 0], [4, 0], [4, offset]]), nameBytes);
    offset += 30 + nameBytes.length + data.length;
    if (offset >= 2 ** 32) throw new Error("over 4 GiB: download the images one by one");
  }
  const centralSize = central.reduce((n, p) => n + p.length, 0);
  const end = header([[4, 0x06054b50], [2, 0], [2, 0], [2, entries.length], [2, entries.length], [4, centralSize],
    [4, offset], [2, 0]]);
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

async function downloadAll() {
  ui.zip.disabled = true;
  try {
    const blob = await zipBlob(done);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `binsr-${done.length}-images.zip`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
    ui.status.textContent = "";
  } catch (err) {
    ui.status.textContent = `cannot make the zip: ${err.message}`;
  } finally {
    ui.zip.disabled = false;
  }
}

ui.files.addEventListener("change", () => {
  addFiles(ui.files.files);
  ui.files.value = "";
});
for (const type of ["dragenter", "dragover"]) {
  document.addEventListener(type, (e) => {
    e.preventDefault();
    ui.drop.classList.add("over");
  });
}
document.addEventListener("dragleave", (e) => {
  if (!e.relatedTarget) ui.drop.classList.remove("over");
});
document.addEventListener("drop", (e) => {
  e.preventDefault();
  ui.drop.classList.remove("over");
  if (e.dataTransfer && e.dataTransfer.files.length) addFiles(e.dataTransfer.files);
});
ui.model.addEventListener("change", syncScale);
ui.scale.addEventListener("change", pickModelForScale);
ui.zip.addEventListener("click", downloadAll);
loadModels();
