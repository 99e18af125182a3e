// The order ticket, the balances panel and the orders tabs (open orders, history, fills).
// The ticket validates against the market's rules (GET /api/v1/markets: tick, lot, min_qty,
// max_qty, max_price) with exact decimal arithmetic and sends the strings the user typed:
// a price or quantity never passes through a float on its way to the exchange.
import * as D from "./decimal.js";
import { account, afterTrade, api, applyOrder, addFill, on } from "./account.js";
import { state as market, sortedLevels } from "./market.js";
import { openSignIn } from "./dialogs.js";

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export const ticket = { side: "buy", type: "limit", by: "amount", spec: null, problem: "",
                        sent: 0, last: null, error: null };

const STATUS = { new: "Open", partially_filled: "Partially filled", filled: "Filled",
                 canceled: "Canceled", expired: "Expired", rejected: "Rejected" };

// The ticket's order types: the order it becomes (limit or market) and, for a stop order,
// its trigger (docs/rest.md: a stop waits outside the book until the last price reaches it).
const TYPES = {
  limit: { base: "limit", trigger: null }, market: { base: "market", trigger: null },
  stop_limit: { base: "limit", trigger: "stop_loss" },
  stop_market: { base: "market", trigger: "stop_loss" },
  take_profit_limit: { base: "limit", trigger: "take_profit" },
  take_profit_market: { base: "market", trigger: "take_profit" },
  // one-cancels-the-other: a post-only limit at the price and a stop-loss at the stop (a
  // stop-limit at the stop limit, else a stop-market), placed through POST /order/oco
  oco: { base: "limit", trigger: "stop_loss", oco: true },
};
const TRAIL_BPS = [10, 2000];  // the exchange's range of a trailing distance
const kind = () => TYPES[ticket.type] ?? TYPES.limit;
// A stop-loss buy and a take-profit sell trigger when the last price rises to the stop.
const rises = (side, trigger) => (trigger === "stop_loss") === (side === "buy");

// How an order's type reads in the tables: "limit", "stop-limit", "take-profit market".
export function typeName(o) {
  const base = o.type ?? (o.price ? "limit" : "market");
  if (!o.trigger) return base;
  const name = o.trigger === "stop_loss" ? `stop-${base}` : `take-profit ${base}`;
  return o.trailing_bps ? `trailing ${name}` : name;
}

// A trailing distance as a person reads it: 150 bps -> "1.5%".
export function trailText(bps) {
  return `${D.trim(D.format({ n: BigInt(bps), s: 2 }), 0)}%`;
}

function spec() { return ticket.spec; }
function avail(asset) {
  const b = account.balances.get(asset);
  return b ? D.parse(b.available) : null;
}
// Decimals of an asset, from how the exchange writes its balance ("12.500000" -> 6).
function decimals(asset, fallback) {
  const b = account.balances.get(asset);
  return b ? D.decimalsOf(b.available) : fallback;
}
function show(asset, d) {
  return `${D.trim(D.format(d), 2)} ${asset}`;
}

// ------------------------------------------------------------------------ validation
function checkNumber(text, what) {
  if (text.trim() === "") return [null, `enter a ${what}`];
  const d = D.parse(text);
  if (!d) return [null, `${what} must be a number like 12.34 (digits and one point)`];
  if (D.isZero(d)) return [null, `${what} must be more than 0`];
  return [d, null];
}

function checkPrice(text, what = "price") {
  const m = spec();
  const [p, bad] = checkNumber(text, what);
  if (bad) return [null, bad];
  if (!D.isMultiple(p, D.parse(m.tick))) return [null, `${what} must be a multiple of ${m.tick}`];
  if (D.cmp(p, D.parse(m.max_price)) > 0) return [null, `above the maximum price ${m.max_price}`];
  return [p, null];
}

// An iceberg's visible part: a quantity of its own, at most the order's.
function checkDisplay(text, qty) {
  const m = spec();
  const [d, bad] = checkNumber(text, "visible quantity");
  if (bad) return [null, bad];
  if (!D.isMultiple(d, D.parse(m.lot))) return [null, `visible quantity must be a multiple of ${m.lot}`];
  if (D.cmp(d, D.parse(m.min_qty)) < 0) return [null, `visible quantity is below the minimum ${m.min_qty}`];
  if (D.cmp(d, qty) > 0) return [null, "the visible quantity must be at most the quantity"];
  return [d, null];
}

// A trailing distance in % (two decimals at most) or bps, as whole bps in the exchange's range.
function checkTrail(text, unit) {
  const [d, bad] = checkNumber(text, "trailing distance");
  if (bad) return [null, bad];
  const bps = unit === "pct" ? D.mul(d, { n: 100n, s: 0 }) : d;
  if (!D.isMultiple(bps, { n: 1n, s: 0 }))
    return [null, unit === "pct" ? "trailing distance: at most two decimals (0.01% = 1 bps)"
      : "trailing distance: whole bps"];
  const n = Number(D.format(D.floor(bps, 0)));
  if (n < TRAIL_BPS[0] || n > TRAIL_BPS[1])
    return [null, `trailing distance must be ${trailText(TRAIL_BPS[0])}..${trailText(TRAIL_BPS[1])} (${TRAIL_BPS[0]}..${TRAIL_BPS[1]} bps)`];
  return [n, null];
}

function checkQty(text) {
  const m = spec();
  const [q, bad] = checkNumber(text, "quantity");
  if (bad) return [null, bad];
  if (!D.isMultiple(q, D.parse(m.lot))) return [null, `quantity must be a multiple of ${m.lot}`];
  if (D.cmp(q, D.parse(m.min_qty)) < 0) return [null, `below the minimum quantity ${m.min_qty}`];
  if (D.cmp(q, D.parse(m.max_qty)) > 0) return [null, `above the maximum quantity ${m.max_qty}`];
  return [q, null];
}

// Walking the book as a market order would: what a quantity costs, what an amount buys.
function walk(side, { qty = null, amount = null }) {
  const levels = sortedLevels(side === "buy" ? "asks" : "bids");
  let left = qty ?? amount, got = { n: 0n, s: 0 }, paid = { n: 0n, s: 0 };
  for (const [pt, qt] of levels) {
    if (D.isZero(left) || left.n < 0n) break;
    const p = D.parse(pt), q = D.parse(qt);
    if (qty) {
      const take = D.cmp(q, left) < 0 ? q : left;
      got = D.add(got, take); paid = D.add(paid, D.mul(take, p)); left = D.sub(left, take);
    } else {
      const cost = D.mul(q, p);
      if (D.cmp(cost, left) <= 0) {
        got = D.add(got, q); paid = D.add(paid, cost); left = D.sub(left, cost);
      } else {
        const part = D.floorTo(D.div(left, p, D.parse(spec().lot).s), D.parse(spec().lot));
        got = D.add(got, part); paid = D.add(paid, D.mul(part, p)); left = { n: 0n, s: 0 };
      }
    }
  }
  return { got, paid, complete: D.isZero(left) };
}

// The order the form describes: {body, total, fee, problem}.
function describe() {
  const m = spec();
  const side = ticket.side;
  const out = { body: null, total: null, fee: null, problem: "", field: null };
  if (!m) return { ...out, problem: "no market" };
  const { base: type, trigger, oco } = kind();
  if (oco) return describeOco(m, side);
  const body = { market: m.symbol, side, type };
  const feeRate = D.parse(type === "market" || trigger || !$("t-post").checked ? m.taker_fee
    : m.maker_fee);
  const qd = decimals(m.quote, 2), bd = decimals(m.base, D.parse(m.lot).s);
  const fail = (problem, field) => ({ ...out, problem, field });
  let qty = null, cost = null, stop = null;
  const trailing = !!trigger && $("t-trailing").checked;
  if (trailing) {
    const [bps, tBad] = checkTrail($("t-trail").value, $("t-trail-unit").value);
    if (tBad) return fail(tBad, "t-trail");
    body.trigger = trigger; body.trailing_bps = bps;
    const last = D.parse(market.ticker?.last ?? "");
    const lastText = market.ticker?.last;
    const up = rises(side, trigger);
    const follows = `then triggers when it ${side === "sell" ? "falls" : "rises"} ${trailText(bps)} from its ${side === "sell" ? "highest" : "lowest"}`;
    if ($("t-stop").value.trim() !== "") {
      const [st, sBad] = checkPrice($("t-stop").value, "activation price");
      if (sBad) return fail(sBad, "t-stop");
      body.stop_price = $("t-stop").value.trim();
      stop = st;
      const reached = last && (up ? D.cmp(last, st) >= 0 : D.cmp(last, st) <= 0);
      out.stopNote = reached
        ? `the last price ${lastText} has already reached this activation price: the exchange refuses that (leave it empty to follow the price now)`
        : `starts following the last price when it ${up ? "rises" : "falls"} to ${body.stop_price}, ${follows}`;
    } else if (!last) {
      return fail("a trailing stop without an activation price follows the last price: this market has none yet", "t-stop");
    } else {
      stop = last;
      out.stopNote = `follows the last price (now ${lastText}), ${follows}`;
    }
  } else if (trigger) {
    const [st, sBad] = checkPrice($("t-stop").value, "stop price");
    if (sBad) return fail(sBad, "t-stop");
    body.trigger = trigger; body.stop_price = $("t-stop").value.trim();
    stop = st;
    const last = D.parse(market.ticker?.last ?? "");
    if (last) {
      const up = rises(side, trigger);
      const reached = up ? D.cmp(last, st) >= 0 : D.cmp(last, st) <= 0;
      out.stopNote = reached
        ? `the last price ${market.ticker.last} has already reached this stop: it would trigger at once, and the exchange refuses that`
        : `waits until the last price (now ${market.ticker.last}) ${up ? "rises" : "falls"} to ${body.stop_price}`;
    } else {
      out.stopNote = `waits until the last price ${rises(side, trigger) ? "rises" : "falls"} to ${body.stop_price}`;
    }
  }
  if (type === "limit") {
    const [p, pBad] = checkPrice($("t-price").value);
    if (pBad) return fail(pBad, "t-price");
    const [q, qBad] = checkQty($("t-qty").value);
    if (qBad) return fail(qBad, "t-qty");
    body.price = $("t-price").value.trim(); body.quantity = $("t-qty").value.trim();
    body.time_in_force = $("t-tif").value;
    if (body.time_in_force === "GTD") {
      const text = $("t-expire").value;
      const ms = text ? new Date(text).getTime() : NaN;
      if (!text || Number.isNaN(ms)) return fail("enter the expiry date and time (GTD)", "t-expire");
      if (ms <= Date.now()) return fail("the expiry time is in the past", "t-expire");
      body.expire_ts = ms * 1e6;  // ns since the epoch; exact in JSON (a whole millisecond)
    }
    if ($("t-post").checked && !trigger) body.post_only = true;
    if ($("t-display").value.trim() !== "") {
      const [, dBad] = checkDisplay($("t-display").value, q);
      if (dBad) return fail(dBad, "t-display");
      if (body.time_in_force !== "GTC" && body.time_in_force !== "GTD")
        return fail("an iceberg rests: GTC or GTD, not IOC or FOK", "t-display");
      body.display_qty = $("t-display").value.trim();
    }
    qty = q; cost = D.mul(p, q);
  } else if (side === "buy" && ticket.by === "amount") {
    const [a, aBad] = checkNumber($("t-amount").value, "amount");
    if (aBad) return fail(aBad, "t-amount");
    if (a.s > qd) return fail(`amount must be a multiple of ${D.format({ n: 1n, s: qd })}`,
                              "t-amount");
    body.quote_quantity = $("t-amount").value.trim();
    const w = walk("buy", { amount: a });
    qty = stop ? D.div(a, stop, D.parse(m.lot).s) : w.got; cost = a;
  } else {
    const [q, qBad] = checkQty($("t-qty").value);
    if (qBad) return fail(qBad, "t-qty");
    body.quantity = $("t-qty").value.trim();
    if (stop) {  // a stop market order: it trades when the price reaches its stop
      qty = q; cost = D.mul(q, stop);
    } else {
      const w = walk(side, { qty: q });
      qty = q; cost = w.paid;
      if (!w.complete) out.note = `the book holds only ${show(m.base, w.got)} now`;
    }
  }
  out.total = cost;
  out.fee = side === "buy" ? [D.floor(D.mul(qty, feeRate), bd), m.base]
                           : [D.floor(D.mul(cost, feeRate), qd), m.quote];
  out.body = body;
  if (account.user) {
    const have = side === "buy" ? avail(m.quote) : avail(m.base);
    const need = side === "buy" ? D.ceil(cost, qd) : qty;
    const asset = side === "buy" ? m.quote : m.base;
    if (have && D.cmp(need, have) > 0)
      return { ...out, problem: `not enough ${asset}: ${D.trim(D.format(have), 2)} available`,
               field: side === "buy" && type !== "limit" && ticket.by === "amount" ? "t-amount"
                 : "t-qty" };
  }
  return out;
}

// An OCO list: a post-only limit at the price and a stop-loss at the stop, one side and
// quantity; the funds are held once, for the larger of the two (a stop-market buy counts its
// protection price, 10% through its stop).
function describeOco(m, side) {
  const out = { body: null, total: null, fee: null, problem: "", field: null };
  const fail = (problem, field) => ({ ...out, problem, field });
  const [p, pBad] = checkPrice($("t-price").value, "limit price");
  if (pBad) return fail(pBad, "t-price");
  const [st, sBad] = checkPrice($("t-stop").value, "stop price");
  if (sBad) return fail(sBad, "t-stop");
  let sl = null;
  if ($("t-stop-limit").value.trim() !== "") {
    const [x, lBad] = checkPrice($("t-stop-limit").value, "stop-limit price");
    if (lBad) return fail(lBad, "t-stop-limit");
    sl = x;
  }
  const [q, qBad] = checkQty($("t-qty").value);
  if (qBad) return fail(qBad, "t-qty");
  const sell = side === "sell";
  const lastText = market.ticker?.last;
  const last = D.parse(lastText ?? "");
  if (sell ? D.cmp(p, st) <= 0 : D.cmp(p, st) >= 0)
    return fail(`an OCO ${side} needs the limit price ${sell ? "above" : "below"} the stop price`, "t-price");
  if (last && (sell ? D.cmp(p, last) <= 0 : D.cmp(p, last) >= 0))
    return fail(`the limit price must be ${sell ? "above" : "below"} the last price ${lastText}`, "t-price");
  if (last && (sell ? D.cmp(st, last) >= 0 : D.cmp(st, last) <= 0))
    return fail(`the stop price must be ${sell ? "below" : "above"} the last price ${lastText}`, "t-stop");
  const body = { market: m.symbol, side, quantity: $("t-qty").value.trim(),
                 price: $("t-price").value.trim(), stop_price: $("t-stop").value.trim() };
  if (sl) body.stop_limit_price = $("t-stop-limit").value.trim();
  const qd = decimals(m.quote, 2), bd = decimals(m.base, D.parse(m.lot).s);
  const stopAt = sl ? `a limit at ${body.stop_limit_price}` : "at market";
  out.stopNote = `rests at ${body.price}; if the last price${lastText ? ` (now ${lastText})` : ""} ${sell ? "falls" : "rises"} to ${body.stop_price} the stop trades ${stopAt}; a fill of one cancels the other`;
  const stopCost = D.mul(q, sl ?? (sell ? st : D.mul(st, D.parse("1.1"))));
  const limitCost = D.mul(p, q);
  const cost = D.cmp(stopCost, limitCost) > 0 ? stopCost : limitCost;
  const feeRate = D.parse(m.taker_fee);
  out.total = limitCost;
  out.fee = sell ? [D.floor(D.mul(limitCost, feeRate), qd), m.quote]
                 : [D.floor(D.mul(q, feeRate), bd), m.base];
  out.body = body;
  out.oco = true;
  if (account.user) {
    const have = sell ? avail(m.base) : avail(m.quote);
    const need = sell ? q : D.ceil(cost, qd);
    if (have && D.cmp(need, have) > 0)
      return { ...out, problem: `not enough ${sell ? m.base : m.quote}: ${D.trim(D.format(have), 2)} available`, field: "t-qty" };
  }
  return out;
}

// -------------------------------------------------------------------------- the form
function render() {
  const m = spec();
  if (!m) return;
  const buy = ticket.side === "buy";
  const { base, trigger, oco } = kind();
  const limit = base === "limit";
  const byAmount = !limit && buy && ticket.by === "amount";
  const trailing = !!trigger && !oco && $("t-trailing").checked;
  $("t-buy").classList.toggle("on", buy);
  $("t-sell").classList.toggle("on", !buy);
  $("t-type").value = ticket.type;
  $("f-stop").hidden = !trigger;
  $("t-stop-label").textContent = trailing ? "Activation" : "Stop";
  $("t-stop").placeholder = trailing ? "optional" : "";
  $("f-trailing").hidden = !trigger || !!oco;
  $("f-trail").hidden = !trailing;
  $("f-stop-limit").hidden = !oco;
  $("t-price-label").textContent = oco ? "Limit" : "Price";
  $("f-display").hidden = !limit || !!oco;
  for (const b of document.querySelectorAll("#t-by button"))
    b.classList.toggle("on", b.dataset.by === ticket.by);
  $("f-price").hidden = !limit;
  $("f-market-price").hidden = limit;
  $("t-by").hidden = limit || !buy;
  $("f-qty").hidden = byAmount;
  $("f-amount").hidden = !byAmount;
  $("f-limit-opts").hidden = !limit || !!oco;  // an OCO's limit order is post-only GTC
  $("f-post").hidden = !!trigger;  // a stop order cannot be post-only
  if (trigger) $("t-post").checked = false;
  $("t-tif").disabled = $("t-post").checked;
  if ($("t-post").checked && $("t-tif").value !== "GTD") $("t-tif").value = "GTC";
  $("f-expire").hidden = !limit || !!oco || $("t-tif").value !== "GTD";
  for (const u of document.querySelectorAll(".u-base")) u.textContent = m.base;
  for (const u of document.querySelectorAll(".u-quote")) u.textContent = m.quote;
  $("t-price").step = m.tick; $("t-stop").step = m.tick; $("t-stop-limit").step = m.tick;
  $("t-qty").step = m.lot; $("t-qty").min = m.min_qty; $("t-qty").max = m.max_qty;
  $("t-rules").textContent = `tick ${m.tick} · lot ${m.lot} · min ${m.min_qty} · max ${m.max_qty}`;
  const asset = buy ? m.quote : m.base;
  $("t-avail").textContent = account.user ? show(asset, avail(asset) ?? D.parse("0")) : "-";
  const submit = $("t-submit");
  submit.className = `submit ${buy ? "buy" : "sell"}`;
  submit.textContent = account.user ? `${buy ? "Buy" : "Sell"} ${m.base}`
    : account.site ? "Sign in to trade" : "Trading needs the exchange's gateway";
  const d = describe();
  ticket.problem = d.problem;
  const shown = (id) => !$(id).closest(".field").hidden;
  const inputs = ["t-trail", "t-stop", "t-stop-limit", "t-price", "t-qty", "t-display", "t-amount",
                  "t-expire"];
  const touched = ticket.tried || inputs.some((id) => shown(id) && $(id).value !== "");
  const p = $("t-problem");
  p.textContent = touched && account.user ? d.problem : "";
  for (const id of inputs)
    $(id).classList.toggle("bad", touched && account.user && d.field === id);
  $("t-stop-note").textContent = trigger ? (d.stopNote ?? "") : "";
  const est = (label) => (limit ? label : `≈ ${label}`);
  $("t-total").textContent = d.total ? est(show(m.quote, D.ceil(d.total, decimals(m.quote, 2))))
    : "-";
  // A limit order that may rest pays the maker fee there: the taker fee is the most it pays.
  const most = limit && (trigger || !$("t-post").checked) ? "up to " : "";
  $("t-fee").textContent = d.fee ? `${most}${est(show(d.fee[1], d.fee[0]))}` : "-";
  $("t-note").textContent = d.note ?? "";
}

function setResult(text, kind) {
  const el = $("t-result");
  el.textContent = text;
  el.className = `result ${kind}`;
}

function describeAnswer(o, fills) {
  const what = `${o.side === "buy" ? "Bought" : "Sold"}`;
  const st = STATUS[o.status] ?? o.status;
  if (fills.length && o.cum_qty) {
    const avg = o.cum_quote && D.parse(o.cum_qty) && !D.isZero(D.parse(o.cum_qty))
      ? D.trim(D.format(D.div(D.parse(o.cum_quote), D.parse(o.cum_qty), D.parse(spec().tick).s)), 2)
      : "";
    return `${what} ${o.cum_qty} ${spec().base}${avg ? ` at ${avg} average` : ""} · ${st}`;
  }
  if (o.waiting) {
    const what = o.type === "market" ? "at market" : `at ${o.price}`;
    const name = typeName(o);
    const when = o.trailing_bps
      ? ` ${trailText(o.trailing_bps)} off the best price${o.stop_price ? ` from ${o.stop_price} on` : ""}`
      : ` when the price reaches ${o.stop_price}`;
    return `${name[0].toUpperCase()}${name.slice(1)} order ${o.order_id} placed: ${o.side} ${o.qty ?? o.quote_qty} ${what}`
      + `${when} (waiting)`;
  }
  const ice = o.display_qty ? ` (iceberg, ${o.display_qty} visible)` : "";
  if (o.status === "new") return `Order ${o.order_id} placed: ${o.side} ${o.qty} at ${o.price}${ice}`;
  return `Order ${o.order_id}: ${st}${o.reason ? ` (${o.reason.replace(/_/g, " ")})` : ""}`;
}

async function submit(ev) {
  ev.preventDefault();
  if (!account.user) { if (account.site) openSignIn("signin"); return; }
  const d = describe();
  ticket.tried = !!d.problem;  // a blocked submit shows the problem even on empty fields
  render();
  if (d.problem) { setResult("", ""); return; }
  const btn = $("t-submit");
  btn.disabled = true;
  ticket.sent++;
  try {
    const ans = await api("POST", d.oco ? "/order/oco" : "/order", d.body);
    ticket.last = ans; ticket.error = null;
    if (d.oco) {
      for (const o of ans.orders) applyOrder(o);
      const [lim, stop] = ans.orders;
      setResult(`OCO #${ans.list_id} placed: ${lim.side} ${lim.qty} at ${lim.price}, or at `
        + `${stop.type === "market" ? "market" : stop.price} when the price reaches ${stop.stop_price}`, "ok");
      afterTrade();
      return;
    }
    applyOrder(ans.order);
    for (const f of ans.fills ?? []) addFill(f);
    setResult(describeAnswer(ans.order, ans.fills ?? []), "ok");
    afterTrade();
    // A trailing stop's answer does not say which price it follows: its view does.
    if (ans.order.trailing_bps && ans.order.waiting)
      api("GET", `/order/${ans.order.order_id}?by=order_id`).then(applyOrder, () => {});
  } catch (e) {
    ticket.error = { code: e.code, reason: e.reason };
    setResult(`Order refused: ${e.reason}`, "error");
  } finally {
    btn.disabled = false;
  }
}

// Fill the quantity (or amount) with a share of what is available.
function share(pct) {
  const m = spec();
  if (!account.user || !m) return;
  const lot = D.parse(m.lot);
  const frac = (d) => D.div(D.mul(d, { n: BigInt(pct), s: 0 }), { n: 100n, s: 0 }, d.s);
  if (ticket.side === "sell") {
    const have = avail(m.base);
    if (have) $("t-qty").value = D.format(D.floorTo(frac(have), lot));
  } else if (kind().base === "market" && ticket.by === "amount") {
    const have = avail(m.quote);
    if (have) $("t-amount").value = D.trim(D.format(frac(have)), 2);
  } else {
    const have = avail(m.quote);
    const price = kind().base === "limit" ? D.parse($("t-price").value)
      : kind().trigger ? D.parse($("t-stop").value)
        : D.parse(sortedLevels("asks")[0]?.[0] ?? "");
    if (have && price && !D.isZero(price))
      $("t-qty").value = D.format(D.floorTo(D.div(frac(have), price, lot.s), lot));
  }
  render();
}

function setupTicket() {
  $("t-buy").onclick = () => { ticket.side = "buy"; render(); };
  $("t-sell").onclick = () => { ticket.side = "sell"; render(); };
  $("t-type").onchange = () => { ticket.type = $("t-type").value; render(); };
  for (const b of document.querySelectorAll("#t-by button"))
    b.onclick = () => { ticket.by = b.dataset.by; render(); };
  for (const b of document.querySelectorAll("#t-shares button"))
    b.onclick = () => share(+b.dataset.pct);
  $("ticket-form").addEventListener("input", () => {
    ticket.type = $("t-type").value;  // "input" comes before the select's "change"
    setResult("", "");
    ticket.tried = false;
    render();
  });
  $("ticket-form").onsubmit = submit;
}

export function setMarket(symbol) {
  ticket.spec = market.markets.find((m) => m.symbol === symbol) ?? null;
  $("t-price").value = ""; $("t-qty").value = ""; $("t-amount").value = "";
  $("t-stop").value = ""; $("t-stop-limit").value = ""; $("t-display").value = "";
  $("t-trail").value = "";
  ticket.tried = false;
  setResult("", "");
  render();
  renderBalances();
}

export function pickPrice(price) {
  // A price picked from the book or the trades: the limit price of a limit-like type.
  ticket.type = { market: "limit", stop_market: "stop_limit",
                  take_profit_market: "take_profit_limit" }[ticket.type] ?? ticket.type;
  $("t-price").value = price;
  render();
  if (window.matchMedia("(max-width: 900px)").matches)
    $("ticket").scrollIntoView({ behavior: "smooth", block: "start" });
}

export function bookChanged() {
  if (kind().base === "market" || kind().trigger) render();
}

// ------------------------------------------------------------------ balances and orders
function renderBalances() {
  const m = spec();
  const rows = [...account.balances.values()]
    .filter((b) => D.parse(b.available)?.n || D.parse(b.locked)?.n
                   || (m && (b.asset === m.base || b.asset === m.quote)))
    .sort((a, b) => a.asset.localeCompare(b.asset));
  $("balances").innerHTML = rows.map((b) =>
    `<tr data-asset="${esc(b.asset)}"><td>${esc(b.asset)}</td><td>${esc(b.available)}</td>`
    + `<td>${esc(b.locked)}</td></tr>`).join("")
    || `<tr><td colspan="3" class="empty">${account.user ? "no balances" : "sign in to see your balances"}</td></tr>`;
  render();
}

const time = (ts) => new Date(ts / 1e6).toLocaleTimeString([], { hour12: false });
const side = (s) => `<td class="${s}">${s === "buy" ? "Buy" : "Sell"}</td>`;

// The type cell: the order's type, after its OCO list's tag where it is in one.
function typeCell(o) {
  const tag = o.list_id ? `<span class="tag oco" title="one-cancels-the-other list ${o.list_id}: when one of its orders fills, triggers or is cancelled, the other is cancelled">OCO #${o.list_id}</span>` : "";
  return `<td>${tag}${tag ? " " : ""}${esc(typeName(o))}</td>`;
}
// The stop cell: the stop price; a trailing stop's distance, and the best price it follows.
function stopCell(o) {
  if (!o.trailing_bps) return `<td>${esc(o.stop_price ?? "-")}</td>`;
  const from = o.trail_price ? ` from ${o.trail_price}` : o.stop_price ? ` at ${o.stop_price}` : "";
  const what = o.trail_price ? "follows" : o.stop_price ? "starts following" : "trails";
  return `<td title="${what} the best last price${o.trail_price ? ` (now ${esc(o.trail_price)})` : ""}">`
    + `trail ${esc(trailText(o.trailing_bps))}<span class="sub">${esc(from)}</span></td>`;
}
function qtyCell(o) {
  const q = esc(o.qty ?? o.quote_qty ?? "-");
  if (!o.display_qty) return `<td>${q}</td>`;
  return `<td title="an iceberg: the book shows ${esc(o.display_qty)} at a time">${q}`
    + `<span class="sub"> · ${esc(o.display_qty)} shown</span></td>`;
}

function renderOrders() {
  // Newest first; a list's two orders (one command, one time) together, its limit order first.
  const open = [...account.open.values()].sort((a, b) => b.ts - a.ts || a.order_id - b.order_id);
  $("n-open").textContent = open.length ? ` (${open.length})` : "";
  $("open-orders").innerHTML = open.map((o) =>
    `<tr data-order="${o.order_id}"${o.list_id ? ` data-list="${o.list_id}" class="in-list"` : ""}>`
    + `<td>${time(o.ts)}</td><td>${esc(o.market)}</td>${side(o.side)}`
    + `${typeCell(o)}<td>${esc(o.type === "market" || !o.price ? "market" : o.price)}</td>`
    + `${stopCell(o)}${qtyCell(o)}<td>${esc(o.cum_qty)}</td>`
    + (o.waiting ? `<td class="st-waiting" title="${o.trailing_bps ? "waits for the last price to turn by its distance" : `waits for the last price to reach ${esc(o.stop_price)}`}">Waiting</td>`
      : `<td>${esc(STATUS[o.status] ?? o.status)}</td>`)
    + `<td><button class="cancel" data-cancel="${o.order_id}"${o.list_id ? ` title="cancels both orders of OCO #${o.list_id}"` : ""}>Cancel</button></td></tr>`).join("")
    || `<tr><td colspan="10" class="empty">${account.user ? "no open orders" : "sign in to trade"}</td></tr>`;
  const closed = [...account.history.values()].reverse();
  $("order-history").innerHTML = closed.map((o) => {
    const why = o.reason ? ` <span class="muted">(${esc(o.reason.replace(/_/g, " "))})</span>` : "";
    return `<tr data-order="${o.order_id}"><td>${time(o.ts)}</td><td>${esc(o.market)}</td>${side(o.side)}`
      + `${typeCell(o)}<td>${esc(o.type === "market" || !o.price ? "market" : o.price)}</td>`
      + `${qtyCell(o)}<td>${esc(o.cum_qty)}</td>`
      + `<td class="st-${esc(o.status)}">${esc(STATUS[o.status] ?? o.status)}${why}</td></tr>`;
  }).join("") || `<tr><td colspan="8" class="empty">no closed orders yet</td></tr>`;
}

function renderFills() {
  const fills = [...account.fills.values()].sort((a, b) => b.ts - a.ts || b.trade_id - a.trade_id);
  $("n-fills").textContent = fills.length ? ` (${fills.length})` : "";
  $("fills").innerHTML = fills.map((f) =>
    `<tr data-trade="${f.trade_id}"><td>${time(f.ts)}</td><td>${esc(f.market)}</td>${side(f.side)}`
    + `<td>${esc(f.price)}</td><td>${esc(f.qty)}</td><td>${esc(f.fee)} ${esc(f.fee_asset)}</td>`
    + `<td>${esc(f.liquidity)}</td></tr>`).join("")
    || `<tr><td colspan="7" class="empty">${account.user ? "no fills yet" : "sign in to see your fills"}</td></tr>`;
}

async function cancel(id) {
  try {
    for (const o of await api("DELETE", `/order/${id}?by=order_id`)) applyOrder(o);
    setOrdersMsg("", "");
    afterTrade();
  } catch (e) {
    setOrdersMsg(`Cancel refused: ${e.reason}`, "error");
  }
}

async function cancelAll() {
  try {
    const r = await api("DELETE", "/orders");
    setOrdersMsg(`${r.cancelled} order${r.cancelled === 1 ? "" : "s"} canceled`, "ok");
    afterTrade();
  } catch (e) {
    setOrdersMsg(`Cancel all refused: ${e.reason}`, "error");
  }
}

function setOrdersMsg(text, kind) {
  $("orders-msg").textContent = text;
  $("orders-msg").className = `result ${kind}`;
}

function setupOrders() {
  for (const b of document.querySelectorAll("#order-tabs button[data-tab]")) {
    b.onclick = () => {
      for (const x of document.querySelectorAll("#order-tabs button[data-tab]"))
        x.classList.toggle("on", x === b);
      for (const t of document.querySelectorAll(".tab-body"))
        t.hidden = t.id !== `tab-${b.dataset.tab}`;
    };
  }
  $("open-orders").addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-cancel]");
    if (b) { b.disabled = true; cancel(b.dataset.cancel); }
  });
  $("cancel-all").onclick = cancelAll;
}

export function startTrade() {
  setupTicket();
  setupOrders();
  on("balances", renderBalances);
  on("orders", renderOrders);
  on("fills", renderFills);
  on("session", () => { renderBalances(); renderOrders(); renderFills(); });
  renderOrders();
  renderFills();
}
