// SkinTriage dashboard: sign-in, worklist, report view (#/jobs/<id>), uploads and camera.
// A pure client of the public API; the API key stays in this tab's sessionStorage.

import { ApiError, clearKey, getKey, onUnauthorized, setKey, verifyKey } from "./api.js";
import { $, showError, hideError } from "./dom.js";
import { initCamera, stopCamera } from "./camera.js";
import { closeReport, initReport, openReport } from "./report.js";
import { initUpload, resetUpload } from "./upload.js";
import { initWorklist, startWorklist, stopWorklist } from "./worklist.js";

const JOB_ROUTE = /^#\/jobs\/([A-Za-z0-9_-]{1,64})$/;

function route() {
  if (!getKey()) return;
  const match = JOB_ROUTE.exec(location.hash);
  if (match) openReport(match[1]);
  else closeReport();
}

function showApp() {
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#signout").hidden = false;
  startWorklist((jobId) => {
    location.hash = `#/jobs/${jobId}`;
  });
  route();
}

function showSignIn(error) {
  stopWorklist();
  stopCamera();
  resetUpload();
  closeReport();
  $("#app").hidden = true;
  $("#signout").hidden = true;
  $("#signin").hidden = false;
  if (error) showError($("#signin-error"), error);
  $("#signin-key").focus();
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
    await verifyKey(key);
    setKey(key);
    input.value = "";
    showApp();
  } catch (exc) {
    showError($("#signin-error"), exc);
  } finally {
    button.disabled = false;
  }
}

function init() {
  initWorklist();
  initReport(() => {
    // Closing goes back to the worklist route (keeps Back/Forward meaningful).
    if (JOB_ROUTE.test(location.hash)) location.hash = "#/";
    else closeReport();
  });
  initUpload();
  initCamera();
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
  if (getKey()) showApp();
  else showSignIn();
}

init();
