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
    wrong: "Wrong? Tell us", rightClass: "What is it?", noteLabel: "Note (optional)", send: "Send",
    guesses: "The model's guesses", classes: "Classes", notGarbage: "Not garbage", sending: "Sending…",
    thanks: "Thank you — recorded.", already: "Already recorded — thank you.",
    feedbackFailed: "Could not send the feedback", region: "Bins of",
    keepNotice: "This service keeps photos it is unsure about, so that people can label them and improve it.",
    noKeep: "Don't keep my photos",
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
    wrong: "识别错了？告诉我们", rightClass: "这是什么？", noteLabel: "备注（可选）", send: "发送",
    guesses: "模型的猜测", classes: "类别", notGarbage: "不是垃圾", sending: "发送中…",
    thanks: "谢谢，已记录。", already: "已经记录过了，谢谢。",
    feedbackFailed: "无法发送反馈", region: "分类规则",
    keepNotice: "本服务会保留它拿不准的照片，由人工标注后用来改进模型。",
    noKeep: "不要保留我的照片",
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
  feedback: null,   // what the page says about the feedback on this photo: {key} or {key, detail}
  region: localStorage.getItem("binwise-region"),  // whose bins (GET /v1/regions); remembered
  noKeep: localStorage.getItem("binwise-no-keep") === "true",  // refuse --keep-uncertain; remembered
};

// The value POST /v1/feedback takes for "not garbage" (any class is sent as its index).
const NOT_GARBAGE = "not garbage";

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
  renderFeedback();
  renderPhoto();
}

// "Wrong? Tell us": the right class, grouped by bin; an unsure answer's choices come first, and
// "not garbage" leads when the answer was unknown. Shown only when the service records feedback.
function renderFeedback() {
  const answer = state.answer;
  $("feedback").hidden = !(answer && state.model && state.model.feedback);
  if ($("feedback").hidden) return;
  const name = (c) => c[state.lang] || c.en;
  const option = (value, text) => {
    const el = document.createElement("option");
    el.value = value;
    el.textContent = text;
    return el;
  };
  const group = (label, options) => {
    const el = document.createElement("optgroup");
    el.label = label;
    el.append(...options);
    return el;
  };
  const classes = state.model.classes.map((c, i) => ({ ...c, index: i }));
  const groups = [];
  if (answer.status === "unknown") groups.push(group(t("notGarbage"), [option(NOT_GARBAGE, t("notGarbage"))]));
  if (answer.status === "unsure" && answer.choices) {
    groups.push(group(t("guesses"), answer.choices.map((c) => option(String(c.index), name(c)))));
  }
  const bins = state.model.bins.length ? state.model.bins : [null];
  for (const bin of bins) {
    const members = classes.filter((c) => !bin || c.bin === bin.id);
    groups.push(group(bin ? name(bin) : t("classes"), members.map((c) => option(String(c.index), name(c)))));
  }
  if (answer.status !== "unknown") groups.push(group(t("notGarbage"), [option(NOT_GARBAGE, t("notGarbage"))]));
  const select = $("feedback-class");
  const chosen = select.value;
  select.replaceChildren(...groups);
  if (chosen) select.value = chosen;
  const message = state.feedback;
  $("feedback-status").textContent = message ? t(message.key) + (message.detail ? `: ${message.detail}` : "") : "";
  $("feedback-status").dataset.outcome = message ? message.key : "";
}

function onWrong() {
  const form = $("feedback-form");
  form.hidden = !form.hidden;
  $("wrong").setAttribute("aria-expanded", String(!form.hidden));
}

async function onFeedbackSubmit(event) {
  event.preventDefault();
  const file = state.file;
  const form = new FormData();
  form.append("file", file, file.name || "photo.jpg");
  form.append("class", $("feedback-class").value);
  form.append("note", $("feedback-note").value);
  if (state.region) form.append("region", state.region);
  $("feedback-send").disabled = true;
  state.feedback = { key: "sending" };
  renderFeedback();
  try {
    const response = await fetch("/v1/feedback", { method: "POST", body: form, headers: apiHeaders });
    const body = await response.json().catch(() => ({}));
    if (state.file !== file) return; // another photo meanwhile
    if (response.ok) {
      state.feedback = { key: body.already_recorded ? "already" : "thanks" };
      $("feedback-form").hidden = true;
      $("wrong").setAttribute("aria-expanded", "false");
    } else {
      state.feedback = { key: "feedbackFailed", detail: body.detail || response.statusText };
    }
  } catch (e) {
    state.feedback = { key: "feedbackFailed", detail: e.message };
  } finally {
    $("feedback-send").disabled = false;
  }
  renderFeedback();
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
  if (state.region) params.set("region", state.region);
  if (state.noKeep) params.set("keep", "false");
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
  Object.assign(state, { file, answer: null, overlay: null, photoUrl: URL.createObjectURL(file), feedback: null });
  $("feedback-form").hidden = true;
  $("feedback-note").value = "";
  $("feedback-class").value = "";
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
    $("keep").hidden = !state.model.keeps_uncertain;
    if (!state.model.explain) {
      $("explain").disabled = true;
      $("explain-note").hidden = false;
    }
    render();
  } catch (e) {
    showError(`${t("offline")}: ${e.message}`);
  }
}

// Regions: a service started with --region answers with another region's bins on request.
async function loadRegions() {
  const response = await fetch("/v1/regions", { headers: apiHeaders });
  if (!response.ok) return; // an older service: its model's own bins only
  const listed = await response.json();
  const names = listed.regions.map((r) => r.name);
  if (!names.includes(state.region)) state.region = listed.default;
  const select = $("region");
  select.replaceChildren(...listed.regions.map((r) => {
    const option = document.createElement("option");
    option.value = r.name;
    option.textContent = r.version ? `${r.name} (${r.version})` : r.name;
    return option;
  }));
  select.value = state.region;
  $("region-picker").hidden = names.length < 2;
}

async function onRegionChange() {
  state.region = $("region").value;
  localStorage.setItem("binwise-region", state.region);
  if (!state.file) return;
  const file = state.file;  // the same photo under the new region's bins
  setStatus(t("working"));
  try {
    const answer = await classify(file, false);
    if (state.file !== file) return;
    Object.assign(state, { answer, overlay: null });
    $("explain").checked = false;
    render();
  } catch (e) {
    setStatus("");
    showError(e.message);
  }
}

$("camera").addEventListener("change", onPhoto);
$("region").addEventListener("change", onRegionChange);
$("no-keep").checked = state.noKeep;
$("no-keep").addEventListener("change", () => {
  state.noKeep = $("no-keep").checked;
  localStorage.setItem("binwise-no-keep", String(state.noKeep));
});
$("file").addEventListener("change", onPhoto);
$("explain").addEventListener("change", onExplainToggle);
$("wrong").addEventListener("click", onWrong);
$("feedback-form").addEventListener("submit", onFeedbackSubmit);
$("lang").addEventListener("click", () => {
  state.lang = state.lang === "en" ? "zh" : "en";
  localStorage.setItem("binwise-lang", state.lang);
  render();
});
render();
Promise.all([loadModel(), loadRegions().catch(() => {})]).finally(() => { document.body.dataset.ready = "true"; });
