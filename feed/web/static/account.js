// The signed-in side (docs/web.md): the session, the REST client, the private stream, and the
// account's live state (balances, open orders, this session's closed orders, fills).
//
// The access token lives in memory only; the refresh token is the gateway's HttpOnly cookie, so
// a reload restores the session with POST /api/v1/token/refresh and nothing readable by
// scripts is ever stored. The token is refreshed a minute before it expires and the private
// stream is re-authenticated with the new one.

export const account = {
  site: null, user: null, token: null, expiresAt: 0,
  balances: new Map(),  // asset -> {asset, available, locked}
  open: new Map(),      // order_id -> order
  history: new Map(),   // order_id -> closed order (GET /order-history, then the stream)
  fills: new Map(),     // "trade_id:order_id" -> fill
  stream: "off", streamEvents: 0, streamAuths: 0, refreshes: 0,
};

const bus = new EventTarget();
export const on = (name, fn) => bus.addEventListener(name, () => fn());
const emit = (name) => bus.dispatchEvent(new Event(name));

export class ApiError extends Error {
  constructor(status, code, reason) {
    super(reason);
    this.status = status; this.code = code; this.reason = reason;
  }
}

let refreshTimer = null, refreshing = null, ws = null;

export async function api(method, path, body, { auth = true, retry = true } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth && account.token) headers.Authorization = `Bearer ${account.token}`;
  let r;
  try {
    r = await fetch(`/api/v1${path}`, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, 0, "the exchange cannot be reached: check your connection");
  }
  const data = await r.json().catch(() => null);
  if (r.status === 401 && auth && retry && account.token && await refresh())
    return api(method, path, body, { auth, retry: false });  // refused, so safe to resend
  if (!r.ok) {
    const e = data && data.error;
    let reason = e && e.reason ? e.reason : `the exchange answered HTTP ${r.status}`;
    const wait = r.headers.get("Retry-After");
    if (r.status === 429 && wait && !/retry/i.test(reason)) reason += `; try again in ${wait} s`;
    throw new ApiError(r.status, e ? e.code : 0, reason);
  }
  return data;
}

// ------------------------------------------------------------------------------ session
function clearSession() {
  clearTimeout(refreshTimer);
  account.user = null; account.token = null; account.expiresAt = 0;
  account.balances.clear(); account.open.clear(); account.history.clear(); account.fills.clear();
  if (ws) { const w = ws; ws = null; w.close(1000, "signed out"); }
  account.stream = "off";
  emit("session"); emit("balances"); emit("orders"); emit("fills");
}

function setSession(s) {
  const fresh = !account.user || account.user.user_id !== s.user.user_id;
  account.token = s.access_token;
  account.user = s.user;
  account.expiresAt = Date.now() + s.expires_in * 1000;
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, Math.max(5, s.expires_in - 60) * 1000);
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({ op: "auth", token: account.token }));
    account.streamAuths++;
  }
  emit("session");
  if (fresh) {
    openStream();
    loadAccount();  // the dialog closes now; balances, orders and fills follow
  }
}

async function refreshOnce() {
  try {
    return await api("POST", "/token/refresh", {}, { auth: false });
  } catch (e) {
    if (e.status !== 409) throw e;  // another tab refreshed a moment ago: its cookie is ours
    await new Promise((ok) => setTimeout(ok, 300));
    return api("POST", "/token/refresh", {}, { auth: false });
  }
}

export function refresh() {
  if (!refreshing) {
    refreshing = refreshOnce()
      .then((s) => { account.refreshes++; setSession(s); return true; })
      .catch((e) => {
        account.refreshError = { status: e.status, code: e.code, reason: e.reason };
        if (account.user && e.status === 401) clearSession();
        else if (account.user) refreshTimer = setTimeout(refresh, 10_000);  // busy or away: again
        return false;
      })
      .finally(() => { refreshing = null; });
  }
  return refreshing;
}

export async function signIn(email, password, totp) {
  const body = { email, password };
  if (totp) body.totp = totp;
  setSession(await api("POST", "/signin", body, { auth: false }));
}

export async function signUp(email, password) {
  setSession(await api("POST", "/signup", { email, password }, { auth: false }));
}

export async function signOut() {
  try {
    await api("POST", "/signout", {}, { retry: false });
  } catch (e) {
    console.warn("sign-out:", e.reason);  // the local session ends either way
  }
  clearSession();
}

export function setTotp(enabled) {
  if (account.user) account.user = { ...account.user, totp_enabled: enabled };
  emit("session");
}

async function loadAccount() {
  const [balances, open, fills, history] = await Promise.allSettled([
    api("GET", "/balances"), api("GET", "/order/open"), api("GET", "/fills?limit=100"),
    api("GET", "/order-history?limit=100"),
  ]);
  if (balances.status === "fulfilled") setBalances(balances.value);
  if (history.status === "fulfilled") {  // newest last, then what this session saw close
    const seen = account.history;
    account.history = new Map(history.value.map((o) => [o.order_id, o]));
    for (const [id, o] of seen) account.history.set(id, { ...account.history.get(id), ...o });
  }
  if (open.status === "fulfilled") setOpenOrders(open.value, false);
  if (fills.status === "fulfilled") for (const f of fills.value) addFill(f, false);
  emit("fills");
}

// After an order of ours changed: the stream brings the new balances; while it is down, ask.
export async function afterTrade() {
  if (account.stream === "live" || !account.user) return;
  try {
    setBalances(await api("GET", "/balances"));
    setOpenOrders(await api("GET", "/order/open"), true);
  } catch (e) {
    console.warn("balances:", e.reason);
  }
}

// ------------------------------------------------------------------------ account state
const OPEN = new Set(["new", "partially_filled"]);

function setBalances(rows) {
  account.balances = new Map(rows.map((b) => [b.asset, b]));
  emit("balances");
}

function setOpenOrders(orders, snapshot) {
  const next = new Map();
  for (const o of orders) next.set(o.order_id, { ...account.open.get(o.order_id), ...o });
  // An order of ours that left the snapshot closed without us seeing its last report.
  if (snapshot) for (const [id, o] of account.open) if (!next.has(id)) account.history.set(id, o);
  account.open = next;
  emit("orders");
}

// One order's new state, from the stream or from a REST answer: later states win (seq).
export function applyOrder(o) {
  const id = o.order_id;
  const prev = account.open.get(id) ?? account.history.get(id);
  if (prev && prev.seq && o.seq && o.seq < prev.seq) return;
  const merged = { ...prev, ...o };
  if (OPEN.has(merged.status)) {
    account.open.set(id, merged);
  } else {
    account.open.delete(id);
    account.history.delete(id);
    account.history.set(id, merged);  // re-inserted: the newest closed order comes last
  }
  emit("orders");
}

export function addFill(f, notify = true) {
  account.fills.set(`${f.trade_id}:${f.order_id}`, f);
  if (notify) emit("fills");
}

// ----------------------------------------------------------------------- private stream
function openStream() {
  if (!account.site || !account.site.private_ws || !account.token || ws) return;
  const sock = new WebSocket(account.site.private_ws);
  ws = sock;
  account.stream = "connecting";
  emit("stream");
  sock.onopen = () => {
    sock.send(JSON.stringify({ op: "auth", token: account.token }));
    account.streamAuths++;
  };
  sock.onmessage = (ev) => {
    if (ws !== sock) return;
    const msg = JSON.parse(ev.data);
    account.streamEvents++;
    if (msg.event === "authenticated") { account.stream = "live"; emit("stream"); return; }
    if (msg.error) { console.warn("private stream:", msg.error.reason); return; }
    if (msg.stream === "balances") setBalances(msg.data);
    else if (msg.stream === "orders") setOpenOrders(msg.data, true);
    else if (msg.stream === "order") applyOrder(msg.data);
    else if (msg.stream === "fill") addFill(msg.data);
  };
  sock.onclose = (ev) => {
    if (ws !== sock) return;
    ws = null;
    account.stream = "off";
    emit("stream");
    if (!account.token) return;
    setTimeout(async () => {
      if (ev.code === 4001) await refresh();  // expired or signed out: a new token, or none
      if (account.token && !ws) openStream();
    }, 1000);
  };
}

export async function startAccount(site) {
  account.site = site;
  emit("session");
  // A refresh-token cookie from an earlier visit signs us in; the readable "signed_in" hint
  // (which holds nothing) says whether there is one to try.
  if (site && /(^|; )signed_in=1/.test(document.cookie)) await refresh();
}
