// The worklist: GET /v1/reports in priority order (unreviewed urgent first, then the longest
// waiting) or newest first, filtered, cursor-paged, refreshed every ~3 s.

import { ApiError, listReports } from "./api.js";
import { $, el, formatTime, percent, showError, hideError } from "./dom.js";
import { className, reviewStateText } from "./labels.js";

const REFRESH_MS = 3000;
const PAGE_SIZE = 25;
const ORDER_HELP = {
  priority: "Unreviewed urgent results first, then the longest waiting.",
  newest: "Newest first.",
};

const state = {
  cursors: [null], // cursor of each page seen; the last one is the current page
  nextCursor: null,
  timer: null,
  controller: null,
  onOpen: () => {},
  running: false,
};

/** Local date "YYYY-MM-DD" -> ISO instant of that day's local midnight (+ days). */
function dayStart(value, plusDays = 0) {
  if (!value) return undefined;
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d + plusDays).toISOString();
}

function filters() {
  return {
    sort: $("#filter-sort").value,
    review_state: $("#filter-review").value,
    triage_level: $("#filter-triage").value,
    ood_decision: $("#filter-verdict").value,
    status: $("#filter-status").value,
    patient_ref: $("#filter-patient").value.trim(),
    since: dayStart($("#filter-from").value),
    until: dayStart($("#filter-to").value, 1), // the "to" day is included
  };
}

/** What the triage cell says: the level when there is one, else the job's state. */
export function triageOf(job) {
  const result = job.result;
  return (result && (result.triage_level || (result.prediction && result.prediction.triage_level))) || "";
}

function verdictOf(job) {
  const ood = job.result && job.result.ood;
  return ood ? ood.decision : "";
}

/** The review cell: the state, and the clinician's level once signed off. */
function reviewCell(job) {
  const result = job.result;
  if (!result || job.status !== "done") return el("td", { "data-testid": "row-review" }, "—");
  const state = result.review_state || "unreviewed";
  const review = result.review;
  return el("td", { "data-testid": "row-review" }, [
    el("span", {
      class: `pill review-pill review-${state}`,
      title: review ? `${review.triage_level}, by ${review.reviewer.name}` : null,
    }, reviewStateText(state)),
    // The clinician's level; phones show the state only (the report has the rest).
    review ? el("span", { class: "review-level opt-inline" }, ` ${review.triage_level}`) : null,
  ]);
}

function topClassText(prediction) {
  if (!prediction) return "—";
  const code = prediction.top_class;
  return `${className(prediction, code)} (${percent(prediction.probabilities[code])})`;
}

function row(job) {
  const triage = triageOf(job);
  const prediction = job.result && job.result.prediction;
  const meta = job.metadata || {};
  const label = triage || job.status;
  const reviewState = (job.result && job.status === "done" && job.result.review_state) || "";
  const tr = el("tr", {
    class: `row triage-${triage || "none"} status-${job.status}`,
    tabindex: "0",
    "data-testid": "worklist-row",
    "data-job-id": job.job_id,
    "data-triage": triage,
    "data-status": job.status,
    "data-review-state": reviewState,
    "aria-label": `${label} job created ${formatTime(job.created_at)}${reviewState ? `, ${reviewStateText(reviewState)}` : ""}`,
  }, [
    el("td", {}, [el("time", { datetime: job.created_at }, formatTime(job.created_at))]),
    el("td", {}, [el("span", { class: `pill pill-${triage || job.status}`, "data-testid": "row-triage" }, label)]),
    el("td", { class: "patient" }, meta.patient_ref || "—"),
    el("td", { class: "opt" }, meta.body_site || "—"),
    el("td", { class: "opt" }, topClassText(prediction)),
    reviewCell(job),
    el("td", { class: "opt", "data-testid": "row-verdict" }, verdictOf(job) || (job.error_code ? job.error_code : "—")),
    el("td", { class: "opt" }, job.status),
  ]);
  tr.addEventListener("click", () => state.onOpen(job.job_id));
  tr.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      state.onOpen(job.job_id);
    }
  });
  return tr;
}

function render(page) {
  const body = $("#worklist-body");
  const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("tr[data-job-id]");
  const focusedId = focused ? focused.dataset.jobId : null;
  body.replaceChildren(...page.items.map(row));
  if (focusedId) {
    const again = body.querySelector(`tr[data-job-id="${CSS.escape(focusedId)}"]`);
    if (again) again.focus({ preventScroll: true });
  }
  $("#worklist-empty").hidden = page.items.length > 0;
  state.nextCursor = page.next_cursor || null;
  $("#worklist-next").disabled = !state.nextCursor;
  $("#worklist-prev").disabled = state.cursors.length <= 1;
  $("#worklist-page").textContent = `page ${state.cursors.length}`;
  $("#worklist-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

/** Fetch the current page now (and keep refreshing). */
export async function refresh() {
  // Paused while another page (a lesion, the admin page) replaces the worklist.
  if (!state.running || $("#app").hidden) return;
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  try {
    const cursor = state.cursors[state.cursors.length - 1];
    const query = filters();
    const page = await listReports({ ...query, limit: PAGE_SIZE, cursor }, controller.signal);
    if (controller.signal.aborted) return;
    hideError($("#worklist-error"));
    render(page);
    // The patient the rows shown were fetched for (tests wait on it; the input may be ahead).
    $("#worklist-body").dataset.patient = query.patient_ref;
  } catch (exc) {
    if (exc && exc.name === "AbortError") return;
    if (exc instanceof ApiError && exc.code === "cursor.invalid") {
      state.cursors = [null];
    }
    showError($("#worklist-error"), exc);
  } finally {
    if (state.controller === controller) state.controller = null;
  }
}

/** With a patient ref in the filter, a link to that patient's lesions (where tracking starts). */
function showPatientLink() {
  const ref = $("#filter-patient").value.trim();
  $("#worklist-patient-link").setAttribute("href", ref ? `#/patients/${encodeURIComponent(ref)}` : "#/");
  $("#worklist-patient").hidden = !ref;
}

// The patient filter applies itself 300 ms after typing stops (or at once on Enter).
let typing = null;

function restartFromFirstPage() {
  // Whatever restarts the list also applies what was typed: no second restart 300 ms later,
  // which would throw a reader who has paged on back to the first page.
  clearTimeout(typing);
  typing = null;
  state.cursors = [null];
  $("#worklist-order").textContent = ORDER_HELP[$("#filter-sort").value] || "";
  refresh();
}

export function startWorklist(onOpen) {
  state.onOpen = onOpen;
  state.running = true;
  state.cursors = [null];
  refresh();
  clearInterval(state.timer);
  state.timer = setInterval(() => {
    if (!document.hidden) refresh();
  }, REFRESH_MS);
}

export function stopWorklist() {
  state.running = false;
  clearInterval(state.timer);
  state.timer = null;
  if (state.controller) state.controller.abort();
  $("#worklist-body").replaceChildren();
}

export function initWorklist() {
  for (const id of ["#filter-sort", "#filter-review", "#filter-triage", "#filter-verdict", "#filter-status", "#filter-from", "#filter-to"]) {
    $(id).addEventListener("change", restartFromFirstPage);
  }
  $("#filter-patient").addEventListener("input", () => {
    showPatientLink();
    clearTimeout(typing);
    typing = setTimeout(restartFromFirstPage, 300);
  });
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    restartFromFirstPage();
  });
  $("#worklist-next").addEventListener("click", () => {
    if (!state.nextCursor) return;
    state.cursors.push(state.nextCursor);
    refresh();
  });
  $("#worklist-prev").addEventListener("click", () => {
    if (state.cursors.length <= 1) return;
    state.cursors.pop();
    refresh();
  });
}
