// Who is signed in (GET /v1/me), kept in memory only: the key is the credential, this is the
// answer to "whose key is it". The API enforces every role; the dashboard only hides what a role
// cannot use.

let current = null;

/** The signed-in user ({user_id, name, role, tenant_id, key_id}) or null. */
export function currentUser() {
  return current;
}

export function setCurrentUser(user) {
  current = user;
}

export function clearCurrentUser() {
  current = null;
}

export function isClinician() {
  return Boolean(current && current.role === "clinician");
}

export function isAdmin() {
  return Boolean(current && current.role === "admin");
}
