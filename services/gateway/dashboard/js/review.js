// The clinician review of a report: its versioned history (GET /v1/jobs/{id}/reviews) for everyone,
// and for clinicians the sign-off form (POST .../reviews): confirm or override the triage level, a
// working diagnosis, a note, and later a confirmed diagnosis with its basis. Each sign-off names
// the version it was based on (`expected_version`), so two clinicians cannot silently overwrite
// each other: the API answers 409 review.conflict and the history is shown again.

import { ApiError, createReview, listReviews } from "./api.js";
import { $, el, formatTime, showError, hideError } from "./dom.js";
import { BASES, classesOf, diagnosisText, reviewStateText } from "./labels.js";
import { isClinician } from "./session.js";

const OTHER = "__other__"; // the diagnosis <select> value for "free text"

const state = {
  job: null,
  formFor: null, // the job id the form was filled for (kept while the same report is shown)
  latestVersion: 0,
  generation: 0,
  onChanged: () => {},
  busy: false,
};

function levelOf(job) {
  const result = job.result;
  return (result && (result.triage_level || (result.prediction && result.prediction.triage_level))) || "";
}

function reviewable(job) {
  return Boolean(job && job.status === "done" && job.result && job.result.prediction);
}

function historyItem(review) {
  const agreement = review.agrees_with_model
    ? "confirms the model's level"
    : `overrides the model's level (${review.model_triage_level})`;
  const confirmed = review.confirmed_diagnosis;
  let confirmedText = null;
  if (confirmed) {
    const malignancy = confirmed.malignant === true ? "malignant" : confirmed.malignant === false ? "benign" : "malignancy unknown";
    confirmedText = `${diagnosisText(confirmed)} (${BASES[confirmed.basis] || confirmed.basis}; ${malignancy})`;
  }
  return el("li", {
    class: "review-item",
    "data-testid": "review-item",
    "data-version": review.version,
    "data-triage": review.triage_level,
  }, [
    el("p", { class: "review-head" }, [
      el("strong", {}, `Version ${review.version}`),
      ` · ${review.reviewer ? review.reviewer.name : "unknown"} · `,
      el("time", { datetime: review.created_at }, formatTime(review.created_at)),
    ]),
    el("p", {}, [el("span", { class: `pill pill-${review.triage_level}` }, review.triage_level), ` ${agreement}`]),
    review.working_diagnosis ? el("p", {}, `Working diagnosis: ${diagnosisText(review.working_diagnosis)}`) : null,
    review.note ? el("p", { class: "review-note" }, `Note: ${review.note}`) : null,
    confirmedText ? el("p", { "data-testid": "review-confirmed-diagnosis" }, `Confirmed diagnosis: ${confirmedText}`) : null,
  ]);
}

function renderHistory(items) {
  const list = $("#review-history");
  list.replaceChildren(...items.map(historyItem));
  $("#review-history-empty").hidden = items.length > 0;
  state.latestVersion = items.reduce((max, review) => Math.max(max, review.version), 0);
  const version = $("#review-version");
  version.dataset.expectedVersion = String(state.latestVersion);
  version.textContent = state.latestVersion
    ? `Your sign-off becomes version ${state.latestVersion + 1}, based on version ${state.latestVersion} above.`
    : "Your sign-off becomes version 1.";
}

function renderState(job) {
  const pill = $("#report-review-state");
  const reviewState = job.result.review_state || "unreviewed";
  pill.className = `pill review-${reviewState}`;
  pill.dataset.state = reviewState;
  pill.textContent = reviewStateText(reviewState);
}

function diagnosisOptions(select, prediction, noneLabel) {
  select.replaceChildren(
    el("option", { value: "" }, noneLabel),
    ...classesOf(prediction).map(([code, name]) => el("option", { value: code }, name)),
    el("option", { value: OTHER }, "Other (free text)"),
  );
}

/** Choose a diagnosis ({code, text}) in a select + free-text pair. */
function setDiagnosis(select, text, diagnosis) {
  if (diagnosis && diagnosis.code) {
    select.value = diagnosis.code;
    text.value = "";
  } else if (diagnosis && diagnosis.text) {
    select.value = OTHER;
    text.value = diagnosis.text;
  } else {
    select.value = "";
    text.value = "";
  }
}

function syncFreeText() {
  const working = $("#review-diagnosis").value === OTHER;
  $("#review-diagnosis-text-label").hidden = !working;
  $("#review-diagnosis-text").required = working;
  const confirmedCode = $("#review-confirmed").value;
  const confirmedOther = confirmedCode === OTHER;
  $("#review-confirmed-text-label").hidden = !confirmedOther;
  $("#review-confirmed-text").required = confirmedOther;
  // The API derives malignancy from a model class; free text needs the clinician to say.
  $("#review-malignant-label").hidden = !confirmedOther;
  $("#review-malignant").required = confirmedOther;
}

function chosenLevel() {
  const checked = document.querySelector('input[name="review-triage"]:checked');
  return checked ? checked.value : "";
}

function syncAgreement() {
  const model = state.job ? levelOf(state.job) : "";
  const chosen = chosenLevel();
  const node = $("#review-agreement");
  node.textContent = !chosen ? "" : chosen === model ? "Confirms the model's level." : `Overrides the model's level (${model}).`;
  node.dataset.agrees = String(chosen === model);
}

/** Fill the form for this job: the latest review's choices, else the model's level. */
function fillForm(job, latest) {
  const prediction = job.result.prediction;
  diagnosisOptions($("#review-diagnosis"), prediction, "none yet");
  diagnosisOptions($("#review-confirmed"), prediction, "not confirmed");
  const level = latest ? latest.triage_level : levelOf(job);
  for (const radio of document.querySelectorAll('input[name="review-triage"]')) radio.checked = radio.value === level;
  $("#review-model-level").textContent = `(model: ${levelOf(job)})`;
  setDiagnosis($("#review-diagnosis"), $("#review-diagnosis-text"), latest && latest.working_diagnosis);
  const confirmed = latest && latest.confirmed_diagnosis;
  setDiagnosis($("#review-confirmed"), $("#review-confirmed-text"), confirmed);
  $("#review-basis").value = confirmed ? confirmed.basis : "histopathology";
  $("#review-malignant").value = confirmed && !confirmed.code && typeof confirmed.malignant === "boolean" ? String(confirmed.malignant) : "";
  $("#review-confirmed-box").open = Boolean(confirmed);
  $("#review-note").value = "";
  syncFreeText();
  syncAgreement();
}

function diagnosisFrom(select, text) {
  if (select.value === OTHER) return { code: null, text: text.value.trim() };
  if (select.value) return { code: select.value, text: null };
  return null;
}

function payload() {
  const confirmedSelect = $("#review-confirmed");
  let confirmed = diagnosisFrom(confirmedSelect, $("#review-confirmed-text"));
  if (confirmed) {
    const malignant = $("#review-malignant").value;
    confirmed = {
      ...confirmed,
      basis: $("#review-basis").value,
      malignant: confirmedSelect.value === OTHER && malignant ? malignant === "true" : null,
    };
  }
  const note = $("#review-note").value.trim();
  return {
    triage_level: chosenLevel(),
    working_diagnosis: diagnosisFrom($("#review-diagnosis"), $("#review-diagnosis-text")),
    note: note || null,
    confirmed_diagnosis: confirmed,
    expected_version: state.latestVersion,
  };
}

function conflictMessage(exc) {
  // The code stays visible (support and docs refer to it); the sentence says what to do.
  const node = $("#review-error");
  node.replaceChildren(
    el("strong", {}, "Someone else signed off this result while you had it open. "),
    "The history above now shows their review; check it, then sign off again if you still disagree. ",
    el("code", {}, exc.code),
  );
  node.dataset.code = exc.code;
  node.hidden = false;
}

async function onSubmit(event) {
  event.preventDefault();
  if (state.busy || !state.job) return;
  const job = state.job;
  hideError($("#review-error"));
  $("#review-done").hidden = true;
  const body = payload();
  if (!body.triage_level) {
    showError($("#review-error"), new ApiError(0, "review.level_missing", "choose a triage level"));
    return;
  }
  state.busy = true;
  $("#review-submit").disabled = true;
  try {
    const review = await createReview(job.job_id, body);
    if (!state.job || state.job.job_id !== job.job_id) return;
    const done = $("#review-done");
    done.textContent = `Signed off: version ${review.version}, ${review.triage_level}.`;
    done.dataset.version = String(review.version);
    done.hidden = false;
    state.formFor = null; // refill from the new latest version
    state.onChanged();
  } catch (exc) {
    if (!state.job || state.job.job_id !== job.job_id) return;
    if (exc instanceof ApiError && exc.code === "review.conflict") {
      conflictMessage(exc);
      state.onChanged(); // show the newer version; the form keeps what was typed
    } else {
      showError($("#review-error"), exc);
    }
  } finally {
    state.busy = false;
    $("#review-submit").disabled = false;
  }
}

/** Show the review part of a report: history for every role, the form for clinicians. */
export async function renderReview(job, onChanged) {
  const section = $("#report-review");
  if (!reviewable(job)) {
    section.hidden = true;
    return;
  }
  state.onChanged = onChanged;
  state.job = job;
  const generation = state.generation;
  section.hidden = false;
  renderState(job);
  const clinician = isClinician();
  $("#review-readonly").hidden = clinician;
  try {
    const page = await listReviews(job.job_id);
    if (generation !== state.generation) return;
    renderHistory(page.items);
    if (clinician && state.formFor !== job.job_id) {
      fillForm(job, page.items[page.items.length - 1] || null);
      state.formFor = job.job_id;
    }
    $("#review-form").hidden = !clinician;
  } catch (exc) {
    if (generation === state.generation) showError($("#report-error"), exc);
  }
}

/** Forget the shown report (closed, or another one opened). */
export function resetReview() {
  state.generation += 1;
  state.job = null;
  state.formFor = null;
  state.latestVersion = 0;
  $("#report-review").hidden = true;
  $("#review-form").hidden = true;
  $("#review-history").replaceChildren();
  $("#review-history-empty").hidden = true;
  hideError($("#review-error"));
  $("#review-done").hidden = true;
}

export function initReview() {
  $("#review-form").addEventListener("submit", onSubmit);
  $("#review-diagnosis").addEventListener("change", syncFreeText);
  $("#review-confirmed").addEventListener("change", syncFreeText);
  for (const radio of document.querySelectorAll('input[name="review-triage"]')) {
    radio.addEventListener("change", syncAgreement);
  }
}
