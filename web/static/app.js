// breakglass: WebAuthn ceremonies and page actions. One module, no dependencies,
// no inline script (CSP: script-src 'self'). Every action calls the JSON API.

const status = () => document.getElementById("status");
// The element that says how an action went: the message slot next to the control that
// was used (a `.msg` in the same form or block), else the page's status line.
let speaker = null;
function say(text, kind = "info") {
  const el = speaker?.isConnected ? speaker : status();
  if (!el) return;
  el.textContent = text;
  el.className = (el === status() ? "status " : "msg ") + kind;
  // Errors and results that matter stay until dismissed; progress lines are replaced.
  if (kind === "error" || kind === "ok") {
    const close = document.createElement("button");
    close.type = "button";
    close.className = "dismiss";
    close.textContent = "Dismiss";
    close.setAttribute("aria-label", "Dismiss this message");
    close.addEventListener("click", () => { el.textContent = ""; el.className = el === status() ? "status" : "msg"; });
    el.append(" ", close);
  }
}
function speakerFor(control) {
  const block = control?.closest("form, section, [data-states], .card, li");
  return block?.querySelector(".msg") || null;
}

// API messages name fields as the API spells them; people read labels.
const FIELD_LABELS = {
  duration_minutes: "duration", approvals_required: "approvals required", reveal_window_minutes: "reveal window",
  max_checkout_minutes: "longest checkout", drill_schedule: "drill schedule", account_id: "AWS account id",
  root_email: "root e-mail", checkout_id: "drill checkout", invite_token: "invite link", ceremony_id: "security-key request",
};
function humanize(message) {
  return String(message).replace(/\b[a-z]+(?:_[a-z]+)+\b/g, (w) => FIELD_LABELS[w] || w.replace(/_/g, " "));
}

const b64u = {
  toBuf(s) {
    const b = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
    return Uint8Array.from(b, (c) => c.charCodeAt(0)).buffer;
  },
  fromBuf(buf) {
    let s = "";
    for (const x of new Uint8Array(buf)) s += String.fromCharCode(x);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
};

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const err = new Error(data && data.error ? humanize(data.error.message) : `The server answered ${res.status}.`);
    err.code = data && data.error ? data.error.code : String(res.status);
    throw err;
  }
  return data;
}

function createOptions(pk) {
  const o = structuredClone(pk);
  o.challenge = b64u.toBuf(o.challenge);
  o.user.id = b64u.toBuf(o.user.id);
  o.excludeCredentials = (o.excludeCredentials || []).map((c) => ({ ...c, id: b64u.toBuf(c.id) }));
  return o;
}

function getOptions(pk) {
  const o = structuredClone(pk);
  o.challenge = b64u.toBuf(o.challenge);
  o.allowCredentials = (o.allowCredentials || []).map((c) => ({ ...c, id: b64u.toBuf(c.id) }));
  // Quorum mode: the server asks for PRF with the documented salt (base64url).
  const first = o.extensions?.prf?.eval?.first;
  if (typeof first === "string") o.extensions.prf.eval.first = b64u.toBuf(first);
  return o;
}

// The credential as the server reads it. The PRF output is a secret that never
// leaves this page: extension results are not sent (the server needs none of them).
function credentialJSON(cred) {
  const r = cred.response;
  const response = { clientDataJSON: b64u.fromBuf(r.clientDataJSON) };
  if (r.attestationObject) response.attestationObject = b64u.fromBuf(r.attestationObject);
  if (r.authenticatorData) response.authenticatorData = b64u.fromBuf(r.authenticatorData);
  if (r.signature) response.signature = b64u.fromBuf(r.signature);
  if (r.userHandle) response.userHandle = b64u.fromBuf(r.userHandle);
  return { id: cred.id, rawId: b64u.fromBuf(cred.rawId), type: cred.type, response, extensions: {} };
}

// Returns the credential for the server and, kept here, the PRF output (or null).
async function touchKeyWithPrf(kind, options, what = "") {
  say(`Touch your security key${what} (and enter its PIN if asked)…`);
  let cred;
  try {
    cred = kind === "create"
      ? await navigator.credentials.create({ publicKey: createOptions(options.publicKey) })
      : await navigator.credentials.get({ publicKey: getOptions(options.publicKey) });
  } catch (e) {
    throw new Error("The security key did not answer (" + e.name + "). Try again, with a key that has a PIN or fingerprint.");
  }
  const prf = cred.getClientExtensionResults()?.prf?.results?.first || null;
  return { credential: credentialJSON(cred), prf };
}

async function touchKey(kind, options, what = "") {
  return (await touchKeyWithPrf(kind, options, what)).credential;
}

// Quorum mode: open my share with the identity my key's PRF output derives and
// re-encrypt it to this checkout's transit key. The crypto is the vendored age
// library (loaded only when needed); nothing but the re-encrypted share is sent.
async function handOver(offer, prf) {
  if (!prf) {
    throw new Error("This key gave no PRF output, so it cannot open your share. Use the key you prepared for quorum on your profile.");
  }
  say("Handing over your share…");
  const q = await import("/static/quorum.js");
  const { identity } = await q.shareIdentityFromPrf(prf);
  try {
    return await q.rewrapShare(offer.share, identity, offer.transit_recipient);
  } catch {
    throw new Error("Your share does not open with this key. Use the key you prepared for quorum, or prepare this one on your profile and ask an admin to reshare.");
  }
}

// "Prepare this key for quorum": one assertion with PRF; only the derived public
// recipient goes to the server.
async function prepareKey(credentialId) {
  const start = await api("POST", `/api/v1/me/credentials/${encodeURIComponent(credentialId)}/share-recipient/start`, {});
  const { credential, prf } = await touchKeyWithPrf("get", start, " to prepare it for quorum");
  let recipient = null;
  if (prf) recipient = (await (await import("/static/quorum.js")).shareIdentityFromPrf(prf)).recipient;
  await api("POST", `/api/v1/me/credentials/${encodeURIComponent(credentialId)}/share-recipient/finish`, { ceremony_id: start.ceremony_id, credential, recipient });
  return recipient !== null;
}

// Only same-origin paths: never send someone elsewhere after they sign in.
function safeNext(next) {
  if (!next) return "/";
  try {
    const u = new URL(next, location.origin);
    return u.origin === location.origin ? u.pathname + u.search : "/";
  } catch {
    return "/";
  }
}

const checkoutId = () => document.querySelector("[data-checkout]")?.dataset.checkout;
const form = (el) => Object.fromEntries(new FormData(el).entries());

const actions = {
  async enrol(el) {
    const token = location.hash.slice(1);
    if (!token) throw new Error("This page needs the invite link you were sent (it ends with #…).");
    const f = form(el);
    const start = await api("POST", "/api/v1/enrol/start", { invite_token: token, name: f.name, email: f.email });
    const credential = await touchKey("create", start);
    await api("POST", "/api/v1/enrol/finish", { ceremony_id: start.ceremony_id, credential, label: f.label || null });
    history.replaceState(null, "", "/enrol");
    // Offer quorum at once (a second touch); the profile says how it went and offers it again.
    try {
      await prepareKey(credential.id);
    } catch {
      /* shown on the profile as "not prepared yet" */
    }
    location.assign("/me");
  },
  async login(el) {
    const start = await api("POST", "/api/v1/login/start", { email: form(el).email });
    let credential;
    try {
      credential = await touchKey("get", start);
    } catch {
      // The server does not say whether the address is enrolled; neither do we.
      throw new Error("Sign-in did not work. Check the e-mail address, then touch a security key enrolled for it (and enter its PIN).");
    }
    try {
      await api("POST", "/api/v1/login/finish", { ceremony_id: start.ceremony_id, credential });
    } catch (e) {
      if (e.code === "rate_limited") throw e;
      throw new Error("Sign-in did not work. Check the e-mail address, then touch a security key enrolled for it (and enter its PIN).");
    }
    location.assign(safeNext(new URLSearchParams(location.search).get("next")));
  },
  async "add-key"(el) {
    const start = await api("POST", "/api/v1/me/credentials/start", {});
    const credential = await touchKey("create", start);
    await api("POST", "/api/v1/me/credentials/finish", { ceremony_id: start.ceremony_id, credential, label: form(el).label || null });
    location.reload();
  },
  async "acknowledge-root"(el) {
    await api("POST", `/api/v1/root-activity/${encodeURIComponent(el.dataset.event)}/acknowledge`, { reason: form(el).reason });
    location.reload();
  },
  async logout() {
    await api("POST", "/api/v1/logout", {});
    location.assign("/login");
  },
  async request(el) {
    const f = form(el);
    const body = {
      account_id: f.account_id, reason: f.reason, ticket: f.ticket || null, kind: f.kind, duration_minutes: Number(f.duration_minutes),
    };
    if (selectedIsCentralized()) {
      body.task_policy = f.task_policy;
      body.task_duration_seconds = Number(f.task_duration_seconds);
    }
    const c = await api("POST", "/api/v1/checkouts", body);
    location.assign("/checkouts/" + c.id);
  },
  // Pressing Enter in the comment box must not decide anything.
  async choose() {
    say("Choose Approve or Deny.", "error");
  },
  async decide(el) {
    const decision = el.dataset.decision;
    if (decision !== "approve" && decision !== "deny") throw new Error("Choose Approve or Deny.");
    const id = checkoutId();
    const comment = document.getElementById("comment")?.value || null;
    const start = await api("POST", `/api/v1/checkouts/${id}/approvals/start`, {});
    const { credential, prf } = await touchKeyWithPrf("get", start, decision === "approve" ? " to APPROVE" : " to DENY");
    let share = null;
    if (decision === "approve" && start.quorum) share = await handOver(start.quorum, prf);
    const v = await api("POST", `/api/v1/checkouts/${id}/approvals/finish`, { ceremony_id: start.ceremony_id, credential, decision, comment, share });
    applyView(v, performance.now());
    speaker = document.getElementById("checkout-msg");
    say(decision === "approve" ? `Approved. ${v.state === "approved" ? "The requester can now reveal." : `${v.approvals_still_needed} more approval(s) needed.`}` : "Denied.", "ok");
  },
  async reveal() {
    const id = checkoutId();
    const start = await api("POST", `/api/v1/checkouts/${id}/release/start`, {});
    const { credential, prf } = await touchKeyWithPrf("get", start);
    const share = start.quorum ? await handOver(start.quorum, prf) : null;
    const r = await api("POST", `/api/v1/checkouts/${id}/release/finish`, { ceremony_id: start.ceremony_id, credential, share });
    if (r.reshared) {
      const out = document.getElementById("reshared");
      out.textContent = `Reshared: key version ${r.key_version} dealt to ${r.holders} holders; ${r.k} of them open it.`;
      out.hidden = false;
      say("Reshared. The old shares no longer open anything.", "ok");
      setTimeout(() => location.reload(), 1500);
      return;
    }
    if (r.credential_process) {
      showSession(r, performance.now());
      say("AWS opened the session. Copy the credentials now: they are not shown again. Everything you do is on the record.", "ok");
      refreshCheckout();
      return;
    }
    showRevealed(r, performance.now());
    say("Revealed. Everything you do now is on the record.", "ok");
    refreshCheckout();
  },
  async close(el) {
    await api("POST", `/api/v1/checkouts/${checkoutId()}/close`, { note: form(el).note });
    // Checked in: the secrets leave the screen, and the page comes back with rotation if due.
    location.reload();
  },
  async cancel() {
    const v = await api("POST", `/api/v1/checkouts/${checkoutId()}/cancel`, {});
    applyView(v, performance.now());
    speaker = document.getElementById("checkout-msg");
    say("Cancelled. Nothing was released.", "ok");
  },
  async rotate(el) {
    await api("PUT", `/api/v1/checkouts/${checkoutId()}/rotation`, { value: form(el).value });
    el.reset();
    location.reload();
  },
  async invite(el) {
    const roles = new FormData(el).getAll("roles");
    const inv = await api("POST", "/api/v1/invites", { roles });
    document.getElementById("invite-url").textContent = inv.invite_url;
    document.getElementById("invite-about").textContent = `Grants ${roles.join(" and ")}. Single use; expires ${inv.expires_at}. Send it to one person only.`;
    document.getElementById("invite-result").hidden = false;
    say("Invite link created.", "ok");
  },
  async account(el) {
    const a = await api("POST", "/api/v1/accounts", form(el));
    // The page reloads to offer the new account everywhere; the confirmation survives it.
    const next = a.account_type === "centralized_root"
      ? "Nothing to deposit: its checkouts open AWS root-task sessions."
      : "Deposit its root password and MFA seed next.";
    sessionStorage.setItem("flash", JSON.stringify({ at: "#account-form .msg", text: `Account ${a.alias} (${a.account_id}) is in custody. ${next}` }));
    location.reload();
  },
  async deposit(el) {
    const f = form(el);
    await api("PUT", `/api/v1/accounts/${f.account_id}/secrets/${f.kind}`, { value: f.value });
    el.reset();
    say("Deposited. The value is encrypted and will not be shown again.", "ok");
    refreshAccounts();
  },
  async policy(el) {
    const f = form(el);
    const body = {
      approvals_required: Number(f.approvals_required),
      reveal_window_minutes: Number(f.reveal_window_minutes),
      max_checkout_minutes: Number(f.max_checkout_minutes),
      veto: f.veto === "on",
      drill_schedule: f.drill_schedule,
    };
    const mode = new FormData(el).get("approver_mode");
    if (mode === "all") body.approvers = "all";
    else if (mode === "listed") body.approvers = new FormData(el).getAll("approver");
    await api("PUT", `/api/v1/accounts/${el.dataset.account}/policy`, body);
    say("Policy saved.", "ok");
  },
  async revoke(el) {
    await api("POST", `/api/v1/invites/${el.dataset.invite}/revoke`, {});
    location.reload();
  },
  async "prepare-key"(el) {
    const ok = await prepareKey(el.dataset.credential);
    say(ok ? "This key now holds quorum shares (after the next reshare of accounts already in quorum mode)." : "This key has no PRF: it cannot hold quorum shares. Use another key.", ok ? "ok" : "error");
    setTimeout(() => location.reload(), 1500);
  },
  async quorum(el) {
    if (!confirm("Turn this account to quorum mode? Its key will be split among its custodians; there is no way back.")) return;
    await api("POST", `/api/v1/accounts/${el.dataset.account}/quorum`, {});
    say("Quorum mode is on. Run a drill to prove the holders can open it.", "ok");
    setTimeout(() => location.reload(), 1500);
  },
  async disable(el) {
    if (!confirm("Disable this person? Their sessions end at once.")) return;
    await api("POST", `/api/v1/custodians/${el.dataset.custodian}/disable`, {});
    location.reload();
  },
  async checklist(el) {
    const f = form(el);
    const items = {};
    for (const [k, v] of Object.entries(f)) if (k !== "checkout_id") items[k] = { result: v };
    if (!f.checkout_id) throw new Error("There is no drill checkout of yours to record this for: request a drill checkout on the dashboard first.");
    const d = await api("POST", `/api/v1/drills/${el.dataset.drill}/checklist`, { checkout_id: f.checkout_id, items });
    say(d.state === "passed"
      ? "Drill passed. Now check in the drill checkout on its page (the credentials must not stay out)."
      : "Drill failed: the account is flagged until a drill passes. Fix what failed, then run the drill again.", d.state === "passed" ? "ok" : "error");
  },
};

// Countdowns: the server says how many seconds are left; the page counts down on its
// own monotonic clock (performance.now) from when that answer arrived. The browser's
// wall clock is never consulted, so a laptop whose clock is off by hours still shows
// the secrets for exactly the reveal window.
const pageArrived = performance.getEntriesByType("navigation")[0]?.responseStart || 0;
function startCountdown(el, secondsLeft, arrivedAt) {
  el.dataset.deadline = String(arrivedAt + Number(secondsLeft) * 1000);
}
for (const el of document.querySelectorAll("[data-seconds-left]")) startCountdown(el, el.dataset.secondsLeft, pageArrived);
const secondsUntil = (deadline) => Math.max(0, Math.ceil((deadline - performance.now()) / 1000));

// The request form: root-task fields only for an account without a stored password.
function selectedIsCentralized() {
  const sel = document.getElementById("account_id");
  return !!sel && !!sel.selectedOptions[0] && sel.selectedOptions[0].hasAttribute("data-centralized");
}
function syncTaskFields() {
  const fields = document.getElementById("task-fields");
  if (fields) fields.hidden = !selectedIsCentralized();
}
document.getElementById("account_id")?.addEventListener("change", syncTaskFields);
syncTaskFields();

// A root-task session: shown once, cleared when it expires (counted from the server's answer).
let session = false;
function showSession(r, arrivedAt) {
  document.getElementById("session").hidden = false;
  document.getElementById("session-key").textContent = r.access_key_id;
  document.getElementById("session-shell").textContent = r.shell;
  document.getElementById("session-json").textContent = JSON.stringify(r.credential_process, null, 2);
  startCountdown(document.getElementById("session-ends"), r.expires_in_seconds, arrivedAt);
  startCountdown(document.getElementById("window-ends"), r.window_seconds_left, arrivedAt);
  session = true;
  document.getElementById("reveal-button").textContent = "Open another session with my key";
  tick();
}

let totp = null;
function showRevealed(r, arrivedAt) {
  document.getElementById("revealed").hidden = false;
  document.getElementById("root-email").textContent = r.root_email;
  document.getElementById("password").textContent = r.password;
  startCountdown(document.getElementById("window-ends"), r.window_seconds_left, arrivedAt);
  totp = {
    code: r.totp.code,
    next: r.totp.next_code,
    deadline: arrivedAt + r.totp.valid_for_seconds * 1000,
    period: r.totp.period_seconds,
  };
  const state = document.getElementById("checkout-state");
  if (state) state.textContent = "released";
  tick();
}

function renderTotp() {
  if (!totp) return;
  const code = document.getElementById("totp-code");
  const left = document.getElementById("totp-left");
  code.textContent = totp.code || "—";
  left.textContent = totp.code ? `valid ${secondsUntil(totp.deadline)} s` : "touch your key again for a fresh code";
}

function tick() {
  if (totp && totp.code && secondsUntil(totp.deadline) <= 0) {
    totp = totp.next
      ? { code: totp.next, next: null, deadline: totp.deadline + totp.period * 1000, period: totp.period }
      : { ...totp, code: null };
    document.getElementById("reveal-button").textContent = "Get a fresh code with my key";
  }
  renderTotp();
  for (const el of document.querySelectorAll("[data-deadline]")) {
    const s = secondsUntil(Number(el.dataset.deadline));
    if (s <= 0 && el.id === "session-ends" && session) {
      // AWS ends the session now; its credentials leave the screen.
      for (const id of ["session-shell", "session-json"]) document.getElementById(id).textContent = "";
      document.getElementById("session").hidden = true;
      session = false;
      say("The root session has expired; its credentials were cleared from this page.");
    }
    if (s <= 0 && el.id === "window-ends" && totp) {
      // The reveal window is over: take the secrets off the screen.
      for (const id of ["password", "totp-code", "root-email"]) document.getElementById(id).textContent = "";
      document.getElementById("revealed").hidden = true;
      totp = null;
      say("The reveal window has ended; the credentials were cleared from this page.");
    }
    el.textContent = s <= 0 ? "ended" : s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min` : `${Math.floor(s / 60)} min ${s % 60} s`;
  }
}

document.addEventListener("submit", async (ev) => {
  const el = ev.target.closest("form[data-action]");
  if (!el) return;
  ev.preventDefault();
  const buttons = el.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  speaker = speakerFor(ev.submitter || el);
  try {
    await actions[el.dataset.action](el, ev.submitter);
  } catch (e) {
    say(e.message, "error");
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
});

document.addEventListener("click", async (ev) => {
  const el = ev.target.closest("button[data-action], button[data-toggle], button[data-copy], button[data-copy-url]");
  if (!el || el.type === "submit") return;
  speaker = speakerFor(el);
  if (el.dataset.copyUrl !== undefined) {
    try {
      await navigator.clipboard.writeText(location.href);
      say("Link copied: send it to the approvers.", "ok");
    } catch {
      say("Copying is blocked here: copy the address from the address bar.", "error");
    }
    return;
  }
  if (el.dataset.toggle) {
    const secret = document.getElementById(el.dataset.toggle);
    const mask = document.getElementById(el.dataset.toggle + "-mask");
    secret.hidden = !secret.hidden;
    mask.hidden = !secret.hidden;
    el.textContent = secret.hidden ? "Show" : "Hide";
    return;
  }
  if (el.dataset.copy) {
    try {
      await navigator.clipboard.writeText(document.getElementById(el.dataset.copy).textContent);
      say("Copied.", "ok");
    } catch {
      say("Copying is blocked here: select the text instead.", "error");
    }
    return;
  }
  try {
    el.disabled = true;
    await actions[el.dataset.action](el);
  } catch (e) {
    say(e.message, "error");
  } finally {
    el.disabled = false;
  }
});

setInterval(tick, 250);
tick();

// A confirmation carried over a reload, shown next to the control it belongs to.
try {
  const flash = JSON.parse(sessionStorage.getItem("flash") || "null");
  sessionStorage.removeItem("flash");
  if (flash) {
    speaker = document.querySelector(flash.at);
    say(flash.text, "ok");
  }
} catch {
  /* nothing to show */
}

// ---- live state ----

// Show what applies to the checkout's state, hide the rest (actions, deadlines, notes).
function applyStates(state) {
  for (const el of document.querySelectorAll("[data-states]")) el.hidden = !el.dataset.states.split(" ").includes(state);
}

// Re-render the checkout page from a checkout view (the API's answer): state, approvals,
// decisions, deadlines counted from when the answer arrived, and which actions apply.
function applyView(v, arrivedAt) {
  const facts = document.getElementById("checkout-facts");
  if (!facts || !v || v.id !== facts.dataset.checkout) return;
  facts.dataset.state = v.state;
  facts.dataset.approvals = String(v.approvals_received);
  const badge = document.getElementById("checkout-state");
  badge.textContent = v.state;
  badge.className = "badge state-" + v.state;
  document.getElementById("approvals-text").textContent =
    `${v.approvals_received} of ${v.approvals_required}` + (v.approvals_still_needed > 0 ? ` — ${v.approvals_still_needed} still needed` : "");
  for (const el of document.querySelectorAll("time[data-field]")) {
    const n = v[el.dataset.field];
    if (typeof n === "number") startCountdown(el, n, arrivedAt);
  }
  const put = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text || ""; };
  put("released-at", v.released_at);
  put("ended-at", v.ended_at);
  put("end-note", v.end_note);
  const list = document.getElementById("decision-list");
  if (list) {
    list.replaceChildren(...v.decisions.map((d) => {
      const li = document.createElement("li");
      const strong = document.createElement("strong");
      strong.textContent = d.decision;
      li.append(`${d.custodian.name}: `, strong, ` at ${d.at}` + (d.comment ? ` — “${d.comment}”` : ""));
      return li;
    }));
    document.getElementById("no-decisions").hidden = v.decisions.length > 0;
  }
  const approvers = document.getElementById("approver-list");
  if (approvers) {
    approvers.replaceChildren(...v.approvers.map((a) => {
      const li = document.createElement("li");
      li.textContent = `${a.name} <${a.email}>` + (a.decided ? ` — ${a.decided}` : a.can_approve_now ? "" : ` — in cooling-off until ${a.can_approve_from}`);
      return li;
    }));
  }
  const ann = document.getElementById("announcement-list");
  if (ann) {
    ann.replaceChildren(...v.announcements.map((a) => {
      const li = document.createElement("li");
      li.textContent = `${a.event}: ${a.state}` + (a.attempts > 0 && a.state !== "delivered" ? ` (${a.attempts} attempts)` : "");
      return li;
    }));
  }
  applyStates(v.state);
  // Secrets on screen stay until their own window ends, whatever the state says.
  if (totp || session) document.getElementById("release").hidden = false;
  tick();
}

async function refreshCheckout() {
  const id = checkoutId();
  if (!id) return;
  const sent = performance.now();
  try {
    const v = await api("GET", "/api/v1/checkouts/" + id);
    applyView(v, sent);
  } catch {
    /* the next poll retries */
  }
}

const facts = document.getElementById("checkout-facts");
if (facts) {
  applyStates(facts.dataset.state);
  // Follow the request live while it can still change.
  setInterval(() => {
    if (["pending", "approved", "released"].includes(facts.dataset.state)) refreshCheckout();
  }, 4000);
}

// The dashboard: requests waiting for me appear within seconds; the tab title says how many.
const awaiting = document.getElementById("awaiting-list");
if (awaiting) {
  const baseTitle = document.title.replace(/^\(\d+\) /, "");
  const render = (list) => {
    awaiting.replaceChildren(...list.map((c) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = "/checkouts/" + c.id;
      a.textContent = `${c.requester.name} asks for ${c.kind} root access to ${c.account_alias}`;
      li.append(a, ` — ${c.reason}`);
      return li;
    }));
    document.getElementById("awaiting-empty").hidden = list.length > 0;
    document.title = (list.length ? `(${list.length}) ` : "") + baseTitle;
  };
  const poll = async () => {
    try {
      render((await api("GET", "/api/v1/checkouts?state=pending&awaiting_me=true")).checkouts);
    } catch {
      /* the next poll retries */
    }
  };
  poll();
  setInterval(poll, 5000);
}

// The admin page's accounts table, after a deposit or a policy change.
async function refreshAccounts() {
  const table = document.getElementById("accounts-table");
  if (!table) return;
  try {
    const { accounts } = await api("GET", "/api/v1/accounts");
    for (const a of accounts) {
      const cell = table.querySelector(`[data-secrets-of="${a.account_id}"]`);
      if (cell) cell.textContent = a.secrets.map((s) => `${s.kind} v${s.versions.length}`).join(" ") || "nothing deposited yet";
    }
  } catch {
    /* shown on the next load */
  }
}
