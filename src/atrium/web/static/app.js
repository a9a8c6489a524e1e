// The playground's screens. Everything the server sends is shown as text (textContent), never as markup.
import * as api from "./api.js";
import { barChart, usageDays } from "./chart.js";

const $ = (selector) => document.querySelector(selector);
const $$ = (selector) => [...document.querySelectorAll(selector)];

function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") element.className = value;
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key.startsWith("data-")) element.setAttribute(key, value);
    else element[key] = value;
  }
  element.append(...children.filter((child) => child !== null && child !== undefined));
  return element;
}

// replaceChildren, leaving out the parts a screen does not have (null)
const put = (node, ...children) => node.replaceChildren(...children.filter((child) => child !== null && child !== undefined));
const collection = () => $("#collection").value || null;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function showError(error, where = "#error") {
  $(where).textContent = error ? (error.code ? `${error.message} (${error.code})` : String(error.message ?? error)) : "";
  if (error?.status === 401 && where === "#error") { api.signOut(); showSignIn("Your session ended: sign in again."); }
}

// Run a form's action with its submit button disabled and errors shown.
function onSubmit(form, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("[type=submit]");
    button.disabled = true;
    showError(null);
    try { await action(new FormData(form)); } catch (error) { showError(error); } finally { button.disabled = false; }
  });
}

function selectTab(group, name) {
  for (const tab of $$(`[data-${group}]`)) tab.setAttribute("aria-selected", String(tab.dataset[group] === name));
  for (const panel of $$(`[data-${group}-panel]`)) panel.hidden = panel.dataset[`${group}Panel`] !== name;
}

// --- Signing in ------------------------------------------------------------------------------------------
function showSignIn(message = "") {
  $("#workspace").hidden = true;
  $("#whoami").hidden = true;
  $("#sign-in").hidden = false;
  $("#sign-in-error").textContent = message;
}

async function showWorkspace() {
  await refreshCollections(); // also checks the credential: a wrong key is refused here
  $("#sign-in").hidden = true;
  $("#workspace").hidden = false;
  $("#whoami").hidden = false;
  $("#whoami-text").textContent = `Signed in as ${api.identity()}`;
  await Promise.all([refreshDocuments(), loadFlows()]).catch(showError);
}

async function signIn(start) {
  $("#sign-in-error").textContent = "";
  try {
    await start();
    await showWorkspace();
  } catch (error) {
    await api.signOut();
    showSignIn(error.status === 401 ? "Those credentials were refused." : error.message);
  }
}

// --- Chat ------------------------------------------------------------------------------------------------
let conversationId = null;

// The answer's text with each citation marker [n] linked to its source below.
function citedText(text, sources, turn) {
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(/\[(\d+)\]/g)) {
    parts.push(text.slice(last, match.index));
    const source = sources.find((s) => s.number === Number(match[1]));
    parts.push(source ? el("a", { href: `#source-${turn}-${source.number}`, class: "citation",
                                  title: source.source }, match[0]) : match[0]);
    last = match.index + match[0].length;
  }
  parts.push(text.slice(last));
  return parts;
}

function sourceList(sources, turn) {
  return el("ol", { class: "sources" }, ...sources.map((s) => el("li", {
    id: `source-${turn}-${s.number}`, class: s.cited ? "source cited" : "source", "data-source": s.source,
    value: s.number,
  }, el("strong", {}, s.title || s.source), " ", el("span", { class: "muted" }, s.source),
  s.page ? el("span", { class: "muted" }, ` p. ${s.page}`) : null, s.cited ? el("span", { class: "badge" }, "cited") : null,
  el("div", { class: "snippet" }, ...highlighted(s.snippet ?? "", s.highlights ?? [])))));
}

function highlighted(text, ranges) {
  const parts = [];
  let last = 0;
  for (const [start, end] of ranges) {
    parts.push(text.slice(last, start), el("mark", {}, text.slice(start, end)));
    last = end;
  }
  parts.push(text.slice(last));
  return parts;
}

let turns = 0;
async function ask(form) {
  const message = form.get("message").trim();
  const turn = ++turns;
  const answer = el("div", { class: "answer", "data-status": "streaming" });
  const footer = el("div", { class: "muted" });
  const reply = el("div", { class: "turn assistant" }, answer, footer);
  $("#chat-log").append(el("div", { class: "turn user" }, message), reply);
  $("#chat-form").reset();
  let text = "";
  let sources = [];
  try {
    for await (const { event, data } of api.events("/api/v1/chat/ask", {
      message, conversation_id: conversationId, collection: collection(), stream: true })) {
      if (event === "meta") conversationId = data.conversation_id;
      else if (event === "token") { text += data.text; answer.textContent = text; }
      else if (event === "discard") { text = ""; answer.textContent = ""; }
      else if (event === "sources") sources = data.sources;
      else if (event === "done") {
        answer.replaceChildren(...citedText(data.answer, sources, turn));
        if (sources.length) reply.append(sourceList(sources, turn));
        footer.textContent = [data.model, data.usage && `${data.usage.total_tokens} tokens`].filter(Boolean).join(" · ");
        answer.dataset.status = "done";
      } else if (event === "error") {
        throw new api.ApiError(0, data.code, data.message);
      }
    }
  } catch (error) {
    answer.dataset.status = "error";
    footer.textContent = `${error.message} (${error.code})`;
    if (error.status === 401) showError(error);
  }
}

// --- Documents and jobs ----------------------------------------------------------------------------------
async function refreshCollections() {
  const { collections } = await api.call("GET", "/api/v1/collections");
  const chosen = $("#collection").value;
  $("#collection").replaceChildren(el("option", { value: "" }, "all readable collections"),
    ...collections.map((c) => el("option", { value: c.name }, c.name)));
  $("#collection").value = collections.some((c) => c.name === chosen) ? chosen : "";
}

async function refreshDocuments() {
  const { documents } = await api.call("GET", "/api/v1/documents?limit=100");
  $("#documents tbody").replaceChildren(...documents.map((d) => el("tr", {},
    el("td", {}, d.source), el("td", {}, d.collection), el("td", {}, String(d.chunks)))));
}

async function upload(form) {
  const body = new FormData();
  for (const file of form.getAll("files")) body.append("files", file);
  const into = form.get("collection").trim();
  if (into) body.append("collection", into);
  const accepted = await api.call("POST", "/api/v1/documents", body);
  $("#job").hidden = false;
  const status = $("#job-status");
  status.dataset.status = "queued";
  for (;;) {
    const job = await api.call("GET", `/api/v1/jobs/${accepted.job_id}`);
    $("#job-progress").value = job.progress;
    status.dataset.status = job.status;
    status.textContent = `${accepted.files.join(", ")}: ${job.status}` +
      (job.status === "running" ? ` ${Math.round(job.progress * 100)}%` : "") + (job.error ? ` — ${job.error}` : "");
    if (["succeeded", "failed", "cancelled"].includes(job.status)) break;
    await sleep(500);
  }
  $("#upload-form").reset();
  await refreshCollections();
  if (into) $("#collection").value = into;
  await refreshDocuments();
}

// --- Search ----------------------------------------------------------------------------------------------
async function search(form) {
  const answer = await api.call("POST", "/api/v1/search/semantic", {
    query: form.get("query"), mode: form.get("mode"), limit: 10, collection: collection() });
  $("#search-results").replaceChildren(...answer.results.map((hit) => el("li", { "data-source": hit.source },
    el("strong", {}, hit.heading || hit.title || hit.source), " ", el("span", { class: "muted" }, hit.source),
    el("div", { class: "snippet" }, ...highlighted(hit.snippet, hit.highlights)))));
  if (!answer.results.length) $("#search-results").append(el("li", { class: "muted" }, "No match."));
}

// --- Guided flows ----------------------------------------------------------------------------------------
async function loadFlows() {
  const { flows } = await api.call("GET", "/api/v1/flows");
  $("#flow-names").replaceChildren(...flows.map((f) => el("option", { value: f.name, title: f.description }, f.title)));
}

function renderFlow(state) {
  const box = $("#flow-state");
  const answer = async (value) => {
    try { renderFlow(await api.call("POST", `/api/v1/flows/${state.id}/answer`, { answer: value })); }
    catch (error) { showError(error); }
  };
  if (state.status !== "waiting") {
    put(box, el("p", { "data-status": state.status }, `Flow ${state.status}.`),
      state.result ? el("pre", {}, JSON.stringify(state.result, null, 2)) : null,
      state.error ? el("p", { class: "error" }, state.error.message) : null);
    return;
  }
  const prompt = state.prompt;
  const controls = [];
  if (prompt.kind === "choice") {
    controls.push(...prompt.choices.map((c) => el("button", { type: "button", onclick: () => answer(c.value) }, c.label)));
  } else if (prompt.kind === "boolean" || prompt.kind === "confirm") {
    controls.push(el("button", { type: "button", onclick: () => answer(true) }, "Yes"),
                  el("button", { type: "button", onclick: () => answer(false) }, "No"));
  } else if (prompt.kind === "multi_choice") {
    const boxes = prompt.choices.map((c) => el("input", { type: "checkbox", value: c.value }));
    controls.push(...prompt.choices.map((c, i) => el("label", {}, boxes[i], c.label)),
      el("button", { type: "button", onclick: () => answer(boxes.filter((b) => b.checked).map((b) => b.value)) }, "Next"));
  } else {
    const input = el("input", { type: prompt.kind === "password" ? "password" : prompt.kind === "email" ? "email" : "text",
                                name: "answer" });
    const form = el("form", { class: "inline" }, input, el("button", { type: "submit" }, "Next"));
    form.addEventListener("submit", (event) => { event.preventDefault(); answer(input.value); });
    controls.push(form, ...prompt.suggestions.map((s) => el("button", { type: "button", class: "suggestion",
                                                                         onclick: () => answer(s) }, s)));
  }
  put(box,
    el("p", { class: "muted" }, `Step ${prompt.index} of ${prompt.total}`),
    el("p", { class: "question", "data-step": prompt.step }, prompt.question),
    prompt.summary ? el("pre", {}, prompt.summary) : null,
    prompt.error ? el("p", { class: "error" }, prompt.error) : null,
    el("div", { class: "controls" }, ...controls,
      el("button", { type: "button", class: "secondary", onclick: async () =>
        renderFlow(await api.call("POST", `/api/v1/flows/${state.id}/cancel`).catch(showError)) }, "Cancel")));
}

// --- Artifacts -------------------------------------------------------------------------------------------
async function refreshArtifacts() {
  const { artifacts } = await api.call("GET", "/api/v1/artifacts?limit=50");
  $("#artifacts").replaceChildren(...artifacts.map((a) => el("li", {},
    el("button", { type: "button", class: "link", onclick: () => showArtifact(a.id).catch(showError) }, a.title),
    el("span", { class: "muted" }, ` ${a.kind} · v${a.version}`))));
}

async function showArtifact(id) {
  const artifact = await api.call("GET", `/api/v1/artifacts/${id}`);
  const content = artifact.content;
  $("#artifact-content").textContent = content.text ?? content.code ?? JSON.stringify(content, null, 2);
}

async function generateArtifact(form) {
  const artifact = await api.call("POST", "/api/v1/artifacts/generate", {
    prompt: form.get("prompt"), kind: form.get("kind") || null, collection: collection() });
  await refreshArtifacts();
  await showArtifact(artifact.id);
}

// --- Usage -----------------------------------------------------------------------------------------------
async function showUsage() {
  const box = $("#usage");
  put(box, el("p", { class: "muted" }, "Loading…"));
  let body = null;
  try {
    body = await api.call("GET", "/api/v1/analytics/user?group_by=day");
  } catch (error) {
    if (error.status === 401) throw error; // anything else (404: no analytics here) is "unavailable"
  }
  const days = body && usageDays(body);
  const totals = body?.totals;
  if (!days) put(box, el("p", { "data-status": "unavailable" }, "Usage analytics unavailable on this server."));
  else if (!days.length) put(box, el("p", {}, "No usage yet."));
  else {
    put(box, el("h3", {}, `Your usage by day (${days[0].unit.replace("_", " ")})`), barChart(days),
      totals ? el("p", { class: "muted" }, `${body.start} to ${body.end}: ${totals.requests} calls, ` +
        `${totals.total_tokens} tokens, $${Number(totals.cost_usd ?? 0).toFixed(4)}`) : null);
  }
}

// --- Wiring ----------------------------------------------------------------------------------------------
const OPEN = { artifacts: refreshArtifacts, usage: showUsage, documents: refreshDocuments };

function start() {
  for (const tab of $$("[data-signin]")) tab.addEventListener("click", () => selectTab("signin", tab.dataset.signin));
  for (const tab of $$("[data-view]")) {
    tab.addEventListener("click", () => {
      selectTab("view", tab.dataset.view);
      OPEN[tab.dataset.view]?.().catch(showError);
    });
  }
  $("#password-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    signIn(() => api.login(form.get("email"), form.get("password")));
    event.target.password.value = "";
  });
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = new FormData(event.target).get("key");
    signIn(async () => api.useKey(key));
    event.target.reset();
  });
  $("#sign-out").addEventListener("click", async () => { await api.signOut(); showSignIn(); });
  $("#chat-new").addEventListener("click", () => { conversationId = null; $("#chat-log").replaceChildren(); });
  onSubmit($("#chat-form"), ask);
  $("#chat-form textarea").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("#chat-form").requestSubmit(); }
  });
  onSubmit($("#upload-form"), upload);
  onSubmit($("#search-form"), search);
  onSubmit($("#flow-start"), async (form) => renderFlow(await api.call("POST", `/api/v1/flows/${form.get("flow")}`)));
  onSubmit($("#artifact-form"), generateArtifact);
  if (api.signedIn()) showWorkspace().catch(() => showSignIn("Your session ended: sign in again."));
  else showSignIn();
}

start();
