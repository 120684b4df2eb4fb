// The console: a router over the URL's fragment and one function per page, each calling the public API.

import * as api from "./api.js";
import {gauges, stackedChart, usageBar} from "./charts.js";
import {bytes, clear, duration, encodeKey, exactBytes, h, isoDate, replace, table, timestampUs} from "./dom.js";
import * as transfer from "./transfer.js";

const main = document.getElementById("main");
const alertBox = document.getElementById("alert");
let renderCount = 0;
let afterSignIn = "#/buckets";

// ---- helpers ----------------------------------------------------------------------------------------

function showError(error) {
  alertBox.hidden = false;
  replace(alertBox, error && error.message ? error.message : String(error));
}

function clearError() {
  alertBox.hidden = true;
  clear(alertBox);
}

function status(node, text) {
  replace(node, text);
}

export function href(parts, query) {
  let text = "#/" + parts.map(encodeURIComponent).join("/");
  if (query) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value !== null && value !== undefined && value !== "") params.set(name, value);
    }
    if (params.toString()) text += "?" + params.toString();
  }
  return text;
}

function parseRoute() {
  const hash = location.hash.replace(/^#/, "");
  const mark = hash.indexOf("?");
  const path = mark >= 0 ? hash.slice(0, mark) : hash;
  const query = new URLSearchParams(mark >= 0 ? hash.slice(mark + 1) : "");
  let parts;
  try {
    parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  } catch {
    parts = [];
  }
  return {parts, query};
}

function isAdmin() {
  return api.claims().roles.includes("admin");
}

function bucketPath(bucket) {
  return "/buckets/" + encodeURIComponent(bucket);
}

function heading(text) {
  return h("h1", {tabindex: "-1", id: "page-title"}, text);
}

function breadcrumb(items) {
  return h("nav", {"aria-label": "Breadcrumb", class: "breadcrumb"},
    h("ol", {}, items.map(([label, target], index) => h("li", {},
      index === items.length - 1 || !target
        ? h("span", {"aria-current": "page"}, label)
        : h("a", {href: target}, label)))));
}

function bucketTabs(bucket, current) {
  const tabs = [["Overview", href(["buckets", bucket]), "overview"],
                ["Objects", href(["buckets", bucket, "objects"]), "objects"],
                ["Read records", href(["buckets", bucket, "records"]), "records"]];
  return h("nav", {"aria-label": "Bucket", class: "tabs"},
    tabs.map(([label, target, name]) => h("a", {href: target, id: "tab-" + name,
                                                "aria-current": name === current ? "page" : null}, label)));
}

async function inParallel(items, limit, task) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const index = next;
      next += 1;
      try {
        results[index] = {value: await task(items[index])};
      } catch (error) {
        results[index] = {error};
      }
    }
  }
  await Promise.all(Array.from({length: Math.min(limit, items.length)}, worker));
  return results;
}

function monthStartUs(date = new Date()) {
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1) * 1000;
}

function nextMonthStartUs(date = new Date()) {
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1) * 1000;
}

// <input type="datetime-local"> values are read and written as UTC
function usToInput(us) {
  return new Date(Math.floor(us / 1000)).toISOString().slice(0, 19);
}

function inputToUs(value) {
  const ms = Date.parse(value + "Z");
  return Number.isFinite(ms) ? ms * 1000 : null;
}

// ---- session ----------------------------------------------------------------------------------------

function showSession() {
  const signedIn = Boolean(api.token());
  const who = api.claims();
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("who").hidden = !signedIn;
  document.getElementById("nav-locations").hidden = !(signedIn && isAdmin());
  replace(document.getElementById("who-name"),
          signedIn ? `Signed in as ${who.account || "(unknown)"}${isAdmin() ? " (admin)" : ""}` : "");
}

document.getElementById("sign-out").addEventListener("click", () => {
  api.forgetToken();
  afterSignIn = "#/buckets";
  location.hash = "#/signin";
});

api.whenUnauthorized((problem) => {
  api.forgetToken();
  afterSignIn = location.hash && location.hash !== "#/signin" ? location.hash : "#/buckets";
  location.hash = "#/signin";
  showError("Your token was refused (" + (problem.detail || "unauthorized") + "): sign in again.");
});

function signInPage() {
  const input = h("input", {id: "token", name: "token", type: "password", autocomplete: "off", required: true,
                            spellcheck: "false", "aria-describedby": "token-hint"});
  const submit = h("button", {type: "submit", id: "signin-submit"}, "Sign in");
  const form = h("form", {id: "signin-form", class: "stack narrow"},
    h("label", {for: "token"}, "Access token"),
    input,
    h("p", {id: "token-hint", class: "hint"},
      "A bearer token (JWT), for example from ", h("code", {}, "storage-admin token issue"),
      ". It is kept in this tab only (sessionStorage) and sent as an Authorization header; no cookie is set."),
    submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    submit.disabled = true;
    try {
      await api.get("/buckets", null, {tokenValue: value});
      api.setToken(value);
      clearError();
      location.hash = afterSignIn;
    } catch (error) {
      showError("Sign-in failed: " + error.message);
      input.focus();
    } finally {
      submit.disabled = false;
    }
  });
  return {title: "Sign in", nodes: [heading("Sign in"), form], focus: input};
}

// ---- buckets ----------------------------------------------------------------------------------------

async function bucketsPage() {
  const {buckets} = await api.get("/buckets");
  const quotas = await inParallel(buckets, 6, (bucket) => api.get(bucketPath(bucket.name) + "/read-quota"));
  const month = quotas.find((q) => q.value)?.value.year_month || new Date().toISOString().slice(0, 7);
  const cards = buckets.map((bucket, index) => {
    const quota = quotas[index];
    return h("li", {class: "card", dataset: {bucket: bucket.name}},
      h("h2", {}, h("a", {href: href(["buckets", bucket.name]), class: "bucket-link"}, bucket.name)),
      h("p", {class: "meta"}, `owner ${bucket.owner} · ${bucket.visibility}`),
      quota.value ? gauges(quota.value) : h("p", {class: "error"}, "quota unavailable: " + quota.error.message));
  });
  return {title: "Buckets", nodes: [
    heading("Buckets"),
    h("p", {}, "Read quota of this month (", h("span", {id: "quota-month"}, month),
      ", UTC): what each kind of quota has consumed and what is left."),
    buckets.length ? h("ul", {class: "cards", id: "bucket-list"}, cards)
      : h("p", {id: "bucket-list-empty"}, "No buckets you can see."),
  ]};
}

async function bucketPage(bucket) {
  const [info, quota, history] = await Promise.all([
    api.get(bucketPath(bucket)),
    api.get(bucketPath(bucket) + "/read-quota"),
    api.get(bucketPath(bucket) + "/read-quota/history", {months: 12}),
  ]);
  const settings = [
    ["Owner", info.owner], ["Visibility", info.visibility],
    ["Charged quota per month", bytes(info.charged_read_quota), exactBytes(info.charged_read_quota)],
    ["Monthly free quota", bytes(info.monthly_free_read_quota), exactBytes(info.monthly_free_read_quota)],
    ["One-time free grant", bytes(info.free_read_quota), exactBytes(info.free_read_quota)],
    ["Upload locations", info.locations.length ? info.locations.join(", ") : "every enabled location"],
    ["Created", isoDate(info.created_at)],
  ];
  return {title: bucket, nodes: [
    breadcrumb([["Buckets", "#/buckets"], [bucket]]),
    heading(bucket),
    bucketTabs(bucket, "overview"),
    h("section", {"aria-labelledby": "this-month"},
      h("h2", {id: "this-month"}, `This month (${quota.year_month})`), gauges(quota),
      h("p", {class: "meta"}, `Consumed ${bytes(quota.consumed_size)}, ${bytes(quota.remain_quota_size)} left in all.`)),
    h("section", {"aria-labelledby": "history-title"},
      h("h2", {id: "history-title"}, "Last 12 months"), stackedChart(history)),
    h("section", {"aria-labelledby": "settings-title"},
      h("h2", {id: "settings-title"}, "Settings"),
      h("dl", {class: "facts"}, settings.map(([name, value, title]) => [h("dt", {}, name),
                                                                          h("dd", {title: title || null}, value)]))),
  ]};
}

// ---- read records -----------------------------------------------------------------------------------

async function recordsPage(bucket, query) {
  const since = query.get("since") ? inputToUs(query.get("since")) : monthStartUs();
  const until = query.get("until") ? inputToUs(query.get("until")) : nextMonthStartUs();
  const pageSize = Number(query.get("size")) || 100;
  const sinceInput = h("input", {type: "datetime-local", id: "since", name: "since", step: "1",
                                 value: usToInput(since ?? monthStartUs())});
  const untilInput = h("input", {type: "datetime-local", id: "until", name: "until", step: "1",
                                 value: usToInput(until ?? nextMonthStartUs())});
  const sizeSelect = h("select", {id: "page-size", name: "size"},
    [25, 100, 500, 1000].map((n) => h("option", {value: String(n), selected: n === pageSize}, String(n))));
  const form = h("form", {id: "records-form", class: "row"},
    h("label", {for: "since"}, "From (UTC)"), sinceInput,
    h("label", {for: "until"}, "Until (UTC, excluded)"), untilInput,
    h("label", {for: "page-size"}, "Per page"), sizeSelect,
    h("button", {type: "submit", id: "records-show"}, "Show"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = href(["buckets", bucket, "records"],
                         {since: sinceInput.value, until: untilInput.value, size: sizeSelect.value});
  });
  const exportButton = h("button", {type: "button", id: "export-csv"}, "Export CSV");
  const exportStatus = h("span", {id: "export-status", role: "status"});
  exportButton.addEventListener("click", async () => {
    exportButton.disabled = true;
    status(exportStatus, "Exporting…");
    try {
      const count = await transfer.exportRecords(bucket, since, until);
      status(exportStatus, `Exported ${count} records.`);
    } catch (error) {
      showError(error);
      status(exportStatus, "");
    } finally {
      exportButton.disabled = false;
    }
  });

  const body = h("tbody", {});
  const records = h("div", {class: "table-wrap", role: "region", "aria-label": "Read records", tabindex: "0"},
    h("table", {id: "records-table"},
      h("caption", {class: "visually-hidden"}, "Read records"),
      h("thead", {}, h("tr", {}, ["Time (UTC)", "Object", "Object id", "Account", "Size", "Checksum"].map(
        (title) => h("th", {scope: "col"}, title)))),
      body));
  const previous = h("button", {type: "button", id: "prev-page"}, "Previous page");
  const next = h("button", {type: "button", id: "next-page"}, "Next page");
  const pageLabel = h("span", {id: "page-number", role: "status"});
  const cursors = [null];
  let nextCursor = null;

  async function show(index) {
    const page = await api.get(bucketPath(bucket) + "/read-records", {
      start_timestamp_us: since, end_timestamp_us: until, max_records: pageSize, cursor: cursors[index]});
    cursors.length = index + 1;
    nextCursor = page.next_cursor;
    replace(body, page.read_records.map((r) => h("tr", {dataset: {timestamp: String(r.timestamp_us)}},
      h("td", {class: "nowrap"}, timestampUs(r.timestamp_us)),
      h("td", {class: "name"}, r.object_name),
      h("td", {class: "num"}, String(r.object_id)),
      h("td", {}, r.account),
      h("td", {class: "num", title: exactBytes(r.read_size)}, bytes(r.read_size)),
      h("td", {}, isAdmin() ? h("a", {href: href(["files", r.checksum]), class: "mono"}, r.checksum.slice(0, 12) + "…")
                            : h("span", {class: "mono", title: r.checksum}, r.checksum.slice(0, 12) + "…")))));
    if (!page.read_records.length) {
      body.appendChild(h("tr", {}, h("td", {colspan: "6"}, "No reads in this time range.")));
    }
    previous.disabled = index === 0;
    next.disabled = !nextCursor;
    status(pageLabel, `Page ${index + 1}` + (nextCursor ? "" : " (last)"));
  }
  previous.addEventListener("click", () => show(cursors.length - 2).catch(showError));
  next.addEventListener("click", () => {
    if (!nextCursor) return;
    cursors.push(nextCursor);
    show(cursors.length - 1).catch(showError);
  });
  await show(0);
  return {title: "Read records of " + bucket, nodes: [
    breadcrumb([["Buckets", "#/buckets"], [bucket, href(["buckets", bucket])], ["Read records"]]),
    heading("Read records of " + bucket),
    bucketTabs(bucket, "records"),
    form,
    h("div", {class: "row"}, exportButton, exportStatus),
    records,
    h("div", {class: "pager row"}, previous, pageLabel, next),
  ]};
}

// ---- objects ----------------------------------------------------------------------------------------

function uploadItem(file, key) {
  const bar = h("progress", {max: String(file.size || 1), value: "0", "aria-label": "Upload of " + key});
  const text = h("span", {class: "upload-text"}, "waiting");
  const item = h("li", {class: "upload", dataset: {key}}, h("span", {class: "name"}, key), bar, text);
  const started = performance.now();
  return {
    item,
    progress(sent, total) {
      bar.value = sent;
      const seconds = (performance.now() - started) / 1000;
      const rate = seconds > 0 ? sent / seconds : 0;
      const left = rate > 0 ? (total - sent) / rate : NaN;
      status(text, `${bytes(sent)} of ${bytes(total)} · ${bytes(rate)}/s · ${duration(left)} left`);
    },
    done(object) {
      bar.value = bar.max;
      item.dataset.state = "done";
      status(text, `uploaded (${bytes(object.size)})`);
    },
    failed(error) {
      item.dataset.state = "failed";
      status(text, "failed: " + error.message);
    },
  };
}

async function objectsPage(bucket, query) {
  const prefix = query.get("prefix") || "";
  const admin = isAdmin();
  const crumbs = [["Buckets", "#/buckets"], [bucket, href(["buckets", bucket])], ["Objects", prefix ? href(
    ["buckets", bucket, "objects"]) : null]];
  const folders = prefix.split("/").slice(0, -1);
  folders.forEach((folder, index) => {
    const target = folders.slice(0, index + 1).join("/") + "/";
    crumbs.push([folder + "/", target === prefix ? null : href(["buckets", bucket, "objects"], {prefix: target})]);
  });

  // upload
  const input = h("input", {type: "file", id: "upload-input", multiple: true});
  const list = h("ul", {id: "upload-list", class: "uploads"});
  const submit = h("button", {type: "submit", id: "upload-submit"}, "Upload");
  const form = h("form", {id: "upload-form", class: "row"},
    h("label", {for: "upload-input"}, "Upload files into ", h("code", {}, prefix || "(bucket root)")),
    input, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const files = Array.from(input.files || []);
    if (!files.length) {
      showError("Choose at least one file to upload.");
      input.focus();
      return;
    }
    submit.disabled = true;
    let failures = 0;
    for (const file of files) {
      const key = prefix + file.name;
      const ui = uploadItem(file, key);
      list.appendChild(ui.item);
      try {
        ui.done(await transfer.upload(bucket, key, file, (sent, total) => ui.progress(sent, total)));
      } catch (error) {
        failures += 1;
        ui.failed(error);
      }
    }
    submit.disabled = false;
    input.value = "";
    if (!failures) await refresh();
  });

  // presigned links
  const expiry = h("select", {id: "link-expiry"},
    [["3600", "1 hour"], ["86400", "1 day"], ["604800", "7 days"]].map(([value, label]) =>
      h("option", {value}, label)));
  const linkOutput = h("input", {type: "text", id: "presigned-url", readonly: true, class: "wide",
                                 "aria-label": "Presigned link",
                                 placeholder: "“Copy link” on an object puts its presigned link here"});
  const linkStatus = h("span", {id: "link-status", role: "status"});
  const linkBox = h("div", {class: "row", id: "link-box"},
    h("label", {for: "link-expiry"}, "Links valid for"), expiry, linkOutput, linkStatus);

  async function copyLink(key) {
    const {url} = await transfer.presign(bucket, key, Number(expiry.value));
    linkOutput.value = url;
    linkOutput.dataset.key = key;
    linkOutput.focus();
    linkOutput.select();
    try {
      await navigator.clipboard.writeText(url);
      status(linkStatus, `Link to ${key} copied to the clipboard.`);
    } catch {
      status(linkStatus, `Link to ${key} is selected above: copy it with Ctrl+C.`);
    }
  }

  // listing
  const body = h("tbody", {});
  const more = h("button", {type: "button", id: "more-objects", hidden: true}, "Load more");
  const seenFolders = new Set();
  let cursor = null;

  function objectRow(object, name) {
    const download = h("button", {type: "button", class: "download"}, "Download");
    download.addEventListener("click", () => transfer.download(bucket, object.key).catch(showError));
    const link = h("button", {type: "button", class: "copy-link"}, "Copy link");
    link.addEventListener("click", () => copyLink(object.key).catch(showError));
    const remove = h("button", {type: "button", class: "delete"}, "Delete");
    remove.addEventListener("click", async () => {
      if (!window.confirm(`Delete ${object.key}?`)) return;
      try {
        await api.del(bucketPath(bucket) + "/objects/" + encodeKey(object.key));
        row.remove();
      } catch (error) {
        showError(error);
      }
    });
    const row = h("tr", {class: "object", dataset: {key: object.key}},
      h("td", {class: "name"}, name || "(the folder’s own object)"),
      h("td", {class: "num", title: exactBytes(object.size)}, bytes(object.size)),
      h("td", {}, object.content_type),
      h("td", {class: "nowrap"}, isoDate(object.created_at)),
      h("td", {class: "actions"}, download, link,
        admin ? h("a", {href: href(["files", object.checksum]), class: "file-link"}, "File") : null, remove));
    return row;
  }

  async function load() {
    const page = await api.get(bucketPath(bucket) + "/objects", {prefix, limit: 1000, cursor});
    for (const object of page.objects) {
      const rest = object.key.slice(prefix.length);
      const slash = rest.indexOf("/");
      if (slash >= 0) {
        const folder = rest.slice(0, slash + 1);
        if (!seenFolders.has(folder)) {
          seenFolders.add(folder);
          body.appendChild(h("tr", {class: "folder", dataset: {prefix: prefix + folder}},
            h("td", {class: "name"}, h("a", {href: href(["buckets", bucket, "objects"], {prefix: prefix + folder}),
                                             class: "folder-link"}, folder)),
            h("td", {}, "folder"), h("td", {}), h("td", {}), h("td", {})));
        }
      } else {
        body.appendChild(objectRow(object, rest));
      }
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    if (!body.firstChild) body.appendChild(h("tr", {}, h("td", {colspan: "5"}, "Nothing here yet.")));
  }

  async function refresh() {
    clear(body);
    seenFolders.clear();
    cursor = null;
    await load();
  }

  more.addEventListener("click", () => load().catch(showError));
  await load();
  return {title: "Objects in " + bucket, nodes: [
    breadcrumb(crumbs),
    heading("Objects in " + bucket),
    bucketTabs(bucket, "objects"),
    form, list, linkBox,
    h("div", {class: "table-wrap", role: "region", "aria-label": "Objects", tabindex: "0"},
      h("table", {id: "objects-table"},
        h("caption", {class: "visually-hidden"}, "Objects and folders under " + (prefix || "the bucket root")),
        h("thead", {}, h("tr", {}, ["Name", "Size", "Type", "Created (UTC)", "Actions"].map(
          (title) => h("th", {scope: "col"}, title)))),
        body)),
    more,
  ]};
}

// ---- locations and files ----------------------------------------------------------------------------

async function readiness() {
  try {
    return await api.get("/health/ready", null, {root: ""});
  } catch (error) {
    return error.problem && error.problem.checks ? error.problem : {checks: {}};
  }
}

async function locationsPage() {
  const [{storage_locations: locations}, health] = await Promise.all([api.get("/storage-locations"), readiness()]);
  const checks = health.checks || {};
  const rows = locations.map((location) => {
    const check = checks["location:" + location.name];
    const healthText = !location.enabled ? "disabled" : check === undefined ? "unknown" : check;
    return h("tr", {dataset: {location: location.name}},
      h("th", {scope: "row"}, location.name),
      h("td", {}, location.plugin),
      h("td", {}, location.tier),
      h("td", {}, location.access || "online"),
      h("td", {}, location.purpose || "—"),
      h("td", {class: "num"}, String(location.priority)),
      h("td", {}, location.enabled ? "yes" : "no"),
      h("td", {}, usageBar(location.used_size, location.capacity)),
      h("td", {class: "num"}, String(location.file_count)),
      h("td", {class: "health " + (healthText === "ok" ? "ok" : "bad")}, healthText));
  });
  return {title: "Storage locations", nodes: [
    heading("Storage locations"),
    h("p", {}, "Downloads are served by online hot locations by priority (0 first), then cold ones, then a cached ",
      "copy of a nearline file."),
    table("Storage locations", ["Name", "Plugin", "Tier", "Access", "Purpose", "Priority", "Enabled",
                                "Used / capacity", "Files", "Health"], rows, {id: "locations-table"}),
  ]};
}

async function filePage(checksum) {
  const [file, locations] = await Promise.all([
    api.get("/files/" + encodeURIComponent(checksum)),
    api.get("/storage-locations").then((answer) => answer.storage_locations).catch(() => []),
  ]);
  const byName = new Map(locations.map((location) => [location.name, location]));
  const accessOf = (copy) => copy.access || byName.get(copy.location)?.access || "online";
  const copies = file.copies.map((copy) => h("tr", {dataset: {location: copy.location, state: copy.state}},
    h("th", {scope: "row"}, copy.location), h("td", {}, copy.tier), h("td", {}, accessOf(copy)),
    h("td", {class: "num"}, String(copy.priority)), h("td", {}, copy.state),
    h("td", {class: "nowrap"}, copy.expires_at ? isoDate(copy.expires_at) : "—")));
  const nodes = [
    heading("File"),
    h("dl", {class: "facts"},
      h("dt", {}, "Checksum (sha256)"), h("dd", {class: "mono", id: "file-checksum"}, file.checksum),
      h("dt", {}, "Size"), h("dd", {title: exactBytes(file.size)}, bytes(file.size)),
      h("dt", {}, "Pieces"), h("dd", {}, `${file.piece_count} of ${bytes(file.piece_size)}`),
      h("dt", {}, "Stored"), h("dd", {}, isoDate(file.created_at))),
    h("h2", {}, "Copies"),
    table("Copies", ["Location", "Tier", "Access", "Priority", "State", "Cached until"], copies,
          {id: "copies-table"}),
  ];
  if (file.copies.some((copy) => accessOf(copy) === "nearline")) {
    const button = h("button", {type: "button", id: "restore"}, "Restore from nearline");
    const output = h("p", {id: "restore-state", role: "status"});
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const [answer] = await api.post("/files/restore", {checksums: [file.checksum]});
        status(output, `Restore: ${answer.state}` + (answer.expires_at ? `, available until ${isoDate(answer.expires_at)}`
                                                                      : ""));
      } catch (error) {
        // a server without restore has no such route (404, or 405 where /files/{checksum} exists)
        const unsupported = error.status === 404 || error.status === 405;
        status(output, unsupported ? "Restore is not supported by this server." : "Restore failed: " + error.message);
      } finally {
        button.disabled = false;
      }
    });
    nodes.push(h("div", {class: "row"}, button, output));
  }
  nodes.push(h("h2", {}, "Objects with this content"),
    h("ul", {id: "references"}, file.references.map((ref) => {
      const folder = ref.key.includes("/") ? ref.key.slice(0, ref.key.lastIndexOf("/") + 1) : "";
      return h("li", {}, h("a", {href: href(["buckets", ref.bucket, "objects"], {prefix: folder})}, ref.bucket),
               " / ", h("span", {class: "name"}, ref.key));
    })));
  return {title: "File " + checksum.slice(0, 12), nodes};
}

// ---- router -----------------------------------------------------------------------------------------

function notFound() {
  return {title: "Not found", nodes: [heading("Not found"), h("p", {}, "No such page. "),
                                      h("a", {href: "#/buckets"}, "Back to the buckets")]};
}

function pageFor(parts, query) {
  const [first, second, third] = parts;
  if (first === "signin") return signInPage();
  if (!first || (first === "buckets" && !second)) return bucketsPage();
  if (first === "buckets" && !third) return bucketPage(second);
  if (first === "buckets" && third === "objects") return objectsPage(second, query);
  if (first === "buckets" && third === "records") return recordsPage(second, query);
  if (first === "locations") return locationsPage();
  if (first === "files" && second) return filePage(second);
  return notFound();
}

async function render() {
  const id = ++renderCount;
  const {parts, query} = parseRoute();
  if (!api.token() && parts[0] !== "signin") {
    afterSignIn = location.hash || "#/buckets";
    location.hash = "#/signin";
    return;
  }
  if (api.token() && parts[0] === "signin") {
    location.hash = "#/buckets";
    return;
  }
  showSession();
  if (parts[0] !== "signin") clearError();
  main.setAttribute("aria-busy", "true");
  replace(main, h("p", {class: "loading"}, "Loading…"));
  let page;
  try {
    page = await pageFor(parts, query);
  } catch (error) {
    page = {title: "Error", nodes: [heading("Something went wrong"), h("p", {class: "error"}, error.message)]};
    if (error.status !== 401) showError(error);
  }
  if (id !== renderCount) return; // a later navigation won
  replace(main, page.nodes);
  main.removeAttribute("aria-busy");
  main.dataset.page = parts[0] || "buckets";
  document.title = page.title + " · Storage console";
  (page.focus || document.getElementById("page-title") || main).focus();
}

window.addEventListener("hashchange", render);
render();
