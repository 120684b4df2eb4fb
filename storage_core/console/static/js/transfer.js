// Uploads with progress (one PUT, or native multipart for large files), downloads through a presigned
// link (the browser streams it to disk), and the CSV export of read records (every page).

import * as api from "./api.js";
import {encodeKey, h} from "./dom.js";

const PARALLEL_PARTS = 3;
const PART_ATTEMPTS = 3;

export function partSize() {
  const meta = document.querySelector('meta[name="storage-part-size"]');
  const value = Number(meta && meta.content);
  return Number.isFinite(value) && value > 0 ? value : 64 * 1024 * 1024;
}

function bucketPath(bucket) {
  return "/buckets/" + encodeURIComponent(bucket);
}

// PUT a Blob with upload progress (fetch has none); resolves to the JSON answer, rejects with an ApiError
function put(path, blob, contentType, onProgress, live) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    live.add(xhr);
    xhr.open("PUT", api.API + path);
    for (const [name, value] of Object.entries(api.authHeaders({"Content-Type": contentType}))) {
      xhr.setRequestHeader(name, value);
    }
    xhr.upload.addEventListener("progress", (event) => onProgress(event.loaded));
    xhr.addEventListener("load", () => {
      live.delete(xhr);
      let body = {};
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = {title: xhr.statusText};
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(blob.size);
        resolve(body);
      } else {
        reject(new api.ApiError(xhr.status, body));
      }
    });
    xhr.addEventListener("error", () => {
      live.delete(xhr);
      reject(new api.ApiError(0, {detail: "the connection to the server failed"}));
    });
    xhr.addEventListener("abort", () => {
      live.delete(xhr);
      reject(new api.ApiError(0, {detail: "the upload was cancelled"}));
    });
    xhr.send(blob);
  });
}

function retryable(error) {
  return error.status === 0 || error.status >= 500;
}

// Upload ``file`` to bucket/key; onProgress(sentBytes, totalBytes). Returns the object JSON.
// ``control.cancel()`` stops it (a multipart upload is then aborted on the server).
export async function upload(bucket, key, file, onProgress, control = {}) {
  const live = new Set();
  let cancelled = false;
  control.cancel = () => {
    cancelled = true;
    for (const xhr of live) xhr.abort();
  };
  const contentType = file.type || "application/octet-stream";
  const size = partSize();
  if (file.size <= size) {
    return put(bucketPath(bucket) + "/objects/" + encodeKey(key), file, contentType,
               (sent) => onProgress(sent, file.size), live);
  }
  const created = await api.post(bucketPath(bucket) + "/uploads", {key, content_type: contentType});
  const uploadPath = bucketPath(bucket) + "/uploads/" + encodeURIComponent(created.upload_id);
  const count = Math.ceil(file.size / size);
  const sent = new Array(count).fill(0);
  const parts = new Array(count);
  const report = () => onProgress(sent.reduce((a, b) => a + b, 0), file.size);
  let next = 0;
  let failure = null;
  async function worker() {
    while (next < count && failure === null && !cancelled) {
      const index = next;
      next += 1;
      const start = index * size;
      const blob = file.slice(start, Math.min(file.size, start + size));
      for (let attempt = 1; ; attempt += 1) {
        try {
          const part = await put(`${uploadPath}/parts/${index + 1}`, blob, "application/octet-stream",
                                 (n) => { sent[index] = n; report(); }, live);
          parts[index] = {part_number: index + 1, etag: part.etag};
          break;
        } catch (error) {
          sent[index] = 0;
          report();
          if (cancelled || attempt >= PART_ATTEMPTS || !retryable(error)) {
            failure = failure || error;
            for (const xhr of live) xhr.abort();
            return;
          }
        }
      }
    }
  }
  try {
    await Promise.all(Array.from({length: Math.min(PARALLEL_PARTS, count)}, worker));
    if (failure) throw failure;
    if (cancelled) throw new api.ApiError(0, {detail: "the upload was cancelled"});
    return await api.post(uploadPath + "/complete", {parts});
  } catch (error) {
    await api.del(uploadPath).catch(() => {});
    throw error;
  }
}

function save(href, filename) {
  const link = h("a", {href, download: filename, class: "visually-hidden"});
  document.body.appendChild(link);
  link.click();
  link.remove();
}

// a presigned link, so that the browser itself downloads (streamed to disk, resumable by the browser)
export async function presign(bucket, key, expiresIn) {
  return api.post(bucketPath(bucket) + "/objects/" + encodeKey(key) + "/presign", {expires_in: expiresIn});
}

export async function download(bucket, key) {
  const {url} = await presign(bucket, key, 300);
  save(url, key.split("/").pop() || key);
}

// every page of the read records of [since, until) as one CSV file; returns the number of records
export async function exportRecords(bucket, since, until) {
  const chunks = [];
  let cursor = null;
  let records = 0;
  do {
    const response = await api.call("GET", bucketPath(bucket) + "/read-records", {raw: true, query: {
      format: "csv", max_records: 1000, start_timestamp_us: since, end_timestamp_us: until, cursor}});
    const text = await response.text();
    const headerEnd = text.indexOf("\r\n") + 2;
    const rows = text.slice(headerEnd);
    chunks.push(chunks.length === 0 ? text : rows);
    // keys hold no control characters, so each record is one line
    records += rows.split("\r\n").length - 1;
    cursor = response.headers.get("X-Next-Cursor");
  } while (cursor);
  const url = URL.createObjectURL(new Blob(chunks, {type: "text/csv"}));
  save(url, `read-records-${bucket}.csv`);
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return records;
}
