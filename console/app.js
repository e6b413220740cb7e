// The stigg-byos console: one script for every page (the page says which it is in
// <body data-page>). Written for this service, no libraries, no other host: every request
// goes to this origin, carrying the bearer token the page asked for (kept in sessionStorage
// for this tab) once an answer was 401.
"use strict";

const TOKEN_KEY = "stigg-byos-token";

function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch (e) {
    return "";
  }
}

function setToken(value) {
  try {
    sessionStorage.setItem(TOKEN_KEY, value);
  } catch (e) {
    // storage refused (private mode): the token lives as long as the page
  }
  memoryToken = value;
}

let memoryToken = "";

class Unauthorized extends Error {}

// fetch against this origin with the token; a 401 asks for the token (once) and rejects.
async function api(path, options) {
  const opts = Object.assign({}, options || {});
  const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
  const t = token() || memoryToken;
  if (t) headers.Authorization = "Bearer " + t;
  opts.headers = headers;
  opts.credentials = "same-origin";
  const response = await fetch(path, opts);
  if (response.status === 401) {
    askToken(t !== "");
    throw new Unauthorized("a bearer token is needed");
  }
  return response;
}

let retry = function () {};

function askToken(wasWrong) {
  const box = document.getElementById("token-box");
  if (!box || box.childElementCount > 0) return;
  const form = el("form", { className: "token" });
  form.append(
    el("p", {
      textContent: wasWrong
        ? "That token was refused. Enter one of API_TOKENS:"
        : "This service needs a bearer token (one of API_TOKENS). It is kept in this tab only.",
    }),
  );
  const input = el("input", { type: "password", name: "token", autocomplete: "off", required: true });
  input.setAttribute("aria-label", "Bearer token");
  form.append(input, el("button", { type: "submit", textContent: "Use this token" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    box.replaceChildren();
    retry();
  });
  box.append(form);
  input.focus();
}

function el(tag, props, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else node[k] = v;
  }
  for (const child of children || []) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function text(id, value) {
  const node = document.getElementById(id);
  if (node) node.textContent = value;
}

function number(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Number(seconds);
  if (s < 1) return Math.round(s * 1000) + " ms";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function showError(id, error) {
  if (error instanceof Unauthorized) {
    text(id, "Waiting for a token.");
  } else {
    text(id, "Failed: " + error.message);
  }
}

function params() {
  return new URLSearchParams(window.location.search);
}

// ---- status -------------------------------------------------------------------------------

const STATUS_EVERY_MS = 5000;

async function loadStatus() {
  let s;
  try {
    const r = await api("/api/status");
    s = await r.json();
    if (!r.ok) throw new Error(s.error || "HTTP " + r.status);
  } catch (e) {
    showError("refreshed", e);
    return;
  }
  text("customers", number(s.customers));
  text("subscriptions", number(s.subscriptions));
  text("entitlement-sets", number(s.entitlement_sets));
  text("dead-letters", number(s.dead_letters));
  document.getElementById("dead-letters").classList.toggle("warn", s.dead_letters > 0);
  text("newest-event", s.newest_event || "none applied by this process");
  text("newest-age", duration(s.newest_event_age_seconds));
  text("apply-lag", duration(s.last_apply_lag_seconds));
  text(
    "queue",
    s.queue
      ? number(s.queue.visible) + " visible, " + number(s.queue.in_flight) + " in flight, " +
          number(s.queue.delayed) + " delayed"
      : "unknown (read by the worker every 15 s)",
  );
  const rows = Object.entries(s.messages || {}).map(([outcome, n]) =>
    el("tr", {}, [el("th", { textContent: outcome }), el("td", { textContent: number(n) })]),
  );
  document.querySelector("#messages tbody").replaceChildren(...rows);
  const sync = document.getElementById("last-sync");
  if (s.last_sync) {
    const l = s.last_sync;
    const items = [
      ["Started", l.started_at],
      ["Finished", l.finished_at || "running (or interrupted)"],
      ["Result", l.complete ? "complete" : l.error ? "stopped: " + l.error : "phase " + l.phase],
    ];
    for (const [kind, c] of Object.entries(l.counts || {})) {
      items.push([kind, typeof c === "object" ? summarize(c) : String(c)]);
    }
    sync.replaceChildren(...items.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: v })]));
  }
  text("version", "v" + s.version);
  text("version-value", s.version);
  text("uptime", duration(s.uptime_seconds));
  text("consumer", s.consumer ? "yes (or none in this process)" : "no");
  text("access-cache", s.access_cache ? "yes" : "no (every decision reads the database)");
  text("refreshed", "Updated " + new Date().toLocaleTimeString() + "; refreshes every " + STATUS_EVERY_MS / 1000 + " s.");
}

function summarize(counts) {
  return Object.entries(counts)
    .map(([k, v]) => number(v) + " " + k.replace(/_/g, " "))
    .join(", ");
}

function statusPage() {
  retry = loadStatus;
  const tick = async () => {
    await loadStatus();
    window.setTimeout(tick, STATUS_EVERY_MS);
  };
  tick();
}

// ---- GraphQL explorer ---------------------------------------------------------------------

const TYPE_REF = "kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } }";

const INTROSPECTION = `query ConsoleIntrospection {
  __schema {
    queryType { name }
    types {
      kind name description
      fields(includeDeprecated: true) {
        name description isDeprecated
        args { name description defaultValue type { ${TYPE_REF} } }
        type { ${TYPE_REF} }
      }
      inputFields { name description defaultValue type { ${TYPE_REF} } }
      enumValues(includeDeprecated: true) { name description }
    }
  }
}`;

function typeLabel(t) {
  if (!t) return "";
  if (t.kind === "NON_NULL") return typeLabel(t.ofType) + "!";
  if (t.kind === "LIST") return "[" + typeLabel(t.ofType) + "]";
  return t.name;
}

function namedType(t) {
  while (t && t.ofType) t = t.ofType;
  return t ? t.name : "";
}

function typeLink(t) {
  const label = typeLabel(t);
  const name = namedType(t);
  const a = el("a", { href: "#type-" + name, className: "type", textContent: label });
  a.addEventListener("click", () => {
    const target = document.getElementById("type-" + name);
    if (target) target.open = true;
  });
  return a;
}

function describe(node, description) {
  if (description) node.append(el("p", { className: "description", textContent: description }));
}

function renderSchema(schema) {
  const root = schema.queryType ? schema.queryType.name : "Query";
  const types = schema.types
    .filter((t) => !t.name.startsWith("__"))
    .sort((a, b) => (a.name === root ? -1 : b.name === root ? 1 : a.name.localeCompare(b.name)));
  const list = types.map((t) => {
    const details = el("details", { id: "type-" + t.name, className: "type-entry" });
    details.dataset.search = t.name.toLowerCase();
    details.open = t.name === root;
    details.append(
      el("summary", {}, [el("strong", { textContent: t.name }), " ", el("span", { className: "kind", textContent: t.kind.toLowerCase() })]),
    );
    describe(details, t.description);
    const fields = t.fields || t.inputFields || [];
    if (fields.length > 0) {
      const ul = el("ul", { className: "fields" });
      for (const f of fields) {
        details.dataset.search += " " + f.name.toLowerCase();
        const li = el("li", {}, [el("code", { className: "field", textContent: f.name })]);
        if (f.args && f.args.length > 0) {
          li.append("(");
          f.args.forEach((a, i) => {
            if (i > 0) li.append(", ");
            li.append(el("span", { className: "arg", textContent: a.name }), ": ", typeLink(a.type));
            if (a.defaultValue !== null && a.defaultValue !== undefined) li.append(" = " + a.defaultValue);
          });
          li.append(")");
        }
        li.append(": ", typeLink(f.type));
        if (f.defaultValue !== null && f.defaultValue !== undefined) li.append(" = " + f.defaultValue);
        describe(li, f.description);
        const argDocs = (f.args || []).filter((a) => a.description);
        if (argDocs.length > 0) {
          li.append(el("ul", { className: "args" }, argDocs.map((a) => el("li", {}, [el("span", { className: "arg", textContent: a.name }), ": " + a.description]))));
        }
        ul.append(li);
      }
      details.append(ul);
    }
    if (t.enumValues && t.enumValues.length > 0) {
      details.append(
        el("ul", { className: "fields" }, t.enumValues.map((v) => {
          details.dataset.search += " " + v.name.toLowerCase();
          const li = el("li", {}, [el("code", { textContent: v.name })]);
          describe(li, v.description);
          return li;
        })),
      );
    }
    return details;
  });
  document.getElementById("schema").replaceChildren(...list);
}

async function loadSchema() {
  try {
    const r = await api("/graphql", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query: INTROSPECTION }),
    });
    const answer = await r.json();
    if (!answer.data) throw new Error(JSON.stringify(answer.errors || answer));
    renderSchema(answer.data.__schema);
  } catch (e) {
    showError("schema", e);
  }
}

async function runQuery() {
  const query = document.getElementById("query").value;
  const rawVariables = document.getElementById("variables").value.trim();
  const result = document.getElementById("result");
  let variables;
  try {
    variables = rawVariables ? JSON.parse(rawVariables) : undefined;
  } catch (e) {
    result.textContent = "The variables are not JSON: " + e.message;
    result.className = "json error";
    return;
  }
  const url = new URL(window.location.href);
  url.search = "";
  url.searchParams.set("query", query);
  if (rawVariables) url.searchParams.set("variables", rawVariables);
  window.history.replaceState(null, "", url.pathname + url.search);
  result.textContent = "Running…";
  result.className = "json";
  const started = performance.now();
  try {
    const r = await api("/graphql", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query, variables }),
    });
    const body = await r.text();
    let shown = body;
    try {
      shown = JSON.stringify(JSON.parse(body), null, 2);
    } catch (e) {
      // not JSON: shown as it came
    }
    result.textContent = shown;
    result.className = r.ok && !/"errors"/.test(body) ? "json" : "json error";
    text("timing", "HTTP " + r.status + " in " + Math.round(performance.now() - started) + " ms");
  } catch (e) {
    result.className = "json error";
    result.textContent = e instanceof Unauthorized ? "Waiting for a token." : "Failed: " + e.message;
  }
}

function explorerPage() {
  const p = params();
  const editor = document.getElementById("query");
  if (p.has("query")) editor.value = p.get("query");
  if (p.has("variables")) document.getElementById("variables").value = p.get("variables");
  document.getElementById("run").addEventListener("click", runQuery);
  for (const id of ["query", "variables"]) {
    document.getElementById(id).addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        runQuery();
      } else if (event.key === "Tab" && !event.shiftKey) {
        event.preventDefault();
        const t = event.target;
        const at = t.selectionStart;
        t.setRangeText("  ", at, t.selectionEnd, "end");
      }
    });
  }
  document.getElementById("schema-filter").addEventListener("input", (event) => {
    const needle = event.target.value.trim().toLowerCase();
    for (const d of document.querySelectorAll("#schema details")) {
      d.hidden = needle !== "" && !d.dataset.search.includes(needle);
    }
  });
  const autorun = p.get("run") === "1";
  retry = () => {
    loadSchema();
    if (autorun) runQuery();
  };
  loadSchema();
  if (autorun) runQuery();
}

// ---- decision tester ----------------------------------------------------------------------

const DECISION_FIELDS = [
  "hasAccess", "accessDeniedReason", "isUnlimited", "hasSoftLimit", "usageLimit", "currentUsage",
  "requestedUsage", "resetPeriod", "usagePeriodStart", "usagePeriodEnd", "value", "enumValues",
  "requestedValues",
];

async function checkAccess(form) {
  const data = new FormData(form);
  const body = { customerId: data.get("customerId"), featureId: data.get("featureId") };
  const resource = String(data.get("resourceId") || "").trim();
  if (resource) body.resourceId = resource;
  const usage = String(data.get("requestedUsage") || "").trim();
  if (usage) body.requestedUsage = Number(usage);
  const values = String(data.get("requestedValues") || "").split(",").map((v) => v.trim()).filter((v) => v);
  if (values.length > 0) body.requestedValues = values;
  const query = new URLSearchParams();
  for (const [k, v] of data.entries()) if (String(v).trim()) query.set(k, String(v));
  window.history.replaceState(null, "", window.location.pathname + "?" + query);

  const section = document.getElementById("decision");
  const verdict = document.getElementById("verdict");
  section.hidden = false;
  verdict.className = "decision";
  verdict.textContent = "Checking…";
  text("reason", "");
  document.querySelector("#fields tbody").replaceChildren();
  let answer;
  let status;
  try {
    const r = await api("/check-access", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    status = r.status;
    answer = await r.json();
  } catch (e) {
    verdict.textContent = e instanceof Unauthorized ? "Waiting for a token." : "Failed: " + e.message;
    return;
  }
  if (typeof answer.hasAccess !== "boolean") {
    verdict.className = "decision error";
    verdict.textContent = "HTTP " + status + ": " + (answer.error || JSON.stringify(answer));
    return;
  }
  verdict.className = answer.hasAccess ? "decision allowed" : "decision denied";
  verdict.textContent = (answer.hasAccess ? "Allowed" : "Denied") + " (HTTP " + status + ")";
  text("reason", answer.accessDeniedReason ? "Reason: " + answer.accessDeniedReason : "");
  const keys = DECISION_FIELDS.concat(Object.keys(answer).filter((k) => !DECISION_FIELDS.includes(k)));
  const rows = keys.map((k) =>
    el("tr", { id: "field-" + k }, [
      el("th", { textContent: k }),
      el("td", { textContent: answer[k] === undefined ? "(absent)" : JSON.stringify(answer[k]) }),
    ]),
  );
  document.querySelector("#fields tbody").replaceChildren(...rows);
}

function accessPage() {
  const form = document.getElementById("access-form");
  const p = params();
  for (const name of ["customerId", "featureId", "resourceId", "requestedUsage", "requestedValues"]) {
    if (p.has(name)) form.elements[name].value = p.get(name);
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    checkAccess(form);
  });
  retry = () => checkAccess(form);
  if (p.get("run") === "1" && form.checkValidity()) checkAccess(form);
}

// ---- dead letters -------------------------------------------------------------------------

function prettyBody(body) {
  try {
    return JSON.stringify(JSON.parse(body), null, 2);
  } catch (e) {
    return body;
  }
}

async function loadDeadLetters() {
  let answer;
  try {
    const r = await api("/api/dead-letters");
    answer = await r.json();
    if (!r.ok) throw new Error(answer.error || "HTTP " + r.status);
  } catch (e) {
    showError("summary", e);
    return;
  }
  text(
    "summary",
    answer.total === 0
      ? "No dead letters."
      : answer.total + " dead letter(s)" + (answer.shown < answer.total ? ", the newest " + answer.shown + " shown" : "") + ", newest first.",
  );
  const rows = answer.dead_letters.map((d) =>
    el("tr", {}, [
      el("td", {}, [el("code", { textContent: d.source_id })]),
      el("td", { textContent: d.event_message_id || "-" }),
      el("td", { textContent: d.event_type || "-" }),
      el("td", { className: "reason", textContent: d.reason }),
      el("td", { textContent: d.first_seen }),
      el("td", { textContent: String(d.attempts) }),
      el("td", {}, [el("details", {}, [el("summary", { textContent: "body" }), el("pre", { className: "json", textContent: prettyBody(d.body) })])]),
    ]),
  );
  document.querySelector("#letters tbody").replaceChildren(...rows);
}

function deadLettersPage() {
  retry = loadDeadLetters;
  loadDeadLetters();
}

// ---- start --------------------------------------------------------------------------------

const PAGES = {
  status: statusPage,
  graphiql: explorerPage,
  access: accessPage,
  "dead-letters": deadLettersPage,
};

document.addEventListener("DOMContentLoaded", () => {
  const start = PAGES[document.body.dataset.page];
  if (start) start();
});
