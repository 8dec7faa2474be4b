// Longitudinal lesions: `#/lesions/<id>` shows one lesion's images side by side, oldest first, with
// the change between consecutive images, and takes a new image of it; `#/patients/<ref>` shows the
// patient's lesions on a body map (front and back) linking to their timelines, and starts tracking
// a new lesion at a position chosen on the map.

import { createLesion, getBlobUrl, getLesion, listLesions, submitImage } from "./api.js";
import { $, el, fill, formatTime, percent, showError, hideError } from "./dom.js";
import { BODY_BOX, bodyView, positionMarker } from "./svg.js";
import { BATCH_POLL_MS, fileDrop } from "./upload.js";

const FINISHED = new Set(["done", "rejected", "failed"]);
// Arrow keys move the position being chosen on an outline: a fine step, and a coarse one with Shift.
const KEY_STEP = 0.01;
const KEY_STEP_COARSE = 0.05;
const KEY_MOVES = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

const state = {
  generation: 0,
  // job id -> Promise of a blob: URL of its image. Kept while the page shows, so the timeline can
  // be redrawn while a new image is analysed without fetching (and auditing) every image again.
  thumbs: new Map(),
  lesion: null, // the LesionView the timeline shows (its patient_ref goes with a new image)
  follow: null, // {jobId, timer, scrolled}: a new image of this lesion being analysed
  patientRef: null,
  lesions: [], // the patient's LesionViews on the body map, oldest first
  placing: false, // the "Add lesion" form is open: a click on an outline chooses the position
  position: null, // {view, x, y} chosen for the new lesion
};

let imageSelection = null; // the "Add image" form's file (picked or dropped)

function revokeUrls() {
  for (const pending of state.thumbs.values()) pending.then((url) => URL.revokeObjectURL(url), () => {});
  state.thumbs = new Map();
}

function formatDate(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleDateString();
}

function lesionName(lesion) {
  return lesion.label || lesion.body_site || `lesion ${lesion.lesion_id.slice(0, 8)}`;
}

function siteText(lesion) {
  const parts = [lesion.body_site, lesion.laterality].filter(Boolean);
  return parts.length ? parts.join(", ") : "site not recorded";
}

function patientLink(ref, testId) {
  return el("a", { href: `#/patients/${encodeURIComponent(ref)}`, "data-testid": testId }, ref);
}

function kv(label, value, attrs = {}) {
  return el("div", { class: "kv", ...attrs }, [el("span", { class: "k" }, label), el("span", { class: "v" }, value)]);
}

function signedPoints(delta) {
  if (typeof delta !== "number") return "—";
  const points = delta * 100;
  return `${points >= 0 ? "+" : "−"}${Math.abs(points).toFixed(1)} points`;
}

function relativeChange(value) {
  if (typeof value !== "number") return "—";
  return `${value >= 0 ? "+" : "−"}${Math.abs(value * 100).toFixed(0)}%`;
}

function imageCard(image, index) {
  const thumb = el("img", { class: "thumb", alt: `Image ${index + 1} of this lesion, ${formatDate(image.created_at)}`, "data-testid": "lesion-thumb" });
  const level = image.triage_level;
  const card = el("article", {
    class: `timeline-image triage-${level || "none"}`,
    role: "listitem",
    "data-testid": "lesion-image",
    "data-job-id": image.job_id,
    "data-index": index,
    "data-created-at": image.created_at,
  }, [
    el("div", { class: "thumb-wrap" }, [thumb]),
    el("p", { class: "timeline-date" }, [el("time", { datetime: image.created_at }, formatDate(image.created_at))]),
    el("p", {}, [el("span", { class: `pill pill-${level || image.status}`, "data-testid": "lesion-image-triage" }, level || image.status)]),
    kv("P(malignant)", percent(image.malignant_probability), { "data-testid": "lesion-image-pmal" }),
    kv("lesion area", percent(image.lesion_area_fraction), { "data-testid": "lesion-image-area" }),
    image.top_class_display_name ? kv("top class", image.top_class_display_name) : null,
    el("p", {}, [el("a", { href: `#/jobs/${encodeURIComponent(image.job_id)}`, "data-testid": "lesion-image-report" }, "Open report")]),
  ]);
  return { card, thumb };
}

const FLAG_LABELS = {
  malignancy_changed: "P(malignant) changed",
  appearance_changed: "appearance changed",
  size_changed: "size changed",
};

function flagItem(name, value, detail) {
  const verdict = value === true ? "yes" : value === false ? "no" : "not assessed";
  return el("li", { class: `flag flag-${value === true ? "on" : value === false ? "off" : "unknown"}`, "data-flag": name, "data-value": String(value) },
    `${FLAG_LABELS[name]}: ${verdict}${detail ? ` (${detail})` : ""}`);
}

function changeCard(change) {
  const flags = change.flags || {};
  const pmal = change.malignant_probability || {};
  const area = change.area;
  const distance = typeof change.embedding_distance === "number" ? `distance ${change.embedding_distance.toFixed(3)}` : "";
  const days = typeof change.interval_days === "number" ? `${Math.round(change.interval_days)} days` : "";
  // Without calibrated thresholds (or measurements) the flags are null: say so, never "no change".
  const assessed = Object.keys(FLAG_LABELS).some((name) => typeof flags[name] === "boolean");
  const verdict = flags.changed ? "Changed" : assessed ? "No change detected" : "Change not assessed";
  return el("aside", {
    class: `timeline-change${flags.changed ? " changed" : ""}`,
    role: "listitem",
    "data-testid": "lesion-change",
    "data-from": change.from_job_id,
    "data-to": change.to_job_id,
    "data-changed": String(Boolean(flags.changed)),
  }, [
    el("p", { class: "change-verdict", "data-testid": "lesion-change-verdict" }, verdict),
    days ? el("p", { class: "muted" }, `over ${days}`) : null,
    el("ul", { class: "flags" }, [
      flagItem("malignancy_changed", flags.malignancy_changed,
        `${percent(pmal.from)} → ${percent(pmal.to)}, ${signedPoints(pmal.delta)}`),
      flagItem("appearance_changed", flags.appearance_changed, distance),
      flagItem("size_changed", flags.size_changed,
        area ? `${percent(area.from)} → ${percent(area.to)}, ${relativeChange(area.relative_change)}` : ""),
    ]),
    change.notes && change.notes.length ? el("ul", { class: "notes muted" }, change.notes.map((note) => el("li", {}, note))) : null,
  ]);
}

/** The blob: URL of a job's image, fetched once per page (a failed fetch is tried again later). */
function thumbUrl(jobId) {
  let pending = state.thumbs.get(jobId);
  if (!pending) {
    const thumbs = state.thumbs;
    pending = getBlobUrl(`/v1/jobs/${encodeURIComponent(jobId)}/image`);
    thumbs.set(jobId, pending);
    pending.catch(() => {
      if (thumbs.get(jobId) === pending) thumbs.delete(jobId);
    });
  }
  return pending;
}

async function loadThumb(jobId, thumb, generation) {
  try {
    const url = await thumbUrl(jobId);
    if (generation === state.generation) thumb.src = url;
  } catch (exc) {
    if (generation === state.generation) showError($("#lesion-error"), exc);
  }
}

function renderLesion(data, generation) {
  const lesion = data.lesion;
  $("#lesion-title").textContent = `Lesion: ${lesionName(lesion)}`;
  $("#lesion-view").dataset.lesionId = lesion.lesion_id;
  fill(
    $("#lesion-summary"),
    kv("patient", patientLink(lesion.patient_ref, "lesion-patient-link")),
    kv("site", siteText(lesion)),
    lesion.body_map ? kv("body map", `${lesion.body_map.view} view`) : null,
    kv("images", String(lesion.image_count)),
    kv("recorded", formatTime(lesion.created_at)),
  );
  // A change sits just before the image it leads to (changes join consecutive *done* images).
  const changesTo = new Map((data.changes || []).map((change) => [change.to_job_id, change]));
  const nodes = [];
  data.images.forEach((image, index) => {
    const change = changesTo.get(image.job_id);
    if (change) nodes.push(changeCard(change));
    const { card, thumb } = imageCard(image, index);
    nodes.push(card);
    loadThumb(image.job_id, thumb, generation);
  });
  $("#lesion-timeline").replaceChildren(...nodes);
  $("#lesion-empty").hidden = data.images.length > 0;
  state.lesion = lesion;
  $("#lesion-image-submit").disabled = false;
  // Bring a new image into view once (the timeline scrolls sideways; the newest is last).
  const follow = state.follow;
  if (follow && !follow.scrolled) {
    const card = nodes.find((node) => node.dataset && node.dataset.jobId === follow.jobId);
    if (card) {
      card.scrollIntoView({ block: "nearest", inline: "nearest" });
      follow.scrolled = true;
    }
  }
}

// -- Adding an image to the lesion: POST /v1/images naming the lesion, then follow the new job on
// the timeline until it is finished (polled like a batch in upload.js).

function stopFollowing() {
  if (state.follow) clearTimeout(state.follow.timer);
  state.follow = null;
}

function describeSelectedImage() {
  const files = imageSelection ? imageSelection.files() : [];
  $("#lesion-image-selected").textContent = files.length ? `${files[0].name || "image"} selected` : "";
}

/** What the status line says about the new image: its job's progress and, once done, its level. */
function describeFollowed(jobId, image) {
  const node = $("#lesion-image-status");
  const status = image ? image.status : "queued";
  const reportLink = el("a", { href: `#/jobs/${encodeURIComponent(jobId)}`, "data-testid": "lesion-image-status-report" }, "open its report");
  node.dataset.jobId = jobId;
  node.dataset.status = status;
  if (status === "done") {
    node.replaceChildren(`Image added: triage level ${image.triage_level || "not given"} — `, reportLink, ".");
  } else if (status === "rejected") {
    node.replaceChildren("Image added but not analysed (rejected) — ", reportLink, " says why.");
  } else if (status === "failed") {
    node.replaceChildren("Image added but its analysis failed — ", reportLink, ".");
  } else {
    node.replaceChildren(`Image submitted, ${status}; the timeline updates itself.`);
  }
  node.hidden = false;
}

async function followImage(generation) {
  const follow = state.follow;
  if (!follow || generation !== state.generation || !state.lesion) return;
  try {
    const data = await getLesion(state.lesion.lesion_id);
    if (generation !== state.generation || state.follow !== follow) return;
    hideError($("#lesion-error"));
    renderLesion(data, generation);
    const image = data.images.find((item) => item.job_id === follow.jobId);
    describeFollowed(follow.jobId, image);
    if (image && FINISHED.has(image.status)) state.follow = null;
    else follow.timer = setTimeout(() => followImage(generation), BATCH_POLL_MS);
  } catch (exc) {
    if (generation !== state.generation || state.follow !== follow) return;
    showError($("#lesion-error"), exc);
    follow.timer = setTimeout(() => followImage(generation), BATCH_POLL_MS * 2);
  }
}

async function onAddImage(event) {
  event.preventDefault();
  const generation = state.generation;
  const lesion = state.lesion;
  const error = $("#lesion-image-error");
  const status = $("#lesion-image-status");
  hideError(error);
  if (!lesion) return;
  const files = imageSelection.files();
  if (!files.length) {
    error.textContent = "client.no_file: choose an image of this lesion";
    error.dataset.code = "client.no_file";
    error.hidden = false;
    return;
  }
  stopFollowing();
  const button = $("#lesion-image-submit");
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  status.dataset.status = "uploading";
  delete status.dataset.jobId;
  status.textContent = "Uploading…";
  status.hidden = false;
  try {
    const accepted = await submitImage(files[0], { lesion_id: lesion.lesion_id, patient_ref: lesion.patient_ref });
    if (generation !== state.generation) return;
    imageSelection.clear();
    state.follow = { jobId: accepted.job_id, timer: null, scrolled: false };
    describeFollowed(accepted.job_id, null);
    followImage(generation);
  } catch (exc) {
    if (generation !== state.generation) return;
    status.hidden = true;
    status.textContent = "";
    delete status.dataset.status;
    showError(error, exc);
  } finally {
    button.disabled = !state.lesion;
    button.removeAttribute("aria-busy");
  }
}

function resetImageForm() {
  stopFollowing();
  if (imageSelection) imageSelection.clear();
  const status = $("#lesion-image-status");
  status.hidden = true;
  status.textContent = "";
  delete status.dataset.status;
  delete status.dataset.jobId;
  hideError($("#lesion-image-error"));
  $("#lesion-image-submit").disabled = true;
}

/** Show `#/lesions/<id>`. */
export async function showLesion(lesionId) {
  leaveLesions();
  const generation = state.generation;
  $("#lesion-view").hidden = false;
  $("#lesion-title").textContent = "Lesion";
  try {
    const data = await getLesion(lesionId);
    if (generation !== state.generation) return;
    renderLesion(data, generation);
  } catch (exc) {
    if (generation === state.generation) showError($("#lesion-error"), exc);
  }
}

function renderPatient(ref, lesions) {
  const dots = { front: [], back: [] };
  for (const lesion of lesions) {
    const position = lesion.body_map;
    if (!position || !dots[position.view]) continue;
    dots[position.view].push({
      x: position.x,
      y: position.y,
      id: lesion.lesion_id,
      href: `#/lesions/${encodeURIComponent(lesion.lesion_id)}`,
      label: `${lesionName(lesion)} (${siteText(lesion)}), ${lesion.image_count} image${lesion.image_count === 1 ? "" : "s"}`,
    });
  }
  $("#body-map").replaceChildren(bodyView("front", dots.front), bodyView("back", dots.back));
  applyPlacing();
  $("#patient-lesions").replaceChildren(...lesions.map((lesion) => el("li", { "data-lesion-id": lesion.lesion_id }, [
    el("a", { href: `#/lesions/${encodeURIComponent(lesion.lesion_id)}`, "data-testid": "patient-lesion-link" }, lesionName(lesion)),
    ` — ${siteText(lesion)}; ${lesion.image_count} image${lesion.image_count === 1 ? "" : "s"}`,
    lesion.body_map ? "" : " (not on the body map)",
  ])));
  $("#patient-empty").hidden = lesions.length > 0;
  $("#patient-title").textContent = `Patient ${ref}`;
}

/** Show `#/patients/<ref>`. */
export async function showPatient(ref) {
  leaveLesions();
  const generation = state.generation;
  $("#patient-view").hidden = false;
  $("#patient-view").dataset.patientRef = ref;
  $("#patient-title").textContent = `Patient ${ref}`;
  state.patientRef = ref;
  $("#body-map").replaceChildren(bodyView("front", []), bodyView("back", []));
  applyPlacing();
  try {
    const page = await listLesions(ref);
    if (generation !== state.generation) return;
    state.lesions = page.items;
    renderPatient(ref, page.items);
  } catch (exc) {
    if (generation === state.generation) showError($("#patient-error"), exc);
  }
}

// -- Adding a lesion: label, site, laterality and a position chosen on an outline (a click, or
// the arrow keys on a focused outline), POSTed as /v1/lesions for this page's patient.

function round3(value) {
  return Math.round(Math.min(1, Math.max(0, value)) * 1000) / 1000;
}

function describePosition() {
  const position = state.position;
  $("#lesion-position").textContent = position
    ? `${position.view} view, x ${position.x.toFixed(2)}, y ${position.y.toFixed(2)} (from the outline's top left)`
    : "Not placed: select a point on the front or back outline, or focus an outline and use the arrow keys.";
  $("#lesion-position").dataset.view = position ? position.view : "";
  $("#lesion-position-clear").disabled = !position;
}

/** Draw the chosen position's marker on its outline (the map is redrawn on every load). */
function drawMarker() {
  const map = $("#body-map");
  map.querySelectorAll(".new-lesion-marker").forEach((node) => node.remove());
  const position = state.position;
  if (!state.placing || !position) return;
  const svg = map.querySelector(`svg.body-view[data-view="${position.view}"]`);
  if (svg) svg.append(positionMarker(position.x, position.y));
}

function setPosition(position) {
  state.position = position;
  describePosition();
  drawMarker();
}

/** While the form is open the outlines take clicks and keys (each outline is a tab stop). */
function applyPlacing() {
  const map = $("#body-map");
  map.classList.toggle("placing", state.placing);
  map.querySelectorAll("svg.body-view").forEach((svg) => {
    const view = svg.dataset.view;
    if (state.placing) {
      svg.setAttribute("tabindex", "0");
      svg.setAttribute("aria-label", `${view} view: select a point, or use the arrow keys, to place the new lesion`);
    } else {
      svg.removeAttribute("tabindex");
      svg.setAttribute("aria-label", `${view} view`);
    }
  });
  drawMarker();
}

function onMapClick(event) {
  if (!state.placing || event.target.closest("a")) return; // a lesion's dot opens its timeline
  const svg = event.target.closest("svg.body-view");
  const matrix = svg && svg.getScreenCTM();
  if (!matrix) return;
  const point = new DOMPoint(event.clientX, event.clientY).matrixTransform(matrix.inverse());
  const x = point.x / BODY_BOX.width;
  const y = point.y / BODY_BOX.height;
  if (x < 0 || x > 1 || y < 0 || y > 1) return; // the view's caption under the outline
  setPosition({ view: svg.dataset.view, x: round3(x), y: round3(y) });
}

function onMapKey(event) {
  const svg = event.target;
  if (!state.placing || !(svg instanceof SVGSVGElement) || !svg.classList.contains("body-view")) return;
  const move = KEY_MOVES[event.key];
  if (!move && event.key !== "Enter" && event.key !== " ") return;
  event.preventDefault();
  const view = svg.dataset.view;
  const current = state.position && state.position.view === view ? state.position : null;
  if (!current) {
    setPosition({ view, x: 0.5, y: 0.4 }); // the first key places it mid-chest (or mid-back)
    return;
  }
  if (!move) return;
  const step = event.shiftKey ? KEY_STEP_COARSE : KEY_STEP;
  setPosition({ view, x: round3(current.x + move[0] * step), y: round3(current.y + move[1] * step) });
}

function openLesionForm() {
  state.placing = true;
  $("#lesion-form").hidden = false;
  $("#lesion-add-toggle").setAttribute("aria-expanded", "true");
  $("#lesion-add-toggle").hidden = true;
  $("#lesion-added").hidden = true;
  describePosition();
  applyPlacing();
  $("#lesion-label").focus();
}

function closeLesionForm() {
  state.placing = false;
  state.position = null;
  $("#lesion-form").reset();
  $("#lesion-form").hidden = true;
  hideError($("#lesion-form-error"));
  $("#lesion-add-toggle").setAttribute("aria-expanded", "false");
  $("#lesion-add-toggle").hidden = false;
  describePosition();
  applyPlacing();
}

function textOrNull(selector) {
  return $(selector).value.trim() || null;
}

function showAdded(lesion) {
  const node = $("#lesion-added");
  node.replaceChildren(
    `Added ${lesionName(lesion)}. `,
    el("a", { href: `#/lesions/${encodeURIComponent(lesion.lesion_id)}`, "data-testid": "lesion-added-link" },
      "Open its timeline to add images"),
  );
  node.dataset.lesionId = lesion.lesion_id;
  node.hidden = false;
}

async function onAddLesion(event) {
  event.preventDefault();
  const generation = state.generation;
  const ref = state.patientRef;
  const button = $("#lesion-submit");
  hideError($("#lesion-form-error"));
  if (!ref) return;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    const lesion = await createLesion({
      patient_ref: ref,
      label: textOrNull("#lesion-label"),
      body_site: textOrNull("#lesion-site"),
      laterality: $("#lesion-laterality").value || null,
      body_map: state.position ? { ...state.position } : null,
    });
    if (generation !== state.generation) return;
    // The list is oldest first: the new lesion is the last one.
    state.lesions = [...state.lesions, lesion];
    closeLesionForm();
    renderPatient(ref, state.lesions);
    showAdded(lesion);
    $("#lesion-added").querySelector("a").focus();
  } catch (exc) {
    if (generation === state.generation) showError($("#lesion-form-error"), exc);
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

/** Wire the "Add lesion" and "Add image" forms (once, at start). */
export function initLesions() {
  $("#lesion-add-toggle").addEventListener("click", openLesionForm);
  $("#lesion-cancel").addEventListener("click", () => {
    closeLesionForm();
    $("#lesion-add-toggle").focus();
  });
  $("#lesion-form").addEventListener("submit", onAddLesion);
  $("#lesion-form").addEventListener("keydown", (event) => {
    if (event.key === "Escape") $("#lesion-cancel").click();
  });
  $("#lesion-position-clear").addEventListener("click", () => setPosition(null));
  $("#body-map").addEventListener("click", onMapClick);
  $("#body-map").addEventListener("keydown", onMapKey);
  $("#lesion-image-form").addEventListener("submit", onAddImage);
  imageSelection = fileDrop($("#lesion-image-dropzone"), $("#lesion-image-input"), describeSelectedImage);
}

/** Hide both views and drop what they loaded. */
export function leaveLesions() {
  state.generation += 1;
  revokeUrls();
  resetImageForm();
  closeLesionForm();
  $("#lesion-added").hidden = true;
  $("#lesion-added").replaceChildren();
  state.lesion = null;
  state.lesions = [];
  state.patientRef = null;
  $("#lesion-view").hidden = true;
  $("#patient-view").hidden = true;
  $("#lesion-timeline").replaceChildren();
  $("#lesion-summary").replaceChildren();
  $("#patient-lesions").replaceChildren();
  $("#body-map").replaceChildren();
  delete $("#lesion-view").dataset.lesionId;
  hideError($("#lesion-error"));
  hideError($("#patient-error"));
}
