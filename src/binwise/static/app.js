// The binwise page: pick or take a photo, post it to /v1/classify, show its bin.
// Plain browser JavaScript, no build step and nothing loaded from other sites.
"use strict";

const TEXT = {
  en: {
    title: "Which bin does it go in?", take: "Take a photo", choose: "Choose a photo",
    explain: "Show where the model looked (Grad-CAM)", top: "Most likely", other: "中文",
    working: "Looking…", explaining: "Working out where the model looked…",
    sure: (p) => `${p} sure`, unsure: "Not sure — try another photo",
    unknown: "This doesn't look like garbage", or: " or ",
    eitherWay: (names, bin) => `${names} — ${bin} either way`,
    noExplain: "Needs the .safetensors model; this service runs an exported model.",
    camLeast: "counted least", camMost: "counted most",
    failed: "Could not classify the photo", offline: "Could not reach the service",
  },
  zh: {
    title: "这个该扔进哪个垃圾桶？", take: "拍照", choose: "选择照片",
    explain: "显示模型关注的区域 (Grad-CAM)", top: "最可能", other: "English",
    working: "识别中…", explaining: "正在计算模型关注的区域…",
    sure: (p) => `置信度 ${p}`, unsure: "不太确定——请换一张照片试试",
    unknown: "这看起来不像垃圾", or: "或",
    eitherWay: (names, bin) => `${names}——都属于${bin}`,
    noExplain: "需要 .safetensors 模型；本服务运行的是导出的模型。",
    camLeast: "影响最小", camMost: "影响最大",
    failed: "无法识别这张照片", offline: "无法连接到服务",
  },
};

// Icons drawn inline (no image files, no emoji font needed): a bin with a sign for its kind.
const BIN_OUTLINE = '<path d="M14 14h36M27 14v-4h10v4M18 19h28l-3 35H21z"/>';
const BIN_SIGNS = {
  recyclable: '<path d="M25.5 40a7 7 0 1 1 2.2 5.2"/><path d="M24 44.5l3.9 1 1-3.9"/>',
  wet: '<path d="M25 46c0-9 6-14 14-14 0 9-5 14-14 14zM25 46l8-8"/>',
  hazardous: '<path d="M32 29l9.5 16h-19z"/><path d="M32 35v4.5M32 42v.6"/>',
  dry: '<path d="M27 33l10 10M37 33l-10 10"/>',
};

const $ = (id) => document.getElementById(id);
const state = {
  lang: localStorage.getItem("binwise-lang") || (navigator.language.startsWith("zh") ? "zh" : "en"),
  model: null,      // GET /v1/model
  file: null,       // the photo on show
  answer: null,     // its /v1/classify answer
  overlay: null,    // its Grad-CAM overlay, a data: URL
  photoUrl: null,
};

function t(key, ...args) {
  const value = TEXT[state.lang][key];
  return typeof value === "function" ? value(...args) : value;
}

function percent(p) {
  if (p < 0.001) return "<0.1%";
  if (p > 0.999) return ">99.9%";
  return `${(100 * p).toFixed(1)}%`;
}

function binInfo(id) {
  return (state.model && state.model.bins.find((b) => b.id === id)) || null;
}

function setStatus(text) {
  $("status").textContent = text || "";
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function renderTexts() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  for (const el of document.querySelectorAll("[data-text]")) el.textContent = t(el.dataset.text);
  $("lang").textContent = t("other");
}

function renderAnswer() {
  const answer = state.answer;
  $("result").hidden = !answer;
  if (!answer) return;
  // status: ok (the bin), unsure (the bin only when every class it hesitates between shares it),
  // unknown (no bin: the photo looks like no training photo); older services send no status
  const status = answer.status || "ok";
  const bin = answer.bin;
  $("result").dataset.status = status;
  const card = $("bin");
  card.style.setProperty("--bin", bin ? bin.color : "#888");
  card.dataset.bin = bin ? bin.id : "";
  $("bin-icon").innerHTML = BIN_OUTLINE + (bin && BIN_SIGNS[bin.id] ? BIN_SIGNS[bin.id] : "");
  const name = (c) => c[state.lang] || c.en;
  const choices = (answer.choices || []).map(name).join(t("or"));
  if (status === "unknown") {
    $("bin-name").textContent = t("unknown");
    $("bin-confidence").textContent = "";
  } else if (status === "unsure") {
    $("bin-name").textContent = t("unsure");
    $("bin-confidence").textContent = bin ? t("eitherWay", choices, name(bin)) : choices;
  } else {
    $("bin-name").textContent = bin ? name(bin) : name(answer.top[0]);
    $("bin-confidence").textContent = t("sure", percent(bin ? answer.bin_probability : answer.confidence));
  }
  setStatus("");

  const list = $("top");
  list.replaceChildren(...answer.top.slice(0, 3).map((c) => {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "class-name";
    name.textContent = c[state.lang] || c.en;
    const cBin = binInfo(c.bin);
    if (cBin) {
      const binName = document.createElement("span");
      binName.className = "class-bin";
      binName.textContent = ` · ${cBin[state.lang] || cBin.en}`;
      name.append(binName);
    }
    const p = document.createElement("span");
    p.className = "probability";
    p.textContent = percent(c.probability);
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(1, 100 * c.probability)}%`;
    fill.style.background = cBin ? cBin.color : "#888";
    bar.append(fill);
    item.append(name, p, bar);
    return item;
  }));
  renderPhoto();
}

function renderPhoto() {
  const showOverlay = $("explain").checked && state.overlay;
  $("photo").src = showOverlay ? state.overlay : state.photoUrl || "";
  $("photo").dataset.showing = showOverlay ? "overlay" : "photo";
  $("cam-key").hidden = !showOverlay;
}

function render() {
  renderTexts();
  renderAnswer();
}

async function classify(file, explain) {
  const form = new FormData();
  form.append("file", file, file.name || "photo.jpg");
  const params = new URLSearchParams({ top_k: "3" });
  if (explain) params.set("explain", "true");
  let response;
  try {
    response = await fetch(`/v1/classify?${params}`, { method: "POST", body: form, headers: apiHeaders });
  } catch (e) {
    throw new Error(`${t("offline")}: ${e.message}`);
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${t("failed")}: ${body.detail || response.statusText}`);
  return body;
}

async function onPhoto(event) {
  const file = event.target.files[0];
  event.target.value = ""; // picking the same photo again should classify it again
  if (!file) return;
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  Object.assign(state, { file, answer: null, overlay: null, photoUrl: URL.createObjectURL(file) });
  showError("");
  render();
  setStatus($("explain").checked ? t("explaining") : t("working"));
  try {
    const answer = await classify(file, $("explain").checked);
    if (state.file !== file) return; // a newer photo was picked meanwhile
    state.answer = answer;
    state.overlay = answer.explain ? `data:image/png;base64,${answer.explain.overlay_png}` : null;
    render();
  } catch (e) {
    setStatus("");
    showError(e.message);
  }
}

async function onExplainToggle() {
  if ($("explain").checked && state.file && !state.overlay) {
    const file = state.file;
    setStatus(t("explaining"));
    try {
      const answer = await classify(file, true);
      if (state.file !== file) return;
      state.overlay = `data:image/png;base64,${answer.explain.overlay_png}`;
      setStatus("");
    } catch (e) {
      setStatus("");
      showError(e.message);
    }
  }
  renderPhoto();
}

// A service started with --api-key: the page is opened as /?key=KEY and passes the key on.
const apiKey = new URLSearchParams(location.search).get("key");
const apiHeaders = apiKey ? { "X-API-Key": apiKey } : {};

async function loadModel() {
  try {
    const response = await fetch("/v1/model", { headers: apiHeaders });
    state.model = await response.json();
    $("model").textContent = state.model.model;
    if (!state.model.explain) {
      $("explain").disabled = true;
      $("explain-note").hidden = false;
    }
    render();
  } catch (e) {
    showError(`${t("offline")}: ${e.message}`);
  }
}

$("camera").addEventListener("change", onPhoto);
$("file").addEventListener("change", onPhoto);
$("explain").addEventListener("change", onExplainToggle);
$("lang").addEventListener("click", () => {
  state.lang = state.lang === "en" ? "zh" : "en";
  localStorage.setItem("binwise-lang", state.lang);
  render();
});
render();
loadModel().finally(() => { document.body.dataset.ready = "true"; });
