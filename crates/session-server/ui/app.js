// The account page: the reference integration of cookie transport.
//
// - Every call goes to the API next to this page ("../v1/..."), so the
//   page also works behind a reverse proxy under a path prefix.
// - State-changing calls carry X-CSRF-Token, read from the __Host-csrf
//   cookie at the moment of the call (it changes with every refresh, also
//   when another tab refreshed).
// - A 401 from an authenticated call refreshes the session once (one
//   refresh at a time in this tab) and retries the call once.
// - Text from the server is only ever set with textContent.
"use strict";

const API = new URL("../", document.baseURI);

function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "__Host-csrf") return rest.join("=");
  }
  return "";
}

async function call(method, path, body) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(new URL(path, API), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  let data = null;
  if (res.status !== 204) {
    try { data = await res.json(); } catch (_) { data = null; }
  }
  return { status: res.status, data };
}

let refreshing = null;

// One refresh at a time in this tab; a second tab refreshing at the same
// moment gets the same new tokens (the server's grace window). The CSRF
// token is one value at a time: when the other tab's answer replaced the
// cookies between reading the CSRF cookie and sending, the server answers
// 403; the cookie then holds the new token, so try once more with it.
async function refreshOnce() {
  const sent = csrfToken();
  const res = await call("POST", "v1/auth/refresh");
  if (res.status === 403 && csrfToken() !== sent) {
    return call("POST", "v1/auth/refresh");
  }
  return res;
}

function refresh() {
  if (!refreshing) {
    refreshing = refreshOnce().finally(() => { refreshing = null; });
  }
  return refreshing;
}

// An authenticated call: on 401, refresh once and retry once.
async function api(method, path, body) {
  let res = await call(method, path, body);
  if (res.status === 401) {
    const r = await refresh();
    if (r.status !== 200) return res;
    res = await call(method, path, body);
  }
  return res;
}

// --- user agent to "Browser on OS" -------------------------------------

function describeAgent(ua) {
  if (!ua) return "Unknown device";
  const browsers = [
    [/Edg(?:e|A|iOS)?\/([\d]+)/, "Edge"],
    [/OPR\/([\d]+)/, "Opera"],
    [/SamsungBrowser\/([\d]+)/, "Samsung Internet"],
    [/Firefox\/([\d]+)/, "Firefox"],
    [/FxiOS\/([\d]+)/, "Firefox"],
    [/CriOS\/([\d]+)/, "Chrome"],
    [/HeadlessChrome\/([\d]+)/, "Headless Chrome"],
    [/Chrom(?:e|ium)\/([\d]+)/, "Chrome"],
    [/Version\/([\d]+)[\d.]* (?:Mobile\/\S+ )?Safari\//, "Safari"],
    [/^curl\/([\d]+)/, "curl"],
  ];
  let browser = null;
  for (const [re, name] of browsers) {
    const m = ua.match(re);
    if (m) { browser = `${name} ${m[1]}`; break; }
  }
  const systems = [
    [/Windows NT 10/, "Windows"],
    [/Windows/, "Windows"],
    [/Android ?([\d]+)?/, "Android"],
    [/iPhone|iPod/, "iPhone"],
    [/iPad/, "iPad"],
    [/CrOS/, "ChromeOS"],
    [/Mac OS X|Macintosh/, "macOS"],
    [/Linux/, "Linux"],
  ];
  let os = null;
  for (const [re, name] of systems) {
    const m = ua.match(re);
    if (m) { os = name === "Android" && m[1] ? `Android ${m[1]}` : name; break; }
  }
  if (browser && os) return `${browser} on ${os}`;
  if (browser || os) return browser || os;
  return ua.length > 60 ? `${ua.slice(0, 57)}...` : ua;
}

function when(iso) {
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return "";
  const secs = Math.round((Date.now() - t.getTime()) / 1000);
  let ago;
  if (secs < 60) ago = "just now";
  else if (secs < 3600) ago = `${Math.floor(secs / 60)} min ago`;
  else if (secs < 86400) ago = `${Math.floor(secs / 3600)} h ago`;
  else ago = `${Math.floor(secs / 86400)} days ago`;
  return ago;
}

// --- the page -------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function say(text) { $("status").textContent = text; }

function show(which) {
  $("signin").hidden = which !== "signin";
  $("account").hidden = which !== "account";
}

function showSignIn(message) {
  show("signin");
  say(message || "");
  $("username").focus();
}

function deviceItem(s) {
  const li = document.createElement("li");
  li.className = "device";
  li.dataset.sessionId = s.session_id;
  if (s.current) li.dataset.current = "true";

  const text = document.createElement("div");
  const what = document.createElement("div");
  what.className = "what";
  what.textContent = describeAgent(s.user_agent);
  if (s.current) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "This device";
    what.append(badge);
  }
  const details = document.createElement("div");
  details.className = "details";
  const parts = [];
  if (s.ip) parts.push(`IP ${s.ip}`);
  if (s.location && (s.location.city || s.location.country)) {
    parts.push([s.location.city, s.location.country].filter(Boolean).join(", "));
  }
  const seen = document.createElement("time");
  seen.dateTime = s.last_seen_at;
  seen.title = new Date(s.last_seen_at).toLocaleString();
  seen.textContent = `last seen ${when(s.last_seen_at)}`;
  details.textContent = parts.length ? `${parts.join(" · ")} · ` : "";
  details.append(seen);
  text.append(what, details);
  li.append(text);

  if (!s.current) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "danger";
    button.textContent = "Sign out";
    button.setAttribute("aria-label", `Sign out ${describeAgent(s.user_agent)}`);
    button.addEventListener("click", () => signOutDevice(s.session_id, button));
    li.append(button);
  }
  return li;
}

async function loadAccount() {
  const me = await api("GET", "v1/session");
  if (me.status === 401) return showSignIn("");
  if (me.status !== 200) return say("The service cannot answer right now. Try again later.");
  $("user").textContent = me.data.user_id;
  const list = await api("GET", "v1/sessions");
  if (list.status === 401) return showSignIn("Your session ended. Please sign in again.");
  if (list.status !== 200) return say("Your devices cannot be listed right now.");
  const ul = $("devices");
  ul.replaceChildren(...list.data.sessions
    .slice()
    .sort((a, b) => (b.current - a.current) || b.last_seen_at.localeCompare(a.last_seen_at))
    .map(deviceItem));
  $("signout-others").hidden = !list.data.sessions.some((s) => !s.current);
  show("account");
  say("");
}

async function signOutDevice(id, button) {
  button.disabled = true;
  const res = await api("DELETE", `v1/sessions/${encodeURIComponent(id)}`);
  if (res.status === 204 || res.status === 404) {
    say("That device is signed out.");
    return loadAccount();
  }
  button.disabled = false;
  if (res.status === 401) return showSignIn("Your session ended. Please sign in again.");
  say("That device could not be signed out. Try again.");
}

async function signOutOthers() {
  const button = $("signout-others");
  button.disabled = true;
  const others = [...document.querySelectorAll(".device:not([data-current])")]
    .map((li) => li.dataset.sessionId);
  let failed = 0;
  for (const id of others) {
    const res = await api("DELETE", `v1/sessions/${encodeURIComponent(id)}`);
    if (res.status !== 204 && res.status !== 404) failed += 1;
  }
  button.disabled = false;
  await loadAccount();
  say(failed ? `${failed} device(s) could not be signed out.` : "All other devices are signed out.");
}

async function signOut() {
  const res = await api("POST", "v1/auth/logout");
  if (res.status === 204 || res.status === 401) {
    $("devices").replaceChildren();
    return showSignIn("You are signed out.");
  }
  say("Signing out failed. Try again.");
}

async function signIn(event) {
  event.preventDefault();
  const button = $("signin-button");
  const username = $("username").value.trim();
  const password = $("password").value;
  $("signin-error").textContent = "";
  if (!username || !password) {
    $("signin-error").textContent = "Enter your user name and password.";
    return;
  }
  button.disabled = true;
  const res = await call("POST", "v1/auth/login", { username, password });
  button.disabled = false;
  $("password").value = "";
  if (res.status === 200) return loadAccount();
  $("signin-error").textContent =
    res.status === 401 ? "Wrong user name or password."
      : res.status === 429 ? "Too many attempts. Wait a minute and try again."
        : "Signing in failed. Try again.";
}

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", signOut);
$("signout-others").addEventListener("click", signOutOthers);
loadAccount().catch(() => say("The service cannot be reached."));
