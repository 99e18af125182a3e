// The dashboard: candles, order book, trades and ticker for one market, live over /ws.
// Prices arrive as exact decimal strings; they are turned into numbers only for display.
"use strict";
const LEVELS = 15, TRADES = 40;
const state = { market: null, interval: "1m", ws: null, book: null, candles: 0, trades: 0,
                lastTradeId: 0, depthUpdates: 0, series: null, chart: null, reqId: 0 };
window.dashboard = state;  // read by the browser test

const $ = (id) => document.getElementById(id);

function setupChart() {
  const el = $("chart");
  state.chart = LightweightCharts.createChart(el, {
    layout: { background: { color: "#161c23" }, textColor: "#d6dde6" },
    grid: { vertLines: { color: "#1f2630" }, horzLines: { color: "#1f2630" } },
    timeScale: { timeVisible: true, secondsVisible: false, rightOffset: 8, barSpacing: 10 },
    autoSize: true,
  });
  state.series = state.chart.addSeries(LightweightCharts.CandlestickSeries, {
    upColor: "#26a69a", downColor: "#ef5350", borderVisible: false,
    wickUpColor: "#26a69a", wickDownColor: "#ef5350",
  });
}

function bar(k) {
  return { time: k.open_time, open: +k.open, high: +k.high, low: +k.low, close: +k.close };
}

async function loadCandles() {
  const r = await fetch(`/api/klines?market=${state.market}&interval=${state.interval}&limit=500`);
  const rows = await r.json();
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

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  state.ws = ws;
  ws.onopen = () => { $("status").textContent = "live"; $("status").className = "status on";
                      send("subscribe", streams(state.market)); };
  ws.onclose = () => { $("status").textContent = "reconnecting"; $("status").className = "status off";
                       setTimeout(connect, 1000); };
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (!msg.stream) { if (msg.error) console.warn("bridge:", msg.error.reason); return; }
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
}

function renderBook() {
  const b = state.book;
  const asks = [...b.asks].sort((x, y) => +x[0] - +y[0]).slice(0, LEVELS);
  const bids = [...b.bids].sort((x, y) => +y[0] - +x[0]).slice(0, LEVELS);
  const rows = (levels) => {
    let total = 0;
    return levels.map(([p, q]) => { total += +q;
      return `<tr class="level"><td>${p}</td><td>${q}</td><td>${total.toFixed(4)}</td></tr>`; });
  };
  $("asks").innerHTML = rows(asks).reverse().join("");
  $("bids").innerHTML = rows(bids).join("");
  $("spread").textContent = asks.length && bids.length
    ? `spread ${(+asks[0][0] - +bids[0][0]).toFixed(8).replace(/\.?0+$/, "")}` : "-";
}

function onTrades(trades) {
  const body = $("trades");
  for (const t of trades) {
    const tr = document.createElement("tr");
    const time = new Date(t.ts / 1e6).toLocaleTimeString();
    tr.innerHTML = `<td class="${t.side}">${t.price}</td><td>${t.qty}</td><td>${time}</td>`;
    body.prepend(tr);
    state.trades++;
    state.lastTradeId = t.id;
  }
  while (body.children.length > TRADES) body.lastChild.remove();
}

function onTicker(t) {
  $("last").textContent = t.last ?? "-";
  $("high").textContent = t.high ?? "-";
  $("low").textContent = t.low ?? "-";
  $("volume").textContent = t.volume;
  const ch = $("change");
  ch.textContent = t.change_pct === null ? "-" : `${t.change} (${t.change_pct}%)`;
  ch.className = t.change && t.change.startsWith("-") ? "down" : "up";
}

function onKline(k) {
  state.series.update(bar(k));
  state.candles = state.series.data().length;
}

async function selectMarket(m) {
  if (state.market) send("unsubscribe", streams(state.market));
  state.market = m; state.book = null; $("trades").innerHTML = "";
  await loadCandles();
  send("subscribe", streams(m));
  const r = await fetch(`/api/trades?market=${m}&limit=${TRADES}`);
  onTrades(await r.json());
}

function setupIntervals() {
  for (const iv of ["1m", "5m", "15m", "1h", "4h", "1d"]) {
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

async function main() {
  setupChart();
  setupIntervals();
  const markets = await (await fetch("/api/markets")).json();
  const sel = $("market");
  for (const m of markets) sel.add(new Option(m.symbol, m.symbol));
  const wanted = new URLSearchParams(location.search).get("market");
  if (wanted) sel.value = wanted;
  sel.onchange = () => selectMarket(sel.value);
  state.market = sel.value;
  await selectMarket(sel.value);
  connect();
}
main();
