// Exact decimal arithmetic on strings, with BigInt: the ticket validates and totals prices and
// quantities without ever turning them into floats (a float cannot hold 0.1 exactly).
// A decimal is {n: BigInt, s: scale}: the value n / 10^s.

const DECIMAL = /^(\d+)(?:\.(\d+))?$/;

export function parse(text) {
  const m = DECIMAL.exec(String(text ?? "").trim());
  if (!m) return null;
  const frac = m[2] ?? "";
  return { n: BigInt(m[1] + frac), s: frac.length };
}

function scaled(d, s) {
  return d.n * 10n ** BigInt(s - d.s);
}

export function cmp(a, b) {
  const s = Math.max(a.s, b.s);
  const x = scaled(a, s), y = scaled(b, s);
  return x < y ? -1 : x > y ? 1 : 0;
}

export function isZero(d) {
  return d.n === 0n;
}

export function isMultiple(d, step) {
  const s = Math.max(d.s, step.s);
  const unit = scaled(step, s);
  return unit !== 0n && scaled(d, s) % unit === 0n;
}

export function add(a, b) {
  const s = Math.max(a.s, b.s);
  return { n: scaled(a, s) + scaled(b, s), s };
}

export function sub(a, b) {
  const s = Math.max(a.s, b.s);
  return { n: scaled(a, s) - scaled(b, s), s };
}

export function mul(a, b) {
  return { n: a.n * b.n, s: a.s + b.s };
}

// a / b, truncated to `places` decimals (for an estimated quantity from an amount to spend).
export function div(a, b, places) {
  if (b.n === 0n) return null;
  const num = a.n * 10n ** BigInt(places + b.s);
  const den = b.n * 10n ** BigInt(a.s);
  return { n: num / den, s: places };
}

// Rounded down (towards zero) to `places` decimals, as the engine rounds fees.
export function floor(d, places) {
  if (d.s <= places) return { n: scaled(d, places), s: places };
  return { n: d.n / 10n ** BigInt(d.s - places), s: places };
}

// Up to the next multiple of 10^-places (what a buy locks is never under the true cost).
export function ceil(d, places) {
  const f = floor(d, places);
  return cmp(f, d) < 0 && d.n > 0n ? { n: f.n + 1n, s: places } : f;
}

export function format(d, places = d.s) {
  const v = places === d.s ? d : floor(d, places);
  const neg = v.n < 0n;
  let digits = (neg ? -v.n : v.n).toString();
  if (v.s === 0) return (neg ? "-" : "") + digits;
  digits = digits.padStart(v.s + 1, "0");
  const out = `${digits.slice(0, -v.s)}.${digits.slice(-v.s)}`;
  return (neg ? "-" : "") + out;
}

export function decimalsOf(text) {
  const d = parse(text);
  return d ? d.s : 0;
}

// The exact sum of decimal strings (the book's cumulative sizes).
export function sum(texts) {
  return texts.reduce((acc, t) => add(acc, parse(t) ?? { n: 0n, s: 0 }), { n: 0n, s: 0 });
}

// Down to a multiple of `step` (a quantity the lot allows).
export function floorTo(d, step) {
  const s = Math.max(d.s, step.s);
  const unit = scaled(step, s);
  if (unit === 0n) return d;
  return { n: (scaled(d, s) / unit) * unit, s };
}

// Without trailing zeros beyond `min` decimals: "0.010000" -> "0.01" (min 2).
export function trim(text, min = 0) {
  if (!text.includes(".")) return text;
  let [i, f] = text.split(".");
  while (f.length > min && f.endsWith("0")) f = f.slice(0, -1);
  return f.length ? `${i}.${f}` : i;
}
