// The header's account area, the sign-in / sign-up dialog (with the two-factor step) and the
// security view: two-factor sign-in on and off, API keys listed, created (the secret is shown
// once) and revoked.
import { account, api, on, signIn, signOut, signUp, setTotp } from "./account.js";

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const TOTP_REQUIRED = 1008;

let mode = "signin";

// A time from the gateway (seconds, milliseconds or nanoseconds since the epoch, or ISO text).
function when(t) {
  const n = Number(t);
  if (!Number.isFinite(n)) return String(t ?? "").replace("T", " ").slice(0, 19);
  const ms = n > 1e14 ? n / 1e6 : n > 1e11 ? n : n * 1000;
  return new Date(ms).toLocaleString([], { hour12: false });
}

function say(id, text, kind = "error") {
  $(id).textContent = text;
  $(id).className = `result ${text ? kind : ""}`;
}

// ---------------------------------------------------------------------- the header
function renderHeader() {
  const box = $("account");
  box.hidden = !account.site;
  $("signed-out").hidden = !!account.user;
  $("signed-in").hidden = !account.user;
  $("signup-btn").hidden = account.site && account.site.signup === false;
  if (account.user) $("user-email").textContent = account.user.email;
  $("stream-status").className = `dot ${account.stream === "live" ? "on" : "off"}`;
  $("stream-status").title = `private stream: ${account.stream}`;
  document.body.classList.toggle("signed-in", !!account.user);
}

// ------------------------------------------------------------ sign in / sign up dialog
export function openSignIn(which) {
  mode = which;
  $("auth-title").textContent = which === "signup" ? "Create your account" : "Sign in";
  $("auth-submit").textContent = which === "signup" ? "Sign up" : "Sign in";
  $("auth-switch").innerHTML = which === "signup"
    ? 'Have an account? <a href="#" data-mode="signin">Sign in</a>'
    : 'New here? <a href="#" data-mode="signup">Create an account</a>';
  $("auth-password").autocomplete = which === "signup" ? "new-password" : "current-password";
  $("auth-password-hint").hidden = which !== "signup";
  $("f-auth-totp").hidden = true;
  $("auth-totp").value = "";
  say("auth-msg", "");
  if (!$("auth-dialog").open) $("auth-dialog").showModal();
  $("auth-email").focus();
}

async function submitAuth(ev) {
  ev.preventDefault();
  const email = $("auth-email").value.trim(), password = $("auth-password").value;
  const totp = $("auth-totp").value.trim();
  if (!email.includes("@")) return say("auth-msg", "enter your email address");
  if (mode === "signup" && password.length < 10)
    return say("auth-msg", "the password needs at least 10 characters");
  $("auth-submit").disabled = true;
  try {
    if (mode === "signup") await signUp(email, password);
    else await signIn(email, password, $("f-auth-totp").hidden ? "" : totp);
    $("auth-password").value = "";
    $("auth-dialog").close();
  } catch (e) {
    if (e.code === TOTP_REQUIRED) {
      const first = $("f-auth-totp").hidden;
      $("f-auth-totp").hidden = false;
      $("auth-totp").focus();
      say("auth-msg", first ? "Enter the 6-digit code from your authenticator app"
                            : `${e.reason}: check the code and try again`, first ? "info" : "error");
    } else {
      say("auth-msg", e.reason);
    }
  } finally {
    $("auth-submit").disabled = false;
  }
}

// ------------------------------------------------------------------- security view
function renderTotp() {
  const on2fa = !!(account.user && account.user.totp_enabled);
  $("totp-state").textContent = on2fa ? "On" : "Off";
  $("totp-state").className = `badge ${on2fa ? "on" : "off"}`;
  $("totp-enable").hidden = on2fa || !$("totp-enroll").hidden;
  $("totp-off-form").hidden = !on2fa;
}

async function enroll(ev) {
  ev.preventDefault();
  say("totp-msg", "");
  try {
    const e = await api("POST", "/2fa/enroll", { password: $("totp-password").value });
    $("totp-password").value = "";
    // As an image, so no script in it could run (the gateway's SVG names its namespace).
    $("totp-qr").src = `data:image/svg+xml;utf8,${encodeURIComponent(e.qr_svg)}`;
    $("totp-secret").textContent = e.secret;
    $("totp-uri").href = e.otpauth_uri;
    $("totp-enroll").hidden = false;
    $("totp-code").value = "";
    $("totp-code").focus();
    renderTotp();
  } catch (e) {
    say("totp-msg", e.reason);
  }
}

async function confirmTotp(ev) {
  ev.preventDefault();
  try {
    const r = await api("POST", "/2fa/confirm", { code: $("totp-code").value.trim() });
    $("totp-enroll").hidden = true;
    setTotp(r.totp_enabled);
    say("totp-msg", "Two-factor sign-in is on: you will be asked for a code when you sign in.",
        "ok");
  } catch (e) {
    say("totp-msg", e.reason);
  }
}

async function disableTotp(ev) {
  ev.preventDefault();
  try {
    const r = await api("POST", "/2fa/disable", { code: $("totp-off-code").value.trim() });
    $("totp-off-code").value = "";
    setTotp(r.totp_enabled);
    say("totp-msg", "Two-factor sign-in is off.", "ok");
  } catch (e) {
    say("totp-msg", e.reason);
  }
}

async function changePassword(ev) {
  ev.preventDefault();
  try {
    const r = await api("POST", "/password", { current_password: $("pw-current").value,
                                               new_password: $("pw-new").value });
    $("pw-current").value = ""; $("pw-new").value = "";
    const others = r.sessions_ended === 1 ? "1 other session" : `${r.sessions_ended} other sessions`;
    say("pw-msg", `Password changed; ${others} signed out.`, "ok");
  } catch (e) {
    say("pw-msg", e.reason);
  }
}

async function loadKeys() {
  try {
    const keys = await api("GET", "/api-keys");
    account.apiKeys = keys;
    $("keys").innerHTML = keys.map((k) =>
      `<tr data-key="${esc(k.api_key)}"><td class="mono">${esc(k.api_key)}</td>`
      + `<td>${esc(k.permission)}</td><td>${esc(when(k.created))}</td>`
      + `<td>${k.revoked ? '<span class="muted">revoked</span>'
        : `<button class="cancel" data-revoke="${esc(k.api_key)}">Revoke</button>`}</td></tr>`)
      .join("") || '<tr><td colspan="4" class="empty">no API keys yet</td></tr>';
  } catch (e) {
    say("keys-msg", e.reason);
  }
}

async function createKey(ev) {
  ev.preventDefault();
  say("keys-msg", "");
  try {
    const k = await api("POST", "/api-keys", { permission: $("key-permission").value,
                                              password: $("key-password").value });
    $("key-password").value = "";
    $("new-key").hidden = false;
    $("new-key-id").textContent = k.api_key;
    $("new-key-secret").textContent = k.secret;
    await loadKeys();
  } catch (e) {
    say("keys-msg", e.reason);
  }
}

async function revokeKey(key) {
  try {
    await api("DELETE", `/api-keys/${encodeURIComponent(key)}`);
    if ($("new-key-id").textContent === key) $("new-key").hidden = true;
    await loadKeys();
  } catch (e) {
    say("keys-msg", e.reason);
  }
}

function openSecurity() {
  $("security-email").textContent = account.user.email;
  $("totp-enroll").hidden = true;
  $("new-key").hidden = true;
  say("totp-msg", ""); say("keys-msg", ""); say("pw-msg", "");
  renderTotp();
  $("security-dialog").showModal();
  loadKeys();
}

async function copySecret() {
  const text = $("new-key-secret").textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("copy-secret").textContent = "Copied";
  } catch {
    const r = document.createRange();  // no clipboard permission: select it for Ctrl+C
    r.selectNodeContents($("new-key-secret"));
    getSelection().removeAllRanges(); getSelection().addRange(r);
    $("copy-secret").textContent = "Selected: press Ctrl+C";
  }
  setTimeout(() => { $("copy-secret").textContent = "Copy"; }, 2000);
}

export function startDialogs() {
  $("signin-btn").onclick = () => openSignIn("signin");
  $("signup-btn").onclick = () => openSignIn("signup");
  $("signout-btn").onclick = () => signOut();
  $("security-btn").onclick = openSecurity;
  $("auth-form").onsubmit = submitAuth;
  $("auth-switch").addEventListener("click", (ev) => {
    const a = ev.target.closest("a[data-mode]");
    if (a) { ev.preventDefault(); openSignIn(a.dataset.mode); }
  });
  for (const b of document.querySelectorAll("dialog .close"))
    b.onclick = () => b.closest("dialog").close();
  $("totp-enable").onsubmit = enroll;
  $("totp-confirm-form").onsubmit = confirmTotp;
  $("totp-off-form").onsubmit = disableTotp;
  $("key-form").onsubmit = createKey;
  $("password-form").onsubmit = changePassword;
  $("keys").addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-revoke]");
    if (b) { b.disabled = true; revokeKey(b.dataset.revoke); }
  });
  $("copy-secret").onclick = copySecret;
  on("session", () => { renderHeader(); if ($("security-dialog").open) renderTotp(); });
  on("stream", renderHeader);
  on("session", () => { if (!account.user && $("security-dialog").open) $("security-dialog").close(); });
  renderHeader();
}
