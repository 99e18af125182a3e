// The market-data view: candles, order book, recent trades and the 24h ticker of one market,
// live over the bridge's websocket (docs/websocket.md). Prices arrive as exact decimal strings;
// they become numbers only for the chart and the depth bars.
import * as D from "./decimal.js";

const LEVELS = 15, TRADES = 40;
const INTERVALS = ["1m", "5m", "15m", "1h", "4h", "1d"];

export const state = { market: null, interval: "1m", ws: null, book: null, candles: 0, trades: 0,
                       lastTradeId: 0, depthUpdates: 0, series: null, chart: null, reqId: 0,
                       ticker: null, markets: [] };

const $ = (id) => document.getElementById(id);
let src = null;  // {ws, markets, klines, trades}: where the data comes from
let hooks = { price: () => {}, market: () => {}, book: () => {} };

function setupChart() {
  state.chart = LightweightCharts.createChart($("chart"), {
    // The logo would inject a <style> element (refused by the gateway's CSP): the page credits
    // TradingView in its own markup instead (#chart-credit), as the library's licence asks.
    layout: { background: { color: "#12171d" }, textColor: "#aab4c0", fontSize: 11,
              attributionLogo: false },
    grid: { vertLines: { color: "#1b222b" }, horzLines: { color: "#1b222b" } },
    rightPriceScale: { borderColor: "#262f3a" },
    timeScale: { timeVisible: true, secondsVisible: false, rightOffset: 8, barSpacing: 9,
                 borderColor: "#262f3a" },
    crosshair: { mode: 0 },
    autoSize: true,
  });
  state.series = state.chart.addSeries(LightweightCharts.CandlestickSeries, {
    upColor: "#2ebd85", downColor: "#f6465d", borderVisible: false,
    wickUpColor: "#2ebd85", wickDownColor: "#f6465d",
  });
}

function bar(k) {
  return { time: k.open_time, open: +k.open, high: +k.high, low: +k.low, close: +k.close };
}

async function loadCandles() {
  const r = await fetch(`${src.klines}?market=${state.market}&interval=${state.interval}&limit=500`);
  const rows = r.ok ? await r.json() : [];
  state.series.setData(rows.map(bar));
  state.candles = rows.length;
}

function send(op, streams) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN)
    state.ws.send(JSON.stringify({ id: ++state.reqId, op, streams }));
}

function streams(m) {
  return [`trades@${m}`, `depth@${m}`, `ticker@${m}`, `kline_${state.interval}@${m}`];
}

function setStatus(text, on) {
  $("status").textContent = text;
  $("status").className = `status ${on ? "on" : "off"}`;
}

function connect() {
  const ws = new WebSocket(src.ws);
  state.ws = ws;
  ws.onopen = () => { setStatus("live", true); send("subscribe", streams(state.market)); };
  ws.onclose = () => { setStatus("reconnecting", false); setTimeout(connect, 1000); };
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (!msg.stream) { if (msg.error) console.warn("market data:", msg.error.reason); return; }
    const [kind, market] = msg.stream.split("@");
    if (market !== state.market) return;
    if (kind === "trades") onTrades(msg.data);
    else if (kind === "depth") onDepth(msg.data);
    else if (kind === "ticker") onTicker(msg.data);
    else if (kind.startsWith("kline_") && kind.slice(6) === state.interval) onKline(msg.data);
  };
}

function onDepth(d) {
  const b = state.book;
  if (d.snapshot) {
    state.book = { epoch: d.epoch, seq: d.last_seq, bids: new Map(d.bids), asks: new Map(d.asks) };
  } else if (b && d.epoch === b.epoch && d.first_seq === b.seq + 1) {
    for (const [p, q] of d.bids) (+q ? b.bids.set(p, q) : b.bids.delete(p));
    for (const [p, q] of d.asks) (+q ? b.asks.set(p, q) : b.asks.delete(p));
    b.seq = d.last_seq;
  } else if (!b || d.last_seq > b.seq) {  // a gap: take a fresh snapshot
    send("unsubscribe", [`depth@${state.market}`]);
    send("subscribe", [`depth@${state.market}`]);
    return;
  }
  state.depthUpdates++;
  renderBook();
  hooks.book(state.book);
}

// Best first: asks ascending, bids descending (compared exactly, as decimals).
export function sortedLevels(side) {
  const b = state.book;
  if (!b) return [];
  const dir = side === "asks" ? 1 : -1;
  return [...b[side]].map(([p, q]) => [p, q, D.parse(p)])
    .sort((x, y) => dir * D.cmp(x[2], y[2])).map(([p, q]) => [p, q]);
}

function renderBook() {
  const asks = sortedLevels("asks").slice(0, LEVELS);
  const bids = sortedLevels("bids").slice(0, LEVELS);
  const totals = (levels) => {
    let total = { n: 0n, s: 0 };
    return levels.map(([, q]) => D.format(total = D.add(total, D.parse(q))));
  };
  const at = totals(asks), bt = totals(bids);
  const most = Math.max(+(at[at.length - 1] ?? 0), +(bt[bt.length - 1] ?? 0)) || 1;
  const rows = (levels, tot, side) => levels.map(([p, q], i) => {
    const w = Math.min(100, (100 * +tot[i]) / most).toFixed(1);
    return [`<tr class="level" data-price="${p}" data-side="${side}">`
      + `<td>${p}</td><td>${q}</td><td>${tot[i]}</td></tr>`, `${w}%`];
  });
  // The depth bars' widths go through the CSSOM: the gateway's CSP refuses style attributes.
  const fill = (id, made) => {
    $(id).innerHTML = made.map((r) => r[0]).join("");
    [...$(id).children].forEach((tr, i) => tr.style.setProperty("--depth", made[i][1]));
  };
  fill("asks", rows(asks, at, "ask").reverse());
  fill("bids", rows(bids, bt, "bid"));
  const spread = asks.length && bids.length
    ? D.sub(D.parse(asks[0][0]), D.parse(bids[0][0])) : null;
  $("spread").textContent = spread ? `spread ${D.format(spread)}` : "-";
}

function onTrades(trades) {
  const body = $("trades");
  for (const t of trades) {
    const tr = document.createElement("tr");
    const time = new Date(t.ts / 1e6).toLocaleTimeString([], { hour12: false });
    tr.innerHTML = `<td class="${t.side}">${t.price}</td><td>${t.qty}</td><td>${time}</td>`;
    tr.dataset.price = t.price;
    body.prepend(tr);
    state.trades++;
    state.lastTradeId = t.id;
  }
  while (body.children.length > TRADES) body.lastChild.remove();
}

function onTicker(t) {
  state.ticker = t;
  $("last").textContent = t.last ?? "-";
  $("high").textContent = t.high ?? "-";
  $("low").textContent = t.low ?? "-";
  $("volume").textContent = t.volume;
  const ch = $("change");
  ch.textContent = t.change_pct === null ? "-" : `${t.change} (${t.change_pct}%)`;
  const down = t.change && t.change.startsWith("-");
  ch.className = down ? "down" : "up";
  $("last").className = `big ${down ? "down" : "up"}`;
  document.title = `${t.last ?? "-"} ${t.market} · Exchange`;
  $("mid").textContent = t.last ?? "-";
  $("mid").className = `mid ${down ? "down" : "up"}`;
}

function onKline(k) {
  state.series.update(bar(k));
  state.candles = state.series.data().length;
}

async function selectMarket(m) {
  if (state.market && state.market !== m) send("unsubscribe", streams(state.market));
  state.market = m; state.book = null; state.ticker = null;
  $("trades").innerHTML = ""; $("asks").innerHTML = ""; $("bids").innerHTML = "";
  hooks.market(m);
  const spec = state.markets.find((x) => x.symbol === m);
  if (spec) {  // the axis shows prices on the market's tick
    const places = D.decimalsOf(spec.tick);
    state.series.applyOptions({ priceFormat: { type: "price", precision: places,
                                               minMove: 10 ** -places } });
  }
  await loadCandles();
  send("subscribe", streams(m));
  const r = await fetch(`${src.trades}?market=${m}&limit=${TRADES}`);
  if (r.ok) onTrades(await r.json());
}

function setupIntervals() {
  for (const iv of INTERVALS) {
    const b = document.createElement("button");
    b.textContent = iv; b.className = iv === state.interval ? "on" : "";
    b.onclick = async () => {
      send("unsubscribe", [`kline_${state.interval}@${state.market}`]);
      state.interval = iv;
      for (const x of $("intervals").children) x.className = x.textContent === iv ? "on" : "";
      await loadCandles();
      send("subscribe", [`kline_${iv}@${state.market}`]);
    };
    $("intervals").appendChild(b);
  }
}

function setupClicks() {
  const pick = (ev) => {
    const tr = ev.target.closest("tr[data-price]");
    if (tr) hooks.price(tr.dataset.price, tr.dataset.side);
  };
  for (const id of ["asks", "bids", "trades"]) $(id).addEventListener("click", pick);
}

// source: {ws, markets, klines, trades} URLs; on: {price(p, side), market(m), book(b)}.
export async function startMarket(source, on) {
  src = source;
  hooks = { ...hooks, ...on };
  setupChart();
  setupIntervals();
  setupClicks();
  state.markets = await (await fetch(src.markets)).json();
  const sel = $("market");
  for (const m of state.markets) sel.add(new Option(m.symbol.replace("-", " / "), m.symbol));
  const wanted = new URLSearchParams(location.search).get("market");
  if (wanted && state.markets.some((m) => m.symbol === wanted)) sel.value = wanted;
  sel.onchange = () => selectMarket(sel.value);
  state.market = sel.value;
  await selectMarket(sel.value);
  connect();
}
