// One job's report: image with heatmap overlay, probabilities, triage, conformal set, verdict,
// the suggested next step, the lesion it belongs to, and the clinician review (review.js).

import { getBlobUrl, getJob } from "./api.js";
import { $, el, fill, formatTime, percent, showError, hideError } from "./dom.js";
import { className } from "./labels.js";
import { renderReview, resetReview } from "./review.js";

const POLL_MS = 2000;
const FINISHED = new Set(["done", "rejected", "failed"]);
const DEFAULT_DISCLAIMER =
  "SkinTriage is decision support for trained clinicians, not a diagnosis. " +
  "Results must be interpreted together with a clinical examination.";

const state = { jobId: null, urls: [], poll: null, returnFocus: null, heatmapShown: true, generation: 0 };

function revokeUrls() {
  state.urls.forEach((url) => URL.revokeObjectURL(url));
  state.urls = [];
}

function applyHeatmapToggle() {
  const toggle = $("#heatmap-toggle");
  const heatmap = $("#report-heatmap");
  toggle.setAttribute("aria-pressed", String(state.heatmapShown));
  toggle.textContent = `Heatmap overlay: ${state.heatmapShown ? "on" : "off"}`;
  heatmap.hidden = !state.heatmapShown || !heatmap.dataset.loaded;
}

function field(label, value) {
  return el("div", { class: "kv" }, [el("span", { class: "k" }, label), el("span", { class: "v" }, value)]);
}

function renderTriage(job) {
  const box = $("#report-triage");
  const result = job.result;
  const prediction = result && result.prediction;
  const level = (result && result.triage_level) || (prediction && prediction.triage_level) || "";
  box.className = `triage-box triage-${level || "none"}`;
  box.dataset.triage = level;
  if (level && prediction) {
    box.replaceChildren(
      el("h3", {}, "Triage"),
      el("p", { class: "level" }, level),
      el("p", {}, `Malignant probability ${percent(prediction.malignant_probability)}; ` +
        `decided by threshold ${percent(prediction.triage_threshold)}`),
    );
  } else {
    const why = job.status === "rejected" ? "no triage level: the image was rejected"
      : job.status === "failed" ? `no triage level: the job failed${job.error_code ? ` (${job.error_code})` : ""}`
        : `no triage level yet (${job.status})`;
    box.replaceChildren(el("h3", {}, "Triage"), el("p", { class: "level" }, job.status), el("p", {}, why));
  }
}

function renderProbabilities(prediction) {
  const bars = $("#report-probabilities");
  if (!prediction) {
    bars.replaceChildren(el("p", { class: "muted" }, "No probabilities (no prediction is shown for this job)."));
    return;
  }
  const entries = Object.entries(prediction.probabilities).sort((a, b) => b[1] - a[1]);
  bars.replaceChildren(...entries.map(([code, p]) => {
    const fill = el("span", { class: "fill" });
    fill.style.setProperty("width", `${Math.max(0, Math.min(1, p)) * 100}%`);
    const inSet = prediction.conformal_set.includes(code);
    const name = className(prediction, code);
    return el("div", {
      class: `prob-bar${code === prediction.top_class ? " top" : ""}${inSet ? " in-set" : ""}`,
      "data-testid": "prob-bar",
      "data-class": code,
      role: "img",
      "aria-label": `${name} ${percent(p)}`,
    }, [
      el("span", { class: "name", title: name }, name),
      el("span", { class: "track" }, [fill]),
      el("span", { class: "pct" }, percent(p)),
    ]);
  }));
}

function renderConformal(prediction) {
  const node = $("#report-conformal");
  if (!prediction) {
    node.replaceChildren(el("h3", {}, "Plausible conditions"), el("p", { class: "muted" }, "—"));
    return;
  }
  node.replaceChildren(
    el("h3", {}, "Plausible conditions"),
    el("ul", { class: "chips" }, prediction.conformal_set.map((code) => el("li", { "data-class": code }, className(prediction, code)))),
    el("p", { class: "muted" }, `Conformal set at ${percent(prediction.conformal_coverage)} coverage`),
  );
}

function renderVerdict(job) {
  const node = $("#report-verdict");
  const ood = job.result && job.result.ood;
  if (!ood) {
    node.replaceChildren(el("h3", {}, "Verdict"), el("p", {}, FINISHED.has(job.status) ? "no OOD verdict recorded" : "pending"));
    node.dataset.decision = "";
    return;
  }
  node.dataset.decision = ood.decision;
  const thresholds = ood.thresholds || {};
  const scores = Object.entries(ood.scores || {}).map(([name, value]) => {
    // Thresholds carry their direction in the key: msp_min, mahalanobis_max, oe_max, quality.*.
    const limit = [name, `${name}_max`, `${name}_min`].map((key) => thresholds[key]).find((v) => typeof v === "number");
    const shown = typeof value === "number" ? value.toFixed(3) : String(value);
    return el("li", {}, `${name}: ${shown}${typeof limit === "number" ? ` (threshold ${limit.toFixed(3)})` : ""}`);
  });
  fill(
    node,
    el("h3", {}, "Verdict"),
    el("p", { class: `verdict verdict-${ood.decision}` }, ood.decision),
    ood.rule ? el("p", {}, `Rule: ${ood.rule}`) : null,
    ood.reasons && ood.reasons.length ? el("ul", { class: "reasons" }, ood.reasons.map((r) => el("li", {}, r))) : null,
    scores.length ? el("details", {}, [el("summary", {}, "Scores"), el("ul", { class: "scores" }, scores)]) : null,
  );
}

/** The suggested next step (for the clinician's level once signed off, else the model's). */
function renderNextStep(job) {
  const node = $("#report-next-step");
  const step = job.result && job.result.next_step;
  if (!step) {
    node.hidden = true;
    node.replaceChildren();
    return;
  }
  const signed = job.result.review_state && job.result.review_state !== "unreviewed";
  node.dataset.triage = step.triage_level;
  node.replaceChildren(
    el("h3", {}, "Suggested next step"),
    el("p", { class: "step-text" }, step.text),
    el("p", { class: "muted" }, `For ${signed ? "the clinician's" : "the model's"} triage level: ${step.triage_level}`),
  );
  node.hidden = false;
}

/** A link to the patient's lesions (the body map), where tracking a lesion starts. */
function patientLesionsLink(ref, text) {
  return el("a", { href: `#/patients/${encodeURIComponent(ref)}`, "data-testid": "report-patient-link" }, text);
}

/**
 * A link to the lesion this image belongs to (and to the patient's body map); an image of a
 * patient that names no lesion links to the patient's lesions, to start tracking one.
 */
function renderLesionLink(job) {
  const node = $("#report-lesion");
  const meta = job.metadata || {};
  if (!meta.lesion_id && meta.patient_ref) {
    fill(
      node,
      el("h3", {}, "Lesion"),
      el("p", { class: "muted" }, "This image is not linked to a tracked lesion."),
      el("p", {}, [patientLesionsLink(meta.patient_ref, "Patient's lesions"), " — follow a lesion of this patient over time"]),
    );
    node.hidden = false;
    return;
  }
  if (!meta.lesion_id) {
    node.hidden = true;
    node.replaceChildren();
    return;
  }
  fill(
    node,
    el("h3", {}, "Lesion"),
    el("p", {}, [
      el("a", { href: `#/lesions/${encodeURIComponent(meta.lesion_id)}`, "data-testid": "report-lesion-link" },
        "Open this lesion's timeline"),
    ]),
    meta.patient_ref ? el("p", {}, [patientLesionsLink(meta.patient_ref, "Patient's body map")]) : null,
  );
  node.hidden = false;
}

const CLINICAL_LABELS = { age: "age", sex: "sex", body_site: "body site" };

// Which clinical fields the model fused (format-2 bundles); nothing for an image-only model.
function clinicalUse(prediction) {
  if (!prediction || !Array.isArray(prediction.metadata_used)) return null;
  const used = prediction.metadata_used.map((name) => CLINICAL_LABELS[name] || name);
  return field("clinical data used", used.length ? used.join(", ") : "none (image only)");
}

function renderMeta(job) {
  const result = job.result;
  const model = result && result.model;
  fill(
    $("#report-model"),
    el("h3", {}, "Model"),
    model ? field("name", model.name) : field("model", "—"),
    model ? field("version", model.version) : null,
    clinicalUse(result && result.prediction),
  );
  const meta = job.metadata || {};
  fill(
    $("#report-timestamps"),
    el("h3", {}, "Job"),
    field("job id", job.job_id),
    field("status", job.status),
    meta.patient_ref ? field("patient ref", meta.patient_ref) : null,
    meta.body_site ? field("body site", meta.body_site) : null,
    meta.age !== null && meta.age !== undefined ? field("age", String(meta.age)) : null,
    meta.sex ? field("sex", meta.sex) : null,
    job.submitted_by ? field("submitted by", job.submitted_by.name) : null,
    field("created", formatTime(job.created_at)),
    field("updated", formatTime(job.updated_at)),
    result ? field("completed", formatTime(result.completed_at)) : null,
  );
  $("#report-disclaimer").textContent = (result && result.disclaimer) || DEFAULT_DISCLAIMER;
}

async function loadImages(job, generation) {
  const image = $("#report-image");
  const heatmap = $("#report-heatmap");
  if (!image.dataset.loaded) {
    try {
      const url = await getBlobUrl(`/v1/jobs/${encodeURIComponent(job.job_id)}/image`);
      if (generation !== state.generation) return URL.revokeObjectURL(url);
      state.urls.push(url);
      image.src = url;
      image.dataset.loaded = "1";
    } catch (exc) {
      showError($("#report-error"), exc);
    }
  }
  if (!heatmap.dataset.loaded && job.result && job.result.has_heatmap) {
    try {
      const url = await getBlobUrl(`/v1/jobs/${encodeURIComponent(job.job_id)}/heatmap.png`);
      if (generation !== state.generation) return URL.revokeObjectURL(url);
      state.urls.push(url);
      heatmap.src = url;
      heatmap.dataset.loaded = "1";
      $("#heatmap-toggle").disabled = false;
      applyHeatmapToggle();
    } catch (exc) {
      showError($("#report-error"), exc);
    }
  }
}

async function load(jobId, generation) {
  try {
    const job = await getJob(jobId);
    if (generation !== state.generation) return;
    hideError($("#report-error"));
    $("#report-view").dataset.status = job.status;
    $("#report-status").textContent = FINISHED.has(job.status) ? "" : `Job is ${job.status}; this view updates itself.`;
    renderTriage(job);
    renderVerdict(job);
    renderProbabilities(job.result && job.result.prediction);
    renderConformal(job.result && job.result.prediction);
    renderMeta(job);
    renderNextStep(job);
    renderLesionLink(job);
    renderReview(job, () => reloadReport(generation));
    await loadImages(job, generation);
    if (!FINISHED.has(job.status) && generation === state.generation) {
      state.poll = setTimeout(() => load(jobId, generation), POLL_MS);
    }
  } catch (exc) {
    if (generation === state.generation) showError($("#report-error"), exc);
  }
}

/** Fetch the job again after a review was added (images stay as they are). */
function reloadReport(generation) {
  if (generation !== state.generation || !state.jobId) return;
  clearTimeout(state.poll);
  load(state.jobId, generation);
}

function reset() {
  state.generation += 1;
  resetReview();
  clearTimeout(state.poll);
  revokeUrls();
  for (const id of ["#report-image", "#report-heatmap"]) {
    const img = $(id);
    img.removeAttribute("src");
    delete img.dataset.loaded;
  }
  $("#heatmap-toggle").disabled = true;
  applyHeatmapToggle();
  hideError($("#report-error"));
  for (const id of ["#report-triage", "#report-verdict", "#report-probabilities", "#report-conformal", "#report-model", "#report-timestamps"]) {
    $(id).replaceChildren();
  }
  for (const id of ["#report-next-step", "#report-lesion"]) {
    $(id).replaceChildren();
    $(id).hidden = true;
  }
  $("#report-status").textContent = "Loading…";
  $("#report-disclaimer").textContent = DEFAULT_DISCLAIMER;
}

export function openReport(jobId) {
  if (state.jobId !== jobId || $("#report-view").hidden) {
    if ($("#report-view").hidden) state.returnFocus = document.activeElement;
    reset();
    state.jobId = jobId;
    $("#report-view").dataset.jobId = jobId;
    $("#report-title").textContent = `Report ${jobId.slice(0, 8)}`;
    $("#report-view").hidden = false;
    document.body.classList.add("report-open");
    $("#report-close").focus();
    load(jobId, state.generation);
  }
}

export function closeReport() {
  if ($("#report-view").hidden) return;
  const closedId = state.jobId;
  reset();
  state.jobId = null;
  $("#report-view").hidden = true;
  document.body.classList.remove("report-open");
  const back = state.returnFocus;
  state.returnFocus = null;
  // The worklist re-renders every few seconds: find the row of this job again.
  const row = closedId && document.querySelector(`#worklist-body tr[data-job-id="${CSS.escape(closedId)}"]`);
  if (row) row.focus();
  else if (back && document.contains(back)) back.focus();
}

export function initReport(requestClose) {
  $("#report-close").addEventListener("click", requestClose);
  $("#report-view").addEventListener("keydown", (event) => {
    if (event.key === "Escape") requestClose();
  });
  $("#report-view").addEventListener("click", (event) => {
    if (event.target === $("#report-view")) requestClose(); // the backdrop
  });
  $("#heatmap-toggle").addEventListener("click", () => {
    state.heatmapShown = !state.heatmapShown;
    applyHeatmapToggle();
  });
}
