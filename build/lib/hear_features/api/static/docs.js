// The documentation pages (/docs: Swagger UI, /redoc: Redoc), both served by this app.
// The schema needs the API key on a server that has keys: it is asked for once, kept in
// this tab's sessionStorage (the explorer page uses the same entry) and sent as X-API-Key,
// also on the requests Swagger UI's "Try it out" sends.
"use strict";

const KEY_STORAGE = "hear-features.api-key";

function withKey(headers) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers["X-API-Key"] = key;
  return headers;
}

async function loadSchema() {
  const response = await fetch("/openapi.json", { headers: withKey({}) });
  if (response.status === 401) return null;
  if (!response.ok) throw new Error(`the schema answered ${response.status}`);
  return response.json();
}

function askForKey(refused) {
  const form = document.getElementById("key-form");
  form.hidden = false;
  document.getElementById("key-note").textContent = refused ? "That key was refused." : "";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, document.getElementById("key-input").value.trim());
    form.hidden = true;
    start();
  }, { once: true });
}

function show(schema) {
  if (document.body.dataset.viewer === "redoc") {
    Redoc.init(schema, { hideDownloadButton: false }, document.getElementById("redoc"));
    return;
  }
  window.ui = SwaggerUIBundle({
    spec: schema,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    requestInterceptor: (request) => {
      request.headers = withKey(request.headers || {});
      return request;
    },
  });
}

async function start() {
  const schema = await loadSchema();
  if (schema === null) {
    askForKey(Boolean(sessionStorage.getItem(KEY_STORAGE)));
    return;
  }
  show(schema);
}

start().catch((error) => {
  document.body.prepend(document.createTextNode(`Could not load the API schema: ${error.message}`));
});
