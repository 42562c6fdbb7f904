// The shelfsync web page: library, history, devices, conflicts, live activity.
// Every name from the library is hostile input: text goes into the page only
// through textContent (the `el` helper) and URLs only through encodeURIComponent.
import { api, ApiError, currentUser, login, logout, resume } from "./api.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["login", "library", "devices", "conflicts", "activity"];
const state = {
  folder: "",
  sort: "name",
  order: "asc",
  q: "",
  offset: 0,
  devices: new Map(),
  history: null,
  feedAbort: null,
};

// -- helpers -----------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "onclick") node.addEventListener("click", value);
    else if (key === "onsubmit") node.addEventListener("submit", value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function formatSize(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function formatTime(text) {
  if (!text) return "—";
  return new Date(text).toLocaleString();
}

function deviceName(id) {
  if (!id) return "the web page";
  const device = state.devices.get(id);
  return device ? device.name : "a removed device";
}

function say(message) {
  $("status").textContent = message;
}

function fail(error) {
  if (error instanceof ApiError && error.status === 401) {
    show("login");
    return;
  }
  say(`Error: ${error.message}`);
}

async function confirmAction(text, okLabel) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  dialog.returnValue = "cancel";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

function encodePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

// -- views and routing -----------------------------------------------------------

function show(view) {
  for (const name of VIEWS) $(`${name}-view`).hidden = name !== view;
  $("top").hidden = view === "login";
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function route() {
  if (!currentUser()) return;
  const hash = window.location.hash || "#/library";
  const [, view, ...rest] = hash.split("/");
  try {
    if (view === "devices") {
      show("devices");
      await loadDevices();
    } else if (view === "conflicts") {
      show("conflicts");
      await loadConflicts();
    } else if (view === "activity") {
      show("activity");
      await loadActivity();
    } else {
      show("library");
      const folder = rest.map(decodeURIComponent).join("/");
      if (folder !== state.folder) {
        state.folder = folder;
        state.q = "";
        $("search").value = "";
        closeHistory();
      }
      await loadFolder();
    }
  } catch (error) {
    fail(error);
  }
}

// -- library -------------------------------------------------------------------

function renderCrumbs() {
  const nav = $("crumbs");
  nav.replaceChildren();
  const list = el("ol");
  list.append(el("li", {}, el("a", { href: "#/library", text: "Library" })));
  const parts = state.folder ? state.folder.split("/") : [];
  parts.forEach((part, index) => {
    const path = parts.slice(0, index + 1).join("/");
    const last = index === parts.length - 1;
    list.append(
      el("li", {}, el("a", { href: `#/library/${encodePath(path)}`, "aria-current": last ? "page" : null, text: part })),
    );
  });
  nav.append(list);
}

function entryRow(entry) {
  if (entry.kind === "folder") {
    return el(
      "tr",
      { class: "folder" },
      el("td", { "data-label": "Name" }, el("a", { href: `#/library/${encodePath(entry.path)}`, class: "name", text: `${entry.name}/` })),
      el("td", { "data-label": "Size", text: `${formatSize(entry.size)} · ${entry.item_count} file${entry.item_count === 1 ? "" : "s"}` }),
      el("td", { "data-label": "Modified", text: formatTime(entry.modified) }),
      el("td", { "data-label": "Revision", text: "—" }),
      el("td", {}),
    );
  }
  const shown = state.q ? entry.path : entry.name;
  return el(
    "tr",
    { class: "file", "data-path": entry.path },
    el("td", { "data-label": "Name" }, el("span", { class: "name", text: shown })),
    el("td", { "data-label": "Size", text: formatSize(entry.size) }),
    el("td", { "data-label": "Modified", text: formatTime(entry.modified) }),
    el("td", { "data-label": "Revision", text: String(entry.revision) }),
    el(
      "td",
      { class: "actions" },
      el("button", { type: "button", "aria-label": `Download ${entry.name}`, onclick: () => download(entry.path, null), text: "Download" }),
      el("button", { type: "button", "aria-label": `History of ${entry.name}`, onclick: () => openHistory(entry.id), text: "History" }),
    ),
  );
}

async function loadFolder({ append = false } = {}) {
  if (!append) state.offset = 0;
  await ensureDevices();
  const page = await api("GET", "/api/v1/library/folder", {
    query: { path: state.folder, sort: state.sort, order: state.order, q: state.q, offset: state.offset, limit: 100 },
  });
  renderCrumbs();
  const body = $("entries").querySelector("tbody");
  if (!append) body.replaceChildren();
  for (const entry of page.entries) body.append(entryRow(entry));
  state.offset = page.next_offset;
  $("more").hidden = page.next_offset === null;
  $("library-empty").hidden = page.total !== 0;
  $("library-empty").textContent = state.q ? "No file name matches." : "This folder is empty.";
}

async function download(path, revision) {
  try {
    // A 60-second link for this file only: the browser streams it to disk.
    const ticket = await api("POST", "/api/v1/library/download-tickets", { body: { path, revision } });
    const link = el("a", { href: ticket.url, download: path.split("/").pop(), hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
  } catch (error) {
    fail(error);
  }
}

function closeHistory() {
  state.history = null;
  $("history").hidden = true;
}

async function openHistory(itemId) {
  try {
    const history = await api("GET", `/api/v1/library/items/${encodeURIComponent(itemId)}/revisions`);
    state.history = history;
    renderHistory();
    $("history").hidden = false;
    $("history-close").focus();
  } catch (error) {
    fail(error);
  }
}

function renderHistory() {
  const { item, revisions } = state.history;
  $("history-name").textContent = item.path;
  const body = $("revisions").querySelector("tbody");
  body.replaceChildren();
  for (const rev of revisions) {
    const current = rev.revision === item.revision;
    const actions = el("td", { class: "actions" });
    if (!rev.deleted) {
      actions.append(
        el("button", { type: "button", "aria-label": `Download revision ${rev.revision}`, onclick: () => download(item.path, rev.revision), text: "Download" }),
      );
      if (!current) {
        actions.append(
          el("button", { type: "button", "aria-label": `Restore revision ${rev.revision}`, onclick: () => restore(item, rev), text: "Restore" }),
        );
      }
    }
    body.append(
      el(
        "tr",
        { "data-revision": String(rev.revision) },
        el("td", { "data-label": "Revision", text: current ? `${rev.revision} (current)` : String(rev.revision) }),
        el("td", { "data-label": "Change", text: rev.deleted ? "deleted" : rev.op }),
        el("td", { "data-label": "Size", text: rev.deleted ? "—" : formatSize(rev.size) }),
        el("td", { "data-label": "When", text: formatTime(rev.changed_at) }),
        el("td", { "data-label": "Device", text: deviceName(rev.device_id) }),
        actions,
      ),
    );
  }
}

async function restore(item, rev) {
  const ok = await confirmAction(`Restore revision ${rev.revision} of ${item.path}? It becomes a new revision on every device.`, "Restore");
  if (!ok) return;
  try {
    const answer = await api("POST", `/api/v1/library/items/${encodeURIComponent(item.id)}/restore`, {
      body: { revision: rev.revision, expected_revision: item.revision },
    });
    say(`Restored revision ${rev.revision} as revision ${answer.change.revision}.`);
    await openHistory(item.id);
    await loadFolder();
  } catch (error) {
    fail(error);
  }
}

// -- devices ---------------------------------------------------------------------

async function ensureDevices(force = false) {
  if (force || state.devices.size === 0) {
    const { devices } = await api("GET", "/api/v1/sync/devices");
    state.devices = new Map(devices.map((d) => [d.id, d]));
  }
  return [...state.devices.values()];
}

function deviceCard(device) {
  const nameId = `rename-${device.id}`;
  const behind = device.pending_changes === 0 ? "up to date" : `${device.pending_changes} changes behind`;
  const facts = el(
    "dl",
    {},
    el("dt", { text: "Type" }), el("dd", { text: device.device_type }),
    el("dt", { text: "OS" }), el("dd", { text: device.os || "—" }),
    el("dt", { text: "Last seen" }), el("dd", { text: formatTime(device.last_seen_at) }),
    el("dt", { text: "Last sync" }), el("dd", { text: formatTime(device.last_sync_at) }),
    el("dt", { text: "Sync state" }), el("dd", { text: behind }),
    el("dt", { text: "Status" }), el("dd", { text: device.enabled ? "enabled" : "disabled" }),
  );
  const rename = el(
    "form",
    {
      class: "inline",
      onsubmit: async (event) => {
        event.preventDefault();
        const name = event.target.querySelector("input").value.trim();
        if (!name) return;
        await updateDevice(device, { name }, `Renamed to ${name}.`);
      },
    },
    el("label", { for: nameId, text: `New name for ${device.name}` }),
    el("input", { id: nameId, value: device.name, maxlength: "100", required: true }),
    el("button", { type: "submit", text: "Rename" }),
  );
  const toggle = el("button", {
    type: "button",
    "aria-label": `${device.enabled ? "Disable" : "Enable"} ${device.name}`,
    text: device.enabled ? "Disable" : "Enable",
    onclick: () => updateDevice(device, { enabled: !device.enabled }, `${device.name} ${device.enabled ? "disabled" : "enabled"}.`),
  });
  const rotate = el("button", {
    type: "button",
    "aria-label": `New token for ${device.name}`,
    text: "New token",
    onclick: () => rotateToken(device),
  });
  const remove = el("button", {
    type: "button",
    class: "danger",
    "aria-label": `Delete ${device.name}`,
    text: "Delete",
    onclick: () => deleteDevice(device),
  });
  return el(
    "article",
    { class: "card device", "data-device": device.id, "aria-labelledby": `device-${device.id}` },
    el("h2", { id: `device-${device.id}`, text: device.name }),
    facts,
    rename,
    el("div", { class: "buttons" }, toggle, rotate, remove),
  );
}

async function loadDevices() {
  const devices = await ensureDevices(true);
  const list = $("device-list");
  list.replaceChildren(...devices.map(deviceCard));
  if (devices.length === 0) list.append(el("p", { text: "No devices yet: run `shelfsync login` on one." }));
}

async function updateDevice(device, changes, message) {
  try {
    await api("PUT", `/api/v1/sync/devices/${encodeURIComponent(device.id)}`, { body: changes });
    say(message);
    await loadDevices();
  } catch (error) {
    fail(error);
  }
}

async function rotateToken(device) {
  const ok = await confirmAction(`Make a new token for ${device.name}? Its current token stops working at once.`, "New token");
  if (!ok) return;
  try {
    const answer = await api("POST", `/api/v1/sync/devices/${encodeURIComponent(device.id)}/token`);
    $("token-value").value = answer.token;
    $("token-box").hidden = false;
    $("token-value").focus();
    $("token-value").select();
  } catch (error) {
    fail(error);
  }
}

async function deleteDevice(device) {
  const ok = await confirmAction(`Delete ${device.name}? It stops syncing; its files stay in the library.`, "Delete");
  if (!ok) return;
  try {
    await api("DELETE", `/api/v1/sync/devices/${encodeURIComponent(device.id)}`);
    say(`${device.name} deleted.`);
    await loadDevices();
  } catch (error) {
    fail(error);
  }
}

// -- conflicts -------------------------------------------------------------------

function side(title, facts) {
  const list = el("dl");
  for (const [name, value] of facts) list.append(el("dt", { text: name }), el("dd", { text: value }));
  return el("section", { class: "side" }, el("h3", { text: title }), list);
}

function conflictCard(conflict) {
  const device = deviceName(conflict.device_id);
  const { server, client } = conflict;
  const resolve = (resolution) => async () => {
    try {
      await api("POST", `/api/v1/sync/conflicts/${encodeURIComponent(conflict.id)}/resolve`, {
        body: { resolution, expected_server_revision: server.revision ?? 0 },
      });
      say(`Conflict on ${conflict.path} resolved.`);
      await loadConflicts();
    } catch (error) {
      fail(error);
      if (error instanceof ApiError && error.status === 409) await loadConflicts();
    }
  };
  const clientOk = client.deleted || client.content_available;
  return el(
    "article",
    { class: "card conflict", "data-conflict": conflict.id, "aria-labelledby": `conflict-${conflict.id}` },
    el("h2", { id: `conflict-${conflict.id}`, text: conflict.path }),
    el("p", { text: `Detected ${formatTime(conflict.detected_at)} on ${device}.` }),
    el(
      "div",
      { class: "sides" },
      side("On the server", [
        ["Revision", server.revision === null ? "—" : String(server.revision)],
        ["Size", server.deleted ? "deleted" : formatSize(server.size)],
        ["Modified", formatTime(server.mtime)],
        ["By", deviceName(server.device_id)],
      ]),
      side(`On ${device}`, [
        ["Based on revision", conflict.base_revision === null ? "none" : String(conflict.base_revision)],
        ["Change", client.deleted ? "deleted" : client.op],
        ["Size", client.deleted ? "—" : formatSize(client.size)],
        ["Modified", formatTime(client.mtime)],
      ]),
    ),
    el(
      "div",
      { class: "buttons" },
      el("button", { type: "button", onclick: resolve("keep_server"), "aria-label": `Keep the server's version of ${conflict.path}`, text: "Keep server's" }),
      el("button", { type: "button", onclick: resolve("keep_client"), disabled: !clientOk, "aria-label": `Keep ${device}'s version of ${conflict.path}`, text: `Keep ${device}'s` }),
      el("button", { type: "button", onclick: resolve("keep_both"), disabled: !clientOk, "aria-label": `Keep both versions of ${conflict.path}`, text: "Keep both" }),
    ),
  );
}

async function loadConflicts() {
  await ensureDevices(true);
  const { conflicts } = await api("GET", "/api/v1/sync/conflicts");
  $("conflict-list").replaceChildren(...conflicts.map(conflictCard));
  $("conflicts-empty").hidden = conflicts.length !== 0;
  updateBadge(conflicts.length);
}

function updateBadge(count) {
  const badge = $("conflict-count");
  badge.hidden = count === 0;
  badge.textContent = String(count);
  badge.setAttribute("aria-label", `${count} unresolved`);
}

// -- activity --------------------------------------------------------------------

function activityItem(change) {
  const what = change.deleted ? "deleted" : change.op === "move" ? `moved from ${change.from_path}` : "changed";
  return el(
    "li",
    { "data-id": change.id, "data-seq": String(change.seq) },
    el("span", { class: "name", text: change.path }),
    el("span", { class: "meta", text: ` ${what} (revision ${change.revision}) by ${deviceName(change.device_id)}, ${formatTime(change.changed_at)}` }),
  );
}

function addActivity(change) {
  const list = $("activity-list");
  for (const old of list.querySelectorAll("li")) {
    if (old.dataset.id === change.id) old.remove();
  }
  list.prepend(activityItem(change));
}

async function loadActivity() {
  await ensureDevices();
  const { changes } = await api("GET", "/api/v1/library/activity", { query: { limit: 50 } });
  $("activity-list").replaceChildren(...changes.map(activityItem));
}

// The change feed with a user token (read-only: nothing is acked), long-polled.
async function follow() {
  if (state.feedAbort) state.feedAbort.abort();
  const abort = new AbortController();
  state.feedAbort = abort;
  let cursor = null;
  while (!abort.signal.aborted && currentUser()) {
    try {
      const page = await api("GET", "/api/v1/sync/changes", {
        query: cursor ? { cursor, wait: 50, limit: 200 } : { cursor: "latest" },
        signal: abort.signal,
      });
      cursor = page.cursor;
      if (page.changes.length) await onChanges(page.changes);
    } catch (error) {
      if (abort.signal.aborted) return;
      if (error instanceof ApiError && error.status === 410) cursor = null;
      await new Promise((resolve) => setTimeout(resolve, 3000));
    }
  }
}

async function onChanges(changes) {
  const unknown = changes.some((c) => c.device_id && !state.devices.has(c.device_id));
  if (unknown) await ensureDevices(true);
  for (const change of changes) addActivity(change);
  if (!$("library-view").hidden) await loadFolder();
  if (!$("devices-view").hidden) await loadDevices();
  if (!$("conflicts-view").hidden) await loadConflicts();
  else api("GET", "/api/v1/sync/conflicts").then((r) => updateBadge(r.conflicts.length), () => {});
}

// -- start -----------------------------------------------------------------------

async function enter() {
  $("username").textContent = currentUser();
  $("top").hidden = false;
  follow();
  api("GET", "/api/v1/sync/conflicts").then((r) => updateBadge(r.conflicts.length), () => {});
  await route();
}

function wire() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("login-error").textContent = "";
    try {
      await login($("login-username").value, $("login-password").value);
      $("login-password").value = "";
      await enter();
    } catch (error) {
      $("login-error").textContent = error instanceof ApiError && error.status === 401 ? "Wrong username or password." : error.message;
    }
  });
  $("logout").addEventListener("click", async () => {
    if (state.feedAbort) state.feedAbort.abort();
    try {
      await logout();
    } finally {
      state.devices = new Map();
      say("Logged out.");
      show("login");
      $("login-username").focus();
    }
  });
  $("library-tools").addEventListener("submit", (event) => event.preventDefault());
  let typing = null;
  $("search").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.q = $("search").value.trim();
      loadFolder().catch(fail);
    }, 250);
  });
  $("sort").addEventListener("change", () => {
    state.sort = $("sort").value;
    loadFolder().catch(fail);
  });
  $("order").addEventListener("change", () => {
    state.order = $("order").value;
    loadFolder().catch(fail);
  });
  $("more").addEventListener("click", () => loadFolder({ append: true }).catch(fail));
  $("history-close").addEventListener("click", closeHistory);
  $("token-copy").addEventListener("click", async () => {
    const value = $("token-value").value;
    try {
      await navigator.clipboard.writeText(value);
      say("Token copied.");
    } catch {
      $("token-value").select();
      say("Select the token and copy it (Ctrl+C).");
    }
  });
  $("token-done").addEventListener("click", () => {
    $("token-value").value = "";
    $("token-box").hidden = true;
  });
  window.addEventListener("hashchange", route);
}

async function start() {
  wire();
  try {
    await resume();
    await enter();
  } catch {
    show("login");
  }
}

start();
