// Submitting: one file -> POST /v1/images; many -> POST /v1/batches, then follow the batch.

import { getBatch, submitBatch, submitImage } from "./api.js";
import { $, el, showError, hideError } from "./dom.js";

/** How often a submission's progress is asked for (a batch here, a lesion's new image in lesions.js). */
export const BATCH_POLL_MS = 1500;

let batchTimer = null;
let selection = null; // the upload form's files: picked or dropped (see fileDrop)

/** The optional metadata fields shared by uploads and camera captures. */
export function metadataFields() {
  return {
    patient_ref: $("#field-patient").value,
    body_site: $("#field-site").value,
    age: $("#field-age").value,
    sex: $("#field-sex").value,
  };
}

/**
 * Let `zone` take image files dropped on it for the file `input` (a single-file input keeps the
 * first). `onChange` runs whenever the selection changes. Returns {files(), clear()}: the files
 * picked or dropped, and a reset.
 */
export function fileDrop(zone, input, onChange) {
  let dropped = null; // files dropped on the zone (the input cannot always be set programmatically)
  input.addEventListener("change", () => {
    dropped = null;
    onChange();
  });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "dragend"]) zone.addEventListener(name, () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    let files = Array.from((event.dataTransfer && event.dataTransfer.files) || []).filter(
      (file) => !file.type || file.type.startsWith("image/"),
    );
    if (!input.multiple) files = files.slice(0, 1);
    if (!files.length) return;
    try {
      const transfer = new DataTransfer();
      files.forEach((file) => transfer.items.add(file));
      input.files = transfer.files;
      dropped = null;
    } catch {
      dropped = files; // browsers without a DataTransfer constructor
    }
    onChange();
  });
  return {
    files: () => (input.files && input.files.length ? Array.from(input.files) : dropped || []),
    clear: () => {
      input.value = "";
      dropped = null;
      onChange();
    },
  };
}

function selectedFiles() {
  return selection ? selection.files() : [];
}

function describeSelection() {
  const files = selectedFiles();
  $("#upload-selected").textContent = files.length ? `${files.length} file${files.length === 1 ? "" : "s"} selected` : "";
}

/** Show the accepted job with a link that opens its report. */
export function showJobResult(jobId, prefix = "Submitted") {
  const node = $("#upload-result");
  node.replaceChildren(
    `${prefix}: job `,
    el("code", { "data-testid": "upload-job-id" }, jobId),
    " — ",
    el("a", { href: `#/jobs/${encodeURIComponent(jobId)}`, "data-testid": "upload-report-link" }, "open report"),
  );
  node.dataset.jobId = jobId;
  node.hidden = false;
}

function stopBatch() {
  clearTimeout(batchTimer);
  batchTimer = null;
}

function renderBatchCounts(counts) {
  const finished = counts.done + counts.rejected + counts.failed;
  const progress = $("#batch-progress");
  progress.max = Math.max(1, counts.total);
  progress.value = finished;
  $("#batch-progress-text").textContent = `${finished}/${counts.total}`;
  $("#batch-summary").textContent =
    `done ${counts.done} · rejected ${counts.rejected} · failed ${counts.failed} · queued ${counts.queued} · running ${counts.running}`;
  return counts.total > 0 && finished >= counts.total;
}

async function followBatch(batchId) {
  try {
    const batch = await getBatch(batchId);
    const complete = renderBatchCounts(batch.counts);
    if (!complete) batchTimer = setTimeout(() => followBatch(batchId), BATCH_POLL_MS);
    else $("#batch").dataset.complete = "true";
  } catch (exc) {
    showError($("#upload-error"), exc);
    batchTimer = setTimeout(() => followBatch(batchId), BATCH_POLL_MS * 2);
  }
}

function showRejectedItems(rejected) {
  if (!rejected.length) return;
  const node = $("#upload-error");
  node.replaceChildren(
    `${rejected.length} file${rejected.length === 1 ? " was" : "s were"} not accepted:`,
    el("ul", {}, rejected.map((item) =>
      el("li", { "data-code": item.error.code }, `${item.filename || `#${item.index}`}: ${item.error.code}`))),
  );
  node.dataset.code = rejected[0].error.code;
  node.hidden = false;
}

async function onSubmit(event) {
  event.preventDefault();
  const files = selectedFiles();
  const button = $("#upload-submit");
  hideError($("#upload-error"));
  $("#upload-result").hidden = true;
  if (!files.length) {
    $("#upload-error").hidden = false;
    $("#upload-error").textContent = "client.no_file: choose at least one image";
    $("#upload-error").dataset.code = "client.no_file";
    return;
  }
  stopBatch();
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    if (files.length === 1) {
      $("#batch").hidden = true;
      const accepted = await submitImage(files[0], metadataFields());
      showJobResult(accepted.job_id);
    } else {
      const accepted = await submitBatch(files, metadataFields());
      const batch = $("#batch");
      batch.hidden = false;
      batch.dataset.batchId = accepted.batch_id;
      delete batch.dataset.complete;
      renderBatchCounts({ total: accepted.accepted, done: 0, rejected: 0, failed: 0, queued: accepted.accepted, running: 0 });
      showRejectedItems(accepted.rejected || []);
      followBatch(accepted.batch_id);
    }
    selection.clear();
  } catch (exc) {
    showError($("#upload-error"), exc);
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

export function resetUpload() {
  stopBatch();
  $("#batch").hidden = true;
  $("#upload-result").hidden = true;
  hideError($("#upload-error"));
}

export function initUpload() {
  $("#upload-form").addEventListener("submit", onSubmit);
  selection = fileDrop($("#upload-dropzone"), $("#upload-input"), describeSelection);
}
