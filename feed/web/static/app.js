// The dashboard: one page that watches a market (market.js) and, when the HTTP gateway serves
// it, trades (account.js, trade.js, dialogs.js). GET /api/v1/site (docs/web.md) says where the
// streams are; where it does not answer (the bridge serves the page too) the page is watch-only.
import { state, startMarket } from "./market.js";
import { account, startAccount } from "./account.js";
import { ticket, startTrade, setMarket, pickPrice, bookChanged } from "./trade.js";
import { startDialogs } from "./dialogs.js";

window.dashboard = state;  // read by the browser tests
state.account = account;
state.ticket = ticket;

async function site() {
  try {
    const r = await fetch("/api/v1/site");
    return r.ok ? await r.json() : null;
  } catch {
    return null;
  }
}

async function main() {
  const answer = await site();
  const s = answer && answer.private_ws ? answer : null;  // the bridge: watch-only
  state.site = s;
  document.body.classList.toggle("watch-only", !s);
  const trade = document.getElementById("trade-at");
  if (!s && answer && answer.trade_at) {
    trade.href = answer.trade_at;
    trade.hidden = false;
  }
  const ws = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  const source = s
    ? { ws: s.market_ws, markets: "/api/v1/markets", klines: "/api/v1/klines",
        trades: "/api/v1/trades" }
    : { ws, markets: "/api/markets", klines: "/api/klines", trades: "/api/trades" };
  startDialogs();
  startTrade();
  const signedIn = startAccount(s);
  await startMarket(source, { market: setMarket, price: pickPrice, book: bookChanged });
  await signedIn;
  state.ready = true;
}
main();
