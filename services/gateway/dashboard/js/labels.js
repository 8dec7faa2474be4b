// What a clinician reads instead of codes: the API speaks in codes, the dashboard in words.
// Class names come from each report (`prediction.class_display_names`), so a new model's classes
// need no dashboard change.

export const REVIEW_STATES = {
  unreviewed: "unreviewed",
  signed_off: "signed off",
  diagnosis_confirmed: "diagnosis confirmed",
};

export const BASES = {
  histopathology: "histopathology",
  follow_up: "follow-up",
  clinical: "clinical",
};

export const ROLES = {
  clinician: "clinician",
  integrator: "integrator",
  admin: "admin",
};

/** A class's display name from a report's prediction (the code itself when the report has none). */
export function className(prediction, code) {
  const names = (prediction && prediction.class_display_names) || {};
  return names[code] || code;
}

/** The model's classes of a report, as [code, display name], in the report's probability order. */
export function classesOf(prediction) {
  if (!prediction) return [];
  return Object.keys(prediction.probabilities || {}).map((code) => [code, className(prediction, code)]);
}

/** A diagnosis ({code, text, display_name}) as words. */
export function diagnosisText(diagnosis) {
  if (!diagnosis) return "—";
  return diagnosis.display_name || diagnosis.text || diagnosis.code || "—";
}

export function reviewStateText(state) {
  return REVIEW_STATES[state] || state || REVIEW_STATES.unreviewed;
}
