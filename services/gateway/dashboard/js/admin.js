// `#/admin` (admins only; the API refuses everyone else with 403 auth.forbidden anyway):
// performance monitoring with inline SVG plots, the audit trail with filters and "load more", and
// the tenant's users and API keys (add a user, make a key shown once, revoke a key).

import {
  createKey,
  createUser,
  disableUser,
  getMonitoring,
  listAudit,
  listKeys,
  listUsers,
  revokeKey,
} from "./api.js";
import { $, el, fill, formatTime, percent, showError, hideError } from "./dom.js";
import { ROLES } from "./labels.js";
import { currentUser, isAdmin } from "./session.js";
import { barChart, lineChart, whiskerChart } from "./svg.js";

const AUDIT_PAGE = 50;
// What each audit action means, for the filter and the table (the code is shown beside it).
const AUDIT_ACTIONS = {
  "report.read": "read a report",
  "report.list": "listed the worklist",
  "image.read": "viewed an image",
  "heatmap.read": "viewed a heatmap",
  "fhir.read": "read a FHIR document",
  "pdf.read": "read a PDF report",
  "review.create": "signed off a result",
  "lesion.create": "recorded a lesion",
  "lesion.read": "viewed a lesion",
  "lesion.compare": "compared lesion images",
  "user.create": "added a user",
  "user.disable": "disabled a user",
  "key.create": "made an API key",
  "key.revoke": "revoked an API key",
  "next_steps.update": "changed the next steps",
  "audit.read": "read the audit trail",
  "monitoring.read": "read the monitoring figures",
};

const state = { generation: 0, auditCursor: null, auditRequest: 0 };

/** Local date "YYYY-MM-DD" -> ISO instant of that day's local midnight (+ days). */
function dayStart(value, plusDays = 0) {
  if (!value) return undefined;
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d + plusDays).toISOString();
}

function table(node, headers, rows) {
  node.replaceChildren(
    el("thead", {}, [el("tr", {}, headers.map((header) => el("th", { scope: "col" }, header)))]),
    el("tbody", {}, rows),
  );
}

function estimateText(estimate, denominator) {
  if (!estimate) return "—";
  return `${percent(estimate.value)} (${percent(estimate.ci_low)}–${percent(estimate.ci_high)}; n=${estimate[denominator]})`;
}

function modelLabel(model) {
  return `${model.name} ${model.version}`;
}

// -- Monitoring

function renderMonitoring(view) {
  const models = view.models;
  fill(
    $("#plot-ood"),
    lineChart(view.ood_rejection.map((period) => ({
      label: period.period_start,
      value: period.rate,
      title: `${period.period_start}: ${period.rejected} of ${period.jobs} rejected${typeof period.rate === "number" ? ` (${percent(period.rate)})` : ""}`,
    })), { label: "OOD rejection rate per period", testId: "chart-ood" }),
  );
  fill(
    $("#plot-override"),
    barChart(models.map((entry) => ({
      label: entry.model.version,
      value: entry.override_rate,
      title: `${modelLabel(entry.model)}: ${entry.overridden} of ${entry.reviewed} reviewed results overridden`,
    })), { label: "Override rate per model version", testId: "chart-override" }),
  );
  fill(
    $("#plot-accuracy"),
    whiskerChart(models.map((entry) => ({
      label: entry.model.version,
      values: [
        entry.malignant_sensitivity && {
          value: entry.malignant_sensitivity.value,
          low: entry.malignant_sensitivity.ci_low,
          high: entry.malignant_sensitivity.ci_high,
          title: `${modelLabel(entry.model)} sensitivity ${estimateText(entry.malignant_sensitivity, "positives")}`,
        },
        entry.specificity && {
          value: entry.specificity.value,
          low: entry.specificity.ci_low,
          high: entry.specificity.ci_high,
          title: `${modelLabel(entry.model)} specificity ${estimateText(entry.specificity, "negatives")}`,
        },
      ],
    })), ["malignant sensitivity", "specificity"], { label: "Sensitivity and specificity per model version", testId: "chart-accuracy" }),
  );
  table($("#monitoring-models"),
    ["Model", "Results", "Rejected", "Reviewed", "Overridden", "Override rate", "Confirmed", "Malignant sensitivity", "Specificity"],
    models.map((entry) => el("tr", { "data-testid": "monitoring-model-row", "data-version": entry.model.version }, [
      el("td", {}, modelLabel(entry.model)),
      el("td", {}, String(entry.results)),
      el("td", {}, String(entry.rejected)),
      el("td", {}, String(entry.reviewed)),
      el("td", {}, String(entry.overridden)),
      el("td", {}, percent(entry.override_rate)),
      el("td", {}, String(entry.confirmed)),
      el("td", {}, estimateText(entry.malignant_sensitivity, "positives")),
      el("td", {}, estimateText(entry.specificity, "negatives")),
    ])));
  for (const [id, key, header, testId] of [
    ["#monitoring-by-site", "by_site", "Body site", "monitoring-site-row"],
    ["#monitoring-by-age", "by_age_band", "Age band", "monitoring-age-row"],
  ]) {
    const rows = models.flatMap((entry) => entry[key].map((stratum) => el("tr", { "data-testid": testId, "data-key": stratum.key }, [
      el("td", {}, modelLabel(entry.model)),
      el("td", {}, stratum.key),
      el("td", {}, String(stratum.confirmed)),
      el("td", {}, estimateText(stratum.malignant_sensitivity, "positives")),
      el("td", {}, estimateText(stratum.specificity, "negatives")),
    ])));
    table($(id), ["Model", header, "Confirmed", "Malignant sensitivity", "Specificity"],
      rows.length ? rows : [el("tr", {}, [el("td", { colspan: "5", class: "muted" }, "No confirmed diagnoses in this period.")])]);
  }
  $("#monitoring-updated").textContent = `${formatTime(view.since)} – ${formatTime(view.until)}`;
}

async function loadMonitoring(generation) {
  try {
    const view = await getMonitoring({
      since: dayStart($("#monitoring-from").value),
      until: dayStart($("#monitoring-to").value, 1),
      bucket: $("#monitoring-bucket").value,
    });
    if (generation !== state.generation) return;
    hideError($("#monitoring-error"));
    renderMonitoring(view);
  } catch (exc) {
    if (generation === state.generation) showError($("#monitoring-error"), exc);
  }
}

// -- Audit trail

function auditRow(event) {
  const who = event.user_name ? `${event.user_name}${event.role ? ` (${event.role})` : ""}` : "the system";
  const resource = [event.resource_type, event.resource_id].filter(Boolean).join(" ");
  const details = event.details && Object.keys(event.details).length ? JSON.stringify(event.details) : "";
  return el("tr", {
    "data-testid": "audit-row",
    "data-action": event.action,
    "data-user-id": event.user_id || "",
    "data-resource-id": event.resource_id || "",
  }, [
    el("td", {}, [el("time", { datetime: event.at }, formatTime(event.at))]),
    el("td", {}, [AUDIT_ACTIONS[event.action] || event.action, el("br"), el("code", {}, event.action)]),
    el("td", { "data-testid": "audit-user-name" }, who),
    el("td", { class: "resource" }, resource || "—"),
    el("td", { class: "opt" }, event.client_ip || "—"),
    el("td", { class: "opt details" }, details),
  ]);
}

async function loadAudit(generation, append) {
  // A newer request (another filter) wins over one still in flight.
  state.auditRequest += 1;
  const request = state.auditRequest;
  const more = $("#audit-more");
  more.disabled = true;
  try {
    const page = await listAudit({
      user_id: $("#audit-user").value,
      action: $("#audit-action").value,
      limit: AUDIT_PAGE,
      cursor: append ? state.auditCursor : null,
    });
    if (generation !== state.generation || request !== state.auditRequest) return;
    hideError($("#audit-error"));
    const rows = page.items.map(auditRow);
    if (append) $("#audit-body").append(...rows);
    else $("#audit-body").replaceChildren(...rows);
    state.auditCursor = page.next_cursor || null;
    more.hidden = !state.auditCursor;
    $("#audit-empty").hidden = $("#audit-body").children.length > 0;
  } catch (exc) {
    if (generation === state.generation) showError($("#audit-error"), exc);
  } finally {
    more.disabled = false;
  }
}

function fillAuditUsers(users) {
  const select = $("#audit-user");
  const chosen = select.value;
  select.replaceChildren(
    el("option", { value: "" }, "all"),
    ...users.map((user) => el("option", { value: user.user_id }, `${user.name} (${ROLES[user.role] || user.role})`)),
  );
  if (users.some((user) => user.user_id === chosen)) select.value = chosen;
}

// -- Users and keys

/** A button that needs a second click to act (no window.confirm: it blocks the page). */
function confirmingButton(label, confirmLabel, attrs, action) {
  const button = el("button", { type: "button", class: "secondary small", ...attrs }, label);
  button.addEventListener("click", async () => {
    if (button.dataset.armed !== "1") {
      button.dataset.armed = "1";
      button.textContent = confirmLabel;
      return;
    }
    button.disabled = true;
    try {
      await action();
    } catch (exc) {
      showError($("#people-error"), exc);
      button.disabled = false;
    }
  });
  return button;
}

function showNewKey(user, created) {
  const box = $("#new-key");
  const done = el("button", { type: "button", class: "secondary small", "data-testid": "new-key-done" }, "I have copied it");
  done.addEventListener("click", () => {
    box.replaceChildren();
    box.hidden = true;
  });
  box.replaceChildren(
    el("p", {}, [el("strong", {}, `New API key for ${user.name}`), " — shown once only; copy it now and hand it over securely."]),
    el("p", {}, [el("code", { "data-testid": "new-key-value", "data-key-id": created.key_id }, created.api_key)]),
    el("p", { class: "muted" }, `prefix ${created.prefix}${created.expires_at ? `, expires ${formatTime(created.expires_at)}` : ", no expiry"}`),
    done,
  );
  box.hidden = false;
}

function renderUsers(users) {
  const me = currentUser();
  table($("#users-table"), ["Name", "Role", "Added", "State", ""], users.map((user) => {
    const actions = [];
    if (!user.disabled_at) {
      const make = el("button", { type: "button", class: "secondary small", "data-testid": "user-make-key" }, "Make key");
      make.addEventListener("click", async () => {
        make.disabled = true;
        hideError($("#people-error"));
        try {
          showNewKey(user, await createKey(user.user_id, null));
          await loadPeople(state.generation);
        } catch (exc) {
          showError($("#people-error"), exc);
        } finally {
          make.disabled = false;
        }
      });
      actions.push(make);
      if (!me || me.user_id !== user.user_id) {
        actions.push(confirmingButton("Disable", "Confirm disable", { "data-testid": "user-disable" }, async () => {
          await disableUser(user.user_id);
          await loadPeople(state.generation);
        }));
      }
    }
    return el("tr", { "data-testid": "user-row", "data-user-id": user.user_id, "data-role": user.role }, [
      el("td", {}, user.name),
      el("td", {}, ROLES[user.role] || user.role),
      el("td", {}, formatTime(user.created_at)),
      el("td", {}, user.disabled_at ? `disabled ${formatTime(user.disabled_at)}` : "active"),
      el("td", { class: "actions" }, actions),
    ]);
  }));
}

function renderKeys(keys) {
  const me = currentUser();
  table($("#keys-table"), ["Prefix", "User", "Role", "Made", "Expires", "Last used", "State", ""], keys.map((key) => {
    const own = Boolean(me && me.key_id === key.key_id);
    let action = null;
    if (own) action = el("span", { class: "muted" }, "this session");
    else if (!key.revoked_at) {
      action = confirmingButton("Revoke", "Confirm revoke", { "data-testid": "key-revoke", "data-key-id": key.key_id }, async () => {
        await revokeKey(key.key_id);
        await loadPeople(state.generation);
      });
    }
    return el("tr", { "data-testid": "key-row", "data-key-id": key.key_id, "data-revoked": String(Boolean(key.revoked_at)) }, [
      el("td", {}, [el("code", {}, key.prefix)]),
      el("td", {}, key.user_name || "—"),
      el("td", {}, ROLES[key.role] || key.role || "—"),
      el("td", {}, formatTime(key.created_at)),
      el("td", {}, key.expires_at ? formatTime(key.expires_at) : "never"),
      el("td", {}, key.last_used_at ? formatTime(key.last_used_at) : "never"),
      el("td", {}, key.revoked_at ? `revoked ${formatTime(key.revoked_at)}` : "active"),
      el("td", { class: "actions" }, action),
    ]);
  }));
}

async function loadPeople(generation) {
  try {
    const [users, keys] = await Promise.all([listUsers(), listKeys()]);
    if (generation !== state.generation) return;
    renderUsers(users.items);
    renderKeys(keys.items);
    fillAuditUsers(users.items);
  } catch (exc) {
    if (generation === state.generation) showError($("#people-error"), exc);
  }
}

async function onAddUser(event) {
  event.preventDefault();
  const name = $("#user-name").value.trim();
  if (!name) return;
  const button = $("#user-submit");
  button.disabled = true;
  hideError($("#people-error"));
  try {
    await createUser(name, $("#user-role").value);
    $("#user-name").value = "";
    await loadPeople(state.generation);
  } catch (exc) {
    showError($("#people-error"), exc);
  } finally {
    button.disabled = false;
  }
}

/** Show `#/admin`: everything for an admin, a clear refusal for anyone else. */
export function showAdmin() {
  state.generation += 1;
  const generation = state.generation;
  $("#admin-view").hidden = false;
  const admin = isAdmin();
  $("#admin-denied").hidden = admin;
  $("#admin-content").hidden = !admin;
  if (!admin) return;
  state.auditCursor = null;
  loadMonitoring(generation);
  loadPeople(generation);
  loadAudit(generation, false);
}

export function leaveAdmin() {
  state.generation += 1;
  $("#admin-view").hidden = true;
  $("#admin-content").hidden = true;
  $("#new-key").replaceChildren(); // a shown key must not linger in the page
  $("#new-key").hidden = true;
  for (const id of ["#plot-ood", "#plot-override", "#plot-accuracy", "#audit-body", "#users-table", "#keys-table",
    "#monitoring-models", "#monitoring-by-site", "#monitoring-by-age"]) {
    $(id).replaceChildren();
  }
  for (const id of ["#monitoring-error", "#audit-error", "#people-error"]) hideError($(id));
}

export function initAdmin() {
  $("#audit-action").append(...Object.entries(AUDIT_ACTIONS).map(([code, label]) => el("option", { value: code }, `${label} (${code})`)));
  for (const id of ["#monitoring-from", "#monitoring-to", "#monitoring-bucket"]) {
    $(id).addEventListener("change", () => loadMonitoring(state.generation));
  }
  $("#monitoring-filters").addEventListener("submit", (event) => event.preventDefault());
  $("#audit-filters").addEventListener("submit", (event) => event.preventDefault());
  for (const id of ["#audit-user", "#audit-action"]) {
    $(id).addEventListener("change", () => {
      state.auditCursor = null;
      loadAudit(state.generation, false);
    });
  }
  $("#audit-more").addEventListener("click", () => loadAudit(state.generation, true));
  $("#user-form").addEventListener("submit", onAddUser);
}
