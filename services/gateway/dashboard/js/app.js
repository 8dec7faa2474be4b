// SkinTriage dashboard: sign-in, worklist, report view (#/jobs/<id>), uploads and camera, a lesion's
// timeline (#/lesions/<id>), a patient's body map (#/patients/<ref>) and the admin page (#/admin).
// A pure client of the public API; the API key stays in this tab's sessionStorage.

import { ApiError, clearKey, getKey, getMe, onUnauthorized, setKey } from "./api.js";
import { $, showError, hideError } from "./dom.js";
import { initAdmin, leaveAdmin, showAdmin } from "./admin.js";
import { initCamera, stopCamera } from "./camera.js";
import { ROLES } from "./labels.js";
import { initLesions, leaveLesions, showLesion, showPatient } from "./lesions.js";
import { closeReport, initReport, openReport } from "./report.js";
import { initReview } from "./review.js";
import { clearCurrentUser, currentUser, isAdmin, setCurrentUser } from "./session.js";
import { initUpload, resetUpload } from "./upload.js";
import { initWorklist, refresh as refreshWorklist, startWorklist, stopWorklist } from "./worklist.js";

const JOB_ROUTE = /^#\/jobs\/([A-Za-z0-9_-]{1,64})$/;
const LESION_ROUTE = /^#\/lesions\/([A-Za-z0-9_-]{1,64})$/;
const PATIENT_ROUTE = /^#\/patients\/(.+)$/;
const ADMIN_ROUTE = /^#\/admin$/;

// The page under the report dialog: where "Close" returns to (the worklist after a deep link).
let baseRoute = "#/";

/** Integrators are API-only callers (EHRs, scripts): the dashboard does not accept their keys. */
class IntegratorKeyError extends ApiError {
  constructor() {
    super(403, "dashboard.integrator_key",
      "this key belongs to an integrator; integrators use the API only. Sign in with a clinician's or an admin's key.");
  }
}

function decodedRef(encoded) {
  try {
    return decodeURIComponent(encoded);
  } catch {
    return encoded;
  }
}

/** Show the page a (non-report) route names; every other page is hidden. */
function showPage(hash) {
  const lesion = LESION_ROUTE.exec(hash);
  const patient = PATIENT_ROUTE.exec(hash);
  const admin = ADMIN_ROUTE.test(hash);
  const worklist = !lesion && !patient && !admin;
  if (!admin) leaveAdmin();
  if (!lesion && !patient) leaveLesions();
  $("#app").hidden = !worklist;
  $("#nav-worklist").setAttribute("aria-current", worklist ? "page" : "false");
  $("#nav-admin").setAttribute("aria-current", admin ? "page" : "false");
  if (lesion) showLesion(lesion[1]);
  else if (patient) showPatient(decodedRef(patient[1]));
  else if (admin) showAdmin();
  else refreshWorklist();
}

function route() {
  if (!getKey() || !currentUser()) return;
  const hash = location.hash;
  const job = JOB_ROUTE.exec(hash);
  if (job) {
    // A report opens over the page it was reached from; a deep link opens it over the worklist.
    if (!baseRoute || pageHidden(baseRoute)) {
      baseRoute = baseRoute || "#/";
      showPage(baseRoute);
    }
    openReport(job[1]);
    return;
  }
  closeReport();
  const page = hash && hash !== "#" ? hash : "#/";
  if (page !== baseRoute || pageHidden(page)) {
    baseRoute = page;
    showPage(page);
  }
}

function pageHidden(hash) {
  if (LESION_ROUTE.test(hash)) return $("#lesion-view").hidden;
  if (PATIENT_ROUTE.test(hash)) return $("#patient-view").hidden;
  if (ADMIN_ROUTE.test(hash)) return $("#admin-view").hidden;
  return $("#app").hidden;
}

function showUser(user) {
  $("#whoami-name").textContent = user.name;
  const role = $("#whoami-role");
  role.textContent = ROLES[user.role] || user.role;
  role.dataset.role = user.role;
  $("#whoami").hidden = false;
  $("#nav").hidden = false;
  $("#nav-admin").hidden = !isAdmin();
}

function showApp(user) {
  setCurrentUser(user);
  showUser(user);
  $("#signin").hidden = true;
  $("#signout").hidden = false;
  startWorklist((jobId) => {
    location.hash = `#/jobs/${jobId}`;
  });
  baseRoute = null; // show whichever page the URL names
  route();
}

function showSignIn(error) {
  stopWorklist();
  stopCamera();
  resetUpload();
  closeReport();
  leaveAdmin();
  leaveLesions();
  clearCurrentUser();
  baseRoute = "#/";
  $("#app").hidden = true;
  $("#signout").hidden = true;
  $("#whoami").hidden = true;
  $("#nav").hidden = true;
  $("#signin").hidden = false;
  if (error) showError($("#signin-error"), error);
  $("#signin-key").focus();
}

/** Who the key belongs to; refuses an integrator's key. */
async function userOf(key) {
  const user = await getMe(key);
  if (user.role === "integrator") throw new IntegratorKeyError();
  return user;
}

async function onSignIn(event) {
  event.preventDefault();
  const input = $("#signin-key");
  const key = input.value.trim();
  const button = $("#signin-submit");
  hideError($("#signin-error"));
  if (!key) return;
  button.disabled = true;
  try {
    const user = await userOf(key);
    setKey(key);
    input.value = "";
    showApp(user);
  } catch (exc) {
    showError($("#signin-error"), exc);
  } finally {
    button.disabled = false;
  }
}

/** A reload keeps the key (this tab's sessionStorage): ask again whose it is. */
async function resume() {
  try {
    showApp(await userOf(getKey()));
  } catch (exc) {
    clearKey();
    showSignIn(exc);
  }
}

function init() {
  initWorklist();
  initReview();
  initReport(() => {
    // Closing goes back to the page under the report (keeps Back/Forward meaningful).
    if (JOB_ROUTE.test(location.hash)) location.hash = baseRoute || "#/";
    else closeReport();
  });
  initUpload();
  initCamera();
  initAdmin();
  initLesions();
  $("#signin-form").addEventListener("submit", onSignIn);
  $("#signout").addEventListener("click", () => {
    clearKey();
    hideError($("#signin-error"));
    showSignIn();
  });
  onUnauthorized((error) => {
    clearKey();
    showSignIn(error instanceof ApiError ? error : undefined);
  });
  window.addEventListener("hashchange", route);
  if (getKey()) resume();
  else showSignIn();
}

init();
