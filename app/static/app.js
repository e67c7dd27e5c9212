"use strict";
// The page: four tabs over the JSON API of app/server.py. Data is put into the page as text
// (never as HTML): crawled titles and URLs are not ours. The active tab refreshes itself.

const $ = (id) => document.getElementById(id);
const REFRESH_MS = { crawl: 2000, training: 1000, models: 3000, llm: 0 };
let current = null;
let timer = null;

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    throw new Error(data.error || `${response.status} ${response.statusText}`);
  }
  return response;
}

const getJSON = async (path) => (await api(path)).json();
const postJSON = async (path, body) => (await api(path, body)).json();

function show(id, text, isError = false) {
  $(id).textContent = text;
  $(id).classList.toggle("error", isError);
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined || value === "") return "-";
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? value.toLocaleString("en") : value.toFixed(digits);
}

function counts(obj) {
  const entries = Object.entries(obj || {});
  return entries.length ? entries.map(([k, v]) => `${k} ${v}`).join(", ") : "none";
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.round(seconds);
  return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`
    : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

function fillTable(id, rows, makeRow) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    for (const item of makeRow(row, tr)) {
      const td = document.createElement("td");
      if (item instanceof Node) td.append(item);
      else {
        td.textContent = fmt(item);
        if (typeof item === "number") td.className = "num";
      }
      tr.append(td);
    }
    return tr;
  }));
}

// `outcome`: the job's last line says what it did (a crawl's is the end of its JSON report)
function jobLine(id, job, what, outcome = false) {
  if (!job) return show(id, "");
  if (job.running) return show(id, `${job.stopping ? "stopping" : "running"}: ${job.command} (pid ${job.pid})`);
  const ok = job.returncode === 0;
  const stopped = job.returncode === 130;
  show(id, ok ? `${what} finished: ${job.command}${outcome ? ` (${job.message})` : ""}`
    : stopped ? `${what} stopped: ${job.command}`
      : `${what} failed (exit ${job.returncode}): ${job.message}`, !ok && !stopped);
}

// --- crawl ---------------------------------------------------------------------------------

async function refreshCrawl() {
  const data = await getJSON("/api/crawl");
  const t = data.totals;
  show("crawl-totals", `${fmt(t.shards)} shards, ${fmt(t.documents)} documents, ` +
    `${fmt(t.bytes)} bytes; waiting to be trained on: ${fmt(t.new_shards)} shards ` +
    `(${fmt(t.new_documents)} documents)`);
  jobLine("crawl-job", data.job, "crawl");
  fillTable("crawl-table", data.crawls, (c) => [c.crawl_id + (c.resumed ? " (resumed)" : ""),
    c.finish_reason, c.seconds, c.pages_fetched, c.unchanged, c.docs_written, c.bytes_written,
    counts(c.languages), counts(c.pii), `${c.duplicates_exact}, ${c.duplicates_near}`,
    counts(c.dropped), counts(c.errors), dropsButton(c.crawl_id)]);
  show("crawl-unfinished", data.unfinished.length ? "Unfinished: " + data.unfinished.map(
    (u) => `${u.crawl_id} (${u.status}; run the same crawl again to resume)`).join(", ") : "");
  show("crawl-fleet", data.fleets.map((f) => f.error ? `fleet ${f.crawl_id}: ${f.error}` :
    `fleet ${f.crawl_id}: ${fmt(f.frontier)} requests queued; ` + f.processes.map((p) =>
      `${p.process} (${p.live ? p.state : "gone"}): ${fmt(p.pages)} pages, ${fmt(p.docs)} ` +
      `documents, ${fmt(p.in_flight)} in flight`).join("; ")).join(" | "));
  fillTable("shard-table", data.shards, (s, tr) => {
    tr.classList.toggle("new", s.state === "new");
    return [s.path, s.crawl_id, s.rows, s.bytes, s.state, s.consumed_by || "-"];
  });
}

function dropsButton(crawlId) {
  const button = document.createElement("button");
  button.textContent = "examples";
  button.addEventListener("click", () => showDrops(crawlId));
  return button;
}

// A few dropped documents of each reason: URL, what failed, the start of the text if kept.
async function showDrops(crawlId) {
  const box = $("crawl-drops");
  try {
    const data = await getJSON(`/api/crawl/${encodeURIComponent(crawlId)}/dropped`);
    const title = document.createElement("h2");
    title.textContent = `Dropped documents of crawl ${data.crawl_id}`;
    box.replaceChildren(title, ...data.reasons.map((r) => {
      const part = document.createElement("div");
      const head = document.createElement("h3");
      head.textContent = `${r.reason} (${fmt(r.count)})`;
      part.append(head, ...r.examples.map((e) => {
        const example = document.createElement("div");
        example.className = "drop";
        const line = document.createElement("p");
        line.textContent = e.detail ? `${e.url} (${e.detail})` : e.url;
        example.append(line);
        if (e.excerpt) {
          const quote = document.createElement("blockquote");
          quote.textContent = e.excerpt;
          example.append(quote);
        }
        return example;
      }));
      return part;
    }));
  } catch (e) { show("crawl-drops", e.message, true); }
}

$("crawl-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const seeds = $("crawl-seeds").value.split(/\s+/).filter(Boolean);
  const body = { seeds };
  for (const [key, id] of [["max_pages", "crawl-max-pages"], ["max_depth", "crawl-max-depth"]]) {
    if ($(id).value !== "") body[key] = Number($(id).value);
  }
  try {
    jobLine("crawl-job", await postJSON("/api/crawl", body), "crawl");
  } catch (e) { show("crawl-job", e.message, true); }
});

$("crawl-stop").addEventListener("click", async () => {
  try { jobLine("crawl-job", await postJSON("/api/crawl/stop", {}), "crawl"); }
  catch (e) { show("crawl-job", e.message, true); }
});

// --- training ------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
const CHART = { width: 800, height: 300, left: 50, right: 10, top: 10, bottom: 30 };

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart(run) {
  const train = run ? run.train : [];
  const val = run ? run.evals.filter((e) => e[2] !== null).map((e) => [e[0], e[2]]) : [];
  const all = train.concat(val);
  const axes = $("chart-axes");
  axes.replaceChildren();
  for (const id of ["train-line", "val-line"]) $(id).setAttribute("points", "");
  $("val-dots").replaceChildren();
  $("loss-chart").dataset.trainPoints = train.length;
  $("loss-chart").dataset.valPoints = val.length;
  if (!all.length) return;
  const steps = all.map((p) => p[0]);
  const losses = all.map((p) => p[1]);
  const x0 = Math.min(...steps), x1 = Math.max(x0 + 1, run.steps || 0, ...steps);
  const y0 = Math.min(...losses), y1 = Math.max(y0 + 1e-6, ...losses);
  const c = CHART;
  const x = (s) => c.left + (s - x0) / (x1 - x0) * (c.width - c.left - c.right);
  const y = (l) => c.top + (y1 - l) / (y1 - y0) * (c.height - c.top - c.bottom);
  const line = (points) => points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
  for (const [value, label] of [[y0, fmt(y0, 3)], [(y0 + y1) / 2, fmt((y0 + y1) / 2, 3)], [y1, fmt(y1, 3)]]) {
    axes.append(svg("line", { x1: c.left, x2: c.width - c.right, y1: y(value), y2: y(value) }));
    axes.append(svg("text", { x: 4, y: y(value) + 4 }, label));
  }
  axes.append(svg("text", { x: c.left, y: c.height - 8 }, `step ${x0}`));
  axes.append(svg("text", { x: c.width - c.right - 80, y: c.height - 8 }, `step ${x1}`));
  $("train-line").setAttribute("points", line(train));
  $("val-line").setAttribute("points", line(val));
  $("val-dots").replaceChildren(...val.map((p) => svg("circle", { cx: x(p[0]), cy: y(p[1]), r: 3 })));
}

async function refreshTraining() {
  const data = await getJSON("/api/training");
  const run = data.run;
  jobLine("training-job", data.job, "training", true);
  if (!run) {
    show("training-summary", "No training yet: crawl some pages, then start one.");
  } else {
    const last = run.train.length ? run.train[run.train.length - 1][1] : null;
    const evals = run.evals.length ? run.evals[run.evals.length - 1] : null;
    const parts = [`${run.name}: ${run.status}${run.message ? ` (${run.message})` : ""}`,
      `step ${fmt(run.step)}${run.steps ? ` of ${fmt(run.steps)}` : ""}`,
      `loss ${fmt(last)}`];
    if (evals) parts.push(`validation loss ${fmt(evals[2])} at step ${evals[0]}`);
    if (run.tokens_per_s !== null) parts.push(`${fmt(run.tokens_per_s)} tokens/s`);
    if (run.status === "running") parts.push(`ETA ${duration(run.eta_s)}`);
    show("training-summary", parts.join(" · "));
  }
  drawChart(run);
  const workers = !run || run.source !== "progress" ? []
    : run.worker_states.length ? run.worker_states
      : [{ rank: 0, compute: null, wait: null, reduce: null, solo: true }];
  fillTable("worker-table", workers, (w) => w.solo
    ? [`rank 0 (one worker, in-process): ${run.status}`, "-", "-", "-"]
    : [`rank ${w.rank}: ${run.status}`, `${w.compute}%`, `${w.wait}%`, `${w.reduce}%`]);
}

$("training-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = { kind: $("training-kind").value };
  if ($("training-steps").value !== "") body.steps = Number($("training-steps").value);
  try { jobLine("training-job", await postJSON("/api/training", body), "training", true); }
  catch (e) { show("training-job", e.message, true); }
});

$("training-stop").addEventListener("click", async () => {
  try { jobLine("training-job", await postJSON("/api/training/stop", {}), "training", true); }
  catch (e) { show("training-job", e.message, true); }
});

// --- models --------------------------------------------------------------------------------

async function refreshModels() {
  const data = await getJSON("/api/models");
  show("models-summary", data.versions.length
    ? `${data.name}: ${data.versions.length} versions; champion ${data.champion ? data.name + "/" + data.champion : "none"}`
    : `No versions of ${data.name} yet.`);
  fillTable("model-table", data.versions, (v) => {
    const button = document.createElement("button");
    button.textContent = "Promote";
    button.dataset.version = v.version;
    button.disabled = v.version === data.champion;
    button.addEventListener("click", () => modelAction("/api/models/promote", { version: v.version }));
    const shards = document.createElement("span");
    shards.textContent = v.shards.length;
    shards.title = v.shards.join("\n");
    const lineage = document.createElement("button");
    lineage.textContent = "Lineage";
    lineage.dataset.lineage = v.version;
    lineage.addEventListener("click", () => showLineage(v.version));
    return [v.ref, v.aliases.join(", ") || "-", v.parent || "-", shards, v.val_loss_new,
      v.val_loss_old, v.tokens_seen, v.gate || "-", button, lineage];
  });
  refreshModelChoices(data);
  const history = await getJSON("/api/models/history");
  fillTable("alias-history", history.moves.slice().reverse(), (m) => [
    new Date(m.when * 1000).toISOString().slice(0, 19).replace("T", " "), m.alias,
    m.from || "-", m.to, m.reason, m.who]);
}

async function showLineage(version) {
  try { show("model-lineage", (await getJSON(`/api/models/${version}/lineage`)).text); }
  catch (e) { show("model-lineage", e.message, true); }
}

async function modelAction(path, body) {
  try {
    const result = await postJSON(path, body);
    show("models-status", `champion is now version ${result.champion}`);
  } catch (e) { show("models-status", e.message, true); }
  refreshModels();
}

$("rollback").addEventListener("click", () => modelAction("/api/models/rollback", {}));

// --- LLM -----------------------------------------------------------------------------------

function refreshModelChoices(data) {
  const select = $("llm-model");
  const aliases = [...new Set(data.versions.flatMap((v) => v.aliases))];
  const choices = aliases.map((a) => [`@${a}`, `@${a}`]).concat([["latest", "latest"]],
    data.versions.map((v) => [v.version, `version ${v.version}`]));
  const key = JSON.stringify(choices);
  if (select.dataset.choices === key) return;
  const chosen = select.value;
  select.replaceChildren(...choices.map(([value, label]) => {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = label;
    return option;
  }));
  select.dataset.choices = key;
  if (choices.some((c) => c[0] === chosen)) select.value = chosen;
}

let chat = [];
let generation = null;

function chatLine(role, text) {
  const div = document.createElement("div");
  div.className = role;
  div.textContent = `${role === "user" ? "You" : "Model"}: ${text}`;
  $("llm-chat").append(div);
  return div;
}

$("llm-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (generation) return;
  const mode = $("llm-mode").value;
  const prompt = $("llm-prompt").value;
  const body = { model: $("llm-model").value, mode, temperature: Number($("llm-temperature").value),
    max_tokens: Number($("llm-max-tokens").value) };
  for (const [key, id] of [["top_k", "llm-top-k"], ["top_p", "llm-top-p"], ["seed", "llm-seed"]]) {
    if ($(id).value !== "") body[key] = Number($(id).value);
  }
  let target, text = "";
  if (mode === "chat") {
    chat.push({ role: "user", content: prompt });
    body.messages = chat;
    chatLine("user", prompt);
    target = chatLine("assistant", "");
    $("llm-prompt").value = "";
  } else {
    body.prompt = prompt;
    target = $("llm-output");
    target.textContent = prompt;
  }
  generation = new AbortController();
  show("llm-status", "generating…");
  $("llm-go").disabled = true;
  try {
    const response = await fetch("/api/generate", { method: "POST", signal: generation.signal,
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      throw new Error(data.error || `${response.status} ${response.statusText}`);
    }
    const version = response.headers.get("X-Model-Version");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      target.textContent = mode === "chat" ? `Model: ${text}` : prompt + text;
    }
    show("llm-status", `done: ${version}`);
  } catch (e) {
    show("llm-status", e.name === "AbortError" ? "stopped" : e.message, e.name !== "AbortError");
  } finally {
    if (mode === "chat") chat.push({ role: "assistant", content: text });
    generation = null;
    $("llm-go").disabled = false;
  }
});

$("llm-stop").addEventListener("click", () => generation && generation.abort());
$("llm-clear").addEventListener("click", () => {
  chat = [];
  $("llm-chat").replaceChildren();
  $("llm-output").textContent = "";
});

// --- tabs ----------------------------------------------------------------------------------

const REFRESH = { crawl: refreshCrawl, training: refreshTraining, models: refreshModels,
  llm: async () => refreshModelChoices(await getJSON("/api/models")) };

async function refresh() {
  clearTimeout(timer);
  const tab = current;
  try {
    await REFRESH[tab]();
  } catch (e) {
    console.error(e);
  }
  if (tab === current && REFRESH_MS[tab]) timer = setTimeout(refresh, REFRESH_MS[tab]);
}

function select(tab) {
  current = REFRESH[tab] ? tab : "crawl";
  for (const button of document.querySelectorAll("nav button")) {
    button.setAttribute("aria-selected", button.dataset.tab === current);
  }
  for (const section of document.querySelectorAll("main section")) {
    section.hidden = section.id !== current;
  }
  history.replaceState(null, "", `#${current}`);
  refresh();
}

for (const button of document.querySelectorAll("nav button")) {
  button.addEventListener("click", () => select(button.dataset.tab));
}
select(location.hash.slice(1));
