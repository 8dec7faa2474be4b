// Longitudinal lesions: `#/lesions/<id>` shows one lesion's images side by side, oldest first, with
// the change between consecutive images; `#/patients/<ref>` shows the patient's lesions on a body
// map (front and back) linking to their timelines.

import { getBlobUrl, getLesion, listLesions } from "./api.js";
import { $, el, fill, formatTime, percent, showError, hideError } from "./dom.js";
import { bodyView } from "./svg.js";

const state = { generation: 0, urls: [] };

function revokeUrls() {
  state.urls.forEach((url) => URL.revokeObjectURL(url));
  state.urls = [];
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

async function loadThumb(jobId, thumb, generation) {
  try {
    const url = await getBlobUrl(`/v1/jobs/${encodeURIComponent(jobId)}/image`);
    if (generation !== state.generation) return URL.revokeObjectURL(url);
    state.urls.push(url);
    thumb.src = url;
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
  $("#body-map").replaceChildren(bodyView("front", []), bodyView("back", []));
  try {
    const page = await listLesions(ref);
    if (generation !== state.generation) return;
    renderPatient(ref, page.items);
  } catch (exc) {
    if (generation === state.generation) showError($("#patient-error"), exc);
  }
}

/** Hide both views and drop what they loaded. */
export function leaveLesions() {
  state.generation += 1;
  revokeUrls();
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
