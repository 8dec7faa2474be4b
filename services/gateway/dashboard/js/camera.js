// Camera capture: getUserMedia -> <video> preview -> a frame on a canvas -> JPEG -> POST /v1/images.

import { submitImage } from "./api.js";
import { $, showError, hideError } from "./dom.js";
import { metadataFields, showJobResult } from "./upload.js";

const JPEG_QUALITY = 0.92;

let stream = null;
let captured = null; // the last captured frame (a JPEG Blob)

function cameraError(code, message) {
  const node = $("#camera-error");
  node.textContent = `${code}: ${message}`;
  node.dataset.code = code;
  node.hidden = false;
}

async function start() {
  hideError($("#camera-error"));
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    cameraError("camera.unavailable", "this browser offers no camera here (a secure origin is required)");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true });
  } catch (exc) {
    const code = exc && exc.name === "NotAllowedError" ? "camera.denied" : "camera.unavailable";
    cameraError(code, (exc && exc.message) || "the camera could not be started");
    return;
  }
  const video = $("#camera-preview");
  video.srcObject = stream;
  video.hidden = false;
  try {
    await video.play();
  } catch {
    // autoplay of a muted stream can still be refused; the preview starts on the next gesture
  }
  $("#camera-capture").disabled = false;
  $("#camera-start").textContent = "Restart camera";
  $("#camera-status").textContent = "Camera on. Capture a frame, then submit it.";
}

export function stopCamera() {
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  captured = null;
  const video = $("#camera-preview");
  video.srcObject = null;
  video.hidden = true;
  $("#camera-capture").disabled = true;
  $("#camera-submit").disabled = true;
  $("#camera-start").textContent = "Start camera";
  $("#camera-status").textContent = "";
}

function capture() {
  const video = $("#camera-preview");
  const canvas = $("#camera-canvas");
  if (!video.videoWidth || !video.videoHeight) {
    cameraError("camera.no_frame", "no frame yet; wait for the preview");
    return;
  }
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  canvas.toBlob((blob) => {
    if (!blob) {
      cameraError("camera.no_frame", "the frame could not be encoded");
      return;
    }
    captured = blob;
    canvas.hidden = false;
    $("#camera-submit").disabled = false;
    $("#camera-status").textContent = `Frame captured (${canvas.width}×${canvas.height}). Submit it, or capture again.`;
  }, "image/jpeg", JPEG_QUALITY);
}

async function submit() {
  if (!captured) return;
  const button = $("#camera-submit");
  button.disabled = true;
  hideError($("#camera-error"));
  hideError($("#upload-error"));
  try {
    const accepted = await submitImage(captured, metadataFields(), "camera.jpg");
    showJobResult(accepted.job_id, "Capture submitted");
    $("#camera-status").textContent = "Capture submitted.";
  } catch (exc) {
    showError($("#camera-error"), exc);
    showError($("#upload-error"), exc);
  } finally {
    button.disabled = !captured;
  }
}

export function initCamera() {
  $("#camera-start").addEventListener("click", () => {
    stopCamera();
    start();
  });
  $("#camera-capture").addEventListener("click", capture);
  $("#camera-submit").addEventListener("click", submit);
}
