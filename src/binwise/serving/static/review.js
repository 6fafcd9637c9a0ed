// The review page: one photo at a time from the queue (GET /review/api/next), labelled by a
// reviewer (POST /review/api/label). The reviewer's key is kept in this browser only.
"use strict";

const TEXT = {
  en: {
    title: "Label the photos the model was unsure about", other: "Another class", lang: "中文",
    keyLabel: "Your reviewer key", start: "Start", pick: "What is it?", notGarbage: "Not garbage", skip: "Skip",
    done: "Nothing left to review. Thank you!", loading: "Loading…", saved: "Saved.", badKey: "This key is not a reviewer's",
    failed: "Something went wrong", kept: "kept by the service", feedback: "sent as feedback",
    said: (names) => `the sender said: ${names}`, lookAlikes: (n) => `stands for ${n} look-alike photo${n === 1 ? "" : "s"}`,
    needs: (n) => `${n} reviewers must agree`,
  },
  zh: {
    title: "为模型拿不准的照片标注类别", other: "其他类别", lang: "English",
    keyLabel: "您的审核密钥", start: "开始", pick: "这是什么？", notGarbage: "不是垃圾", skip: "跳过",
    done: "没有待审核的照片了，谢谢！", loading: "加载中…", saved: "已保存。", badKey: "这不是审核员的密钥",
    failed: "出错了", kept: "服务保留的照片", feedback: "用户反馈",
    said: (names) => `发送者说：${names}`, lookAlikes: (n) => `代表 ${n} 张相似照片`,
    needs: (n) => `需要 ${n} 位审核员意见一致`,
  },
};

const $ = (id) => document.getElementById(id);
const state = {
  lang: localStorage.getItem("binwise-lang") || (navigator.language.startsWith("zh") ? "zh" : "en"),
  key: localStorage.getItem("binwise-reviewer-key"),
  item: null, classes: [], agree: 2, photoUrl: null,
};

function t(name, ...args) {
  const value = TEXT[state.lang][name];
  return typeof value === "function" ? value(...args) : value;
}

function className(c) {
  const name = state.lang === "zh" && c.zh ? c.zh : c.en;
  const bin = c.bin ? (state.lang === "zh" && c.bin.zh ? c.bin.zh : c.bin.en) : "";
  return bin ? `${name} · ${bin}` : name;
}

function showError(text) {
  $("error").textContent = text || "";
  $("error").hidden = !text;
}

async function call(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...(options.headers || {}), "X-Reviewer-Key": state.key } });
  if (response.status === 401) {
    localStorage.removeItem("binwise-reviewer-key");
    state.key = null;
    render();
    throw new Error(t("badKey"));
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.detail || response.statusText);
  }
  return response;
}

function render() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  for (const el of document.querySelectorAll("[data-text]")) el.textContent = t(el.dataset.text);
  $("lang").textContent = t("lang");
  $("login").hidden = Boolean(state.key);
  const item = state.item;
  $("item").hidden = !item;
  if (!item) return;
  const context = [t(item.source === "kept" ? "kept" : "feedback"), t("needs", state.agree)];
  if (item.senders_said.length) context.push(t("said", item.senders_said.join(", ")));
  if (item.look_alikes) context.push(t("lookAlikes", item.look_alikes));
  $("context").textContent = context.join(" · ");
  $("choices").replaceChildren(...item.choices.map((c) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button";
    button.textContent = `${className(c)} (${(100 * c.probability).toFixed(0)}%)`;
    button.addEventListener("click", () => label(String(c.index)));
    return button;
  }));
  $("all-classes").replaceChildren(...state.classes.map((c) => new Option(className(c), String(c.index))));
}

async function next() {
  showError("");
  $("status").textContent = t("loading");
  try {
    const body = await (await call("/review/api/next")).json();
    state.classes = body.classes;
    state.agree = body.agree;
    state.item = body.items[0] || null;
    $("done").hidden = Boolean(state.item);
    if (state.item) {
      const photo = await (await call(`/review/api/photo/${state.item.id}`)).blob();
      if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
      state.photoUrl = URL.createObjectURL(photo);
      $("photo").src = state.photoUrl;
    }
    $("status").textContent = "";
  } catch (e) {
    $("status").textContent = "";
    showError(`${t("failed")}: ${e.message}`);
  }
  render();
}

async function label(value) {
  try {
    await call("/review/api/label", { method: "POST", headers: { "Content-Type": "application/json" },
                                      body: JSON.stringify({ item: state.item.id, label: value }) });
    $("status").textContent = t("saved");
    await next();
  } catch (e) {
    showError(`${t("failed")}: ${e.message}`);
  }
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("key").value.trim();
  localStorage.setItem("binwise-reviewer-key", state.key);
  render();
  next();
});
$("other").addEventListener("click", () => label($("all-classes").value));
$("not-garbage").addEventListener("click", () => label("not garbage"));
$("skip").addEventListener("click", () => label("skip"));
$("lang").addEventListener("click", () => {
  state.lang = state.lang === "zh" ? "en" : "zh";
  localStorage.setItem("binwise-lang", state.lang);
  render();
});

render();
(state.key ? next() : Promise.resolve()).finally(() => { document.body.dataset.ready = "true"; });
