// AutoMem trace viewer: loads data/*.js files (automemData(key, value)) on demand.
"use strict";

const store = new Map();        // key -> data
const waiting = new Map();      // key -> [resolve]
const MAX_CHUNKS = 8;           // chunks kept in memory (least recently used dropped)
let chunkOrder = [];
window.automemLoads = [];       // every data file requested, in order (for tests and debugging)
const state = { index: null, meta: null, episode: null, step: 0, filter: "" };

window.automemData = function (key, value) {
  store.set(key, value);
  (waiting.get(key) || []).forEach((resolve) => resolve(value));
  waiting.delete(key);
};

function load(key, src) {
  if (store.has(key)) return Promise.resolve(store.get(key));
  return new Promise((resolve, reject) => {
    const first = !waiting.has(key);
    waiting.set(key, (waiting.get(key) || []).concat([resolve]));
    if (!first) return;
    const s = document.createElement("script");
    window.automemLoads.push(src);
    s.src = src;
    s.dataset.key = key;
    s.onerror = () => reject(new Error("cannot load " + src));
    s.onload = () => s.remove();
    document.head.appendChild(s);
  });
}

const el = (id) => document.getElementById(id);
function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
const fmt = (x) => (typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(2)) : String(x ?? ""));

// --- memory: the Python apply_diff, line ops on splitlines(keepends=True) ---------------
function splitKeep(text) { return text.match(/[^\n]*\n|[^\n]+$/g) || []; }
function applyDiff(mem, diff) {
  const out = Object.assign({}, mem);
  for (const n of Object.keys(diff.removed || {})) delete out[n];
  for (const [n, c] of Object.entries(diff.added || {})) out[n] = c;
  for (const [n, ch] of Object.entries(diff.changed || {})) {
    const lines = splitKeep(out[n] || "");
    const result = [];
    let pos = 0;
    for (const [, i1, i2, add] of ch.ops) {
      result.push(...lines.slice(pos, i1), ...add);
      pos = i2;
    }
    result.push(...lines.slice(pos));
    out[n] = result.join("");
  }
  return out;
}

// --- episodes list -----------------------------------------------------------------------
async function init() {
  const index = await load("index", "data/index.js");
  state.index = index;
  el("run-dir").textContent = index.run_dir;
  const body = el("episodes").querySelector("tbody");
  for (const e of index.episodes) {
    const tr = h("tr", { class: "episode" + (e.errored ? " errored" : ""), "data-id": e.id,
                         onclick: () => openEpisode(e.id) },
      h("td", {}, e.id), h("td", {}, e.game), h("td", {}, e.task), h("td", {}, e.seed),
      h("td", { class: "progression" }, fmt(e.progression)), h("td", {}, e.steps),
      h("td", {}, e.fallback), h("td", {}, e.finished ? e.end_reason : "unfinished"));
    body.append(tr);
  }
  const m = /#ep=([^&]+)(?:&step=(\d+))?/.exec(location.hash);
  if (m) await openEpisode(decodeURIComponent(m[1]), Number(m[2] || 0));
  el("status").textContent = "ready";
  document.body.dataset.ready = "1";
}

async function openEpisode(id, step = 0) {
  document.body.dataset.ready = "0";
  const meta = await load("meta:" + id, "data/ep/" + encodeURIComponent(id) + "/meta.js");
  state.meta = meta; state.episode = id; state.filter = "";
  document.querySelectorAll("tr.episode").forEach((tr) =>
    tr.classList.toggle("selected", tr.dataset.id === id));
  el("episode-panel").hidden = false;
  el("episode-title").textContent = id;
  const end = meta.end ? meta.end.stats || {} : {};
  el("episode-outcome").textContent = meta.end
    ? `progression ${fmt(end.progression)}, return ${fmt(end.episode_return)}, ` +
      `length ${fmt(end.length)}, end: ${end.end_reason}` + (meta.end.error ? ` (${meta.end.error})` : "")
    : "unfinished episode";
  el("num-steps").textContent = meta.num_steps;
  el("step-num").max = Math.max(meta.num_steps - 1, 0);
  const sel = el("filter");
  sel.replaceChildren(h("option", { value: "" }, "(none)"));
  for (const op of Object.keys(meta.events.ops)) sel.append(h("option", { value: "op:" + op }, "op " + op));
  for (const k of ["error", "fallback", "reward"]) sel.append(h("option", { value: k }, k));
  sel.value = "";
  const ach = el("achievements");
  ach.replaceChildren(meta.events.achievements.length ? "achievements: " : "");
  for (const a of meta.events.achievements) {
    ach.append(h("a", { "data-step": a.step, onclick: () => show(a.step) }, `${a.name} (step ${a.step})`));
  }
  renderMatches();
  await show(step);
}

function matches() {
  const ev = state.meta.events, f = state.filter;
  if (!f) return [];
  if (f.startsWith("op:")) return ev.ops[f.slice(3)] || [];
  return ev[f] || [];
}

function renderMatches() {
  const list = matches();
  el("match-count").textContent = state.filter ? `${list.length} matching steps` : "";
  const box = el("matches");
  box.replaceChildren();
  for (const s of list.slice(0, 200)) box.append(h("a", { "data-step": s, onclick: () => show(s) }, s));
  if (list.length > 200) box.append(`... ${list.length - 200} more (use match >)`);
}

async function chunk(k) {
  const id = state.episode;
  const key = `chunk:${id}:${k}`;
  const data = await load(key, `data/ep/${encodeURIComponent(id)}/chunk-${String(k).padStart(5, "0")}.js`);
  chunkOrder = chunkOrder.filter((x) => x !== key).concat([key]);
  while (chunkOrder.length > MAX_CHUNKS) store.delete(chunkOrder.shift());
  return data;
}

async function show(step) {
  const meta = state.meta;
  step = Math.max(0, Math.min(Number(step) || 0, meta.num_steps - 1));
  state.step = step;
  el("step-num").value = step;
  history.replaceState(null, "", `#ep=${encodeURIComponent(state.episode)}&step=${step}`);
  if (meta.num_steps === 0) { el("turns").replaceChildren("no steps recorded"); return; }
  const k = Math.floor(step / meta.chunk_size);
  const data = await chunk(k);
  if (state.step !== step) return;  // a later navigation won
  let mem = data.memory_start;
  let rec = null;
  for (const s of data.steps) {
    for (const t of s.turns) mem = applyDiff(mem, t.memory_diff || {});
    if (s.step === step) { rec = s; break; }
  }
  renderStep(rec);
  renderMemory(mem);
  document.body.dataset.step = String(step);
  document.body.dataset.ready = "1";
}

function renderStep(rec) {
  const line = rec && rec.line;
  const box = el("step-line");
  box.replaceChildren();
  if (line) {
    box.append(h("b", {}, `step ${rec.step}: action `), h("code", { id: "step-action" }, line.action),
      line.fallback ? h("span", { class: "fallback" }, " (fallback)") : "",
      ` reward ${fmt(line.reward)}, progression ${fmt(line.progression)}`,
      line.feedback ? ` feedback: ${line.feedback}` : "", line.done ? " (episode ended)" : "");
  } else box.append(`step ${rec ? rec.step : "?"}: no env step recorded (the episode stopped here)`);
  const turns = el("turns");
  turns.replaceChildren();
  for (const t of rec ? rec.turns : []) {
    const prompt = h("details", { class: "prompt" }, h("summary", {}, `prompt (${t.messages.length} messages, ${t.prompt_tokens || 0} tokens; system prompt at the top)`));
    prompt.append(h("pre", {}, "[system]\n" + state.meta.system));
    for (const m of t.messages) prompt.append(h("pre", {}, `[${m.role}]\n${m.content}`));
    const cmds = h("table", { class: "commands" }, h("tr", {}, h("th", {}, "op"), h("th", {}, "args"), h("th", {}, "ok"), h("th", {}, "result")));
    for (const c of t.commands || []) {
      cmds.append(h("tr", { class: "command" + (c.ok ? "" : " cmd-fail"), "data-op": c.op || "" },
        h("td", {}, c.op || "(parse error)"), h("td", {}, (c.args || []).join(" | ")),
        h("td", {}, c.ok ? "yes" : "no"), h("td", {}, h("pre", {}, c.result))));
    }
    const diff = h("div", { class: "memory-diff" });
    const d = t.memory_diff || {};
    for (const n of Object.keys(d.added || {})) diff.append(h("pre", { class: "diff-add" }, `+ ${n}\n${d.added[n]}`));
    for (const n of Object.keys(d.removed || {})) diff.append(h("pre", { class: "diff-del" }, `- ${n}`));
    for (const [n, ch] of Object.entries(d.changed || {})) diff.append(h("pre", {}, ch.unified || n));
    turns.append(h("div", { class: `turn ${t.phase}`, "data-phase": t.phase },
      h("b", {}, `${(t.phase || "").toUpperCase()} turn ${t.turn}`),
      t.error ? h("span", { class: "fallback" }, ` error: ${t.error}`) : "",
      prompt, h("div", {}, "completion:"), h("pre", { class: "completion" }, t.completion || ""),
      cmds, diff.childNodes.length ? diff : ""));
  }
}

function renderMemory(mem) {
  const sel = el("memory-files");
  const names = Object.keys(mem).sort();
  const keep = names.includes(sel.value) ? sel.value : names[0];
  sel.replaceChildren(...names.map((n) => h("option", { value: n }, `${n} (${mem[n].length} chars)`)));
  if (keep) sel.value = keep;
  state.memory = mem;
  el("memory-content").textContent = keep ? mem[keep] || "(empty)" : "(no files)";
}

function jumpMatch(dir) {
  const list = matches();
  if (!list.length) return;
  const s = state.step;
  const target = dir > 0 ? list.find((x) => x > s) : [...list].reverse().find((x) => x < s);
  if (target !== undefined) show(target);
}

el("first-step").onclick = () => show(0);
el("prev-step").onclick = () => show(state.step - 1);
el("next-step").onclick = () => show(state.step + 1);
el("last-step").onclick = () => show(state.meta.num_steps - 1);
el("step-num").onchange = (e) => show(e.target.value);
el("filter").onchange = (e) => { state.filter = e.target.value; renderMatches(); };
el("next-match").onclick = () => jumpMatch(1);
el("prev-match").onclick = () => jumpMatch(-1);
el("memory-files").onchange = (e) => {
  el("memory-content").textContent = state.memory[e.target.value] || "(empty)";
};
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || !state.meta) return;
  if (e.key === "ArrowRight") show(state.step + 1);
  if (e.key === "ArrowLeft") show(state.step - 1);
});
init().catch((err) => { el("status").textContent = "error: " + err.message; document.body.dataset.ready = "error"; });
