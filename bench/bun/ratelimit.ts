/**
 * Rate-limit decisions per second in one Bun process: roost's limiter
 * through the sync binding next to hand-written baselines.
 *
 * 1. GCRA in a JS `Map`: in memory, nothing persisted (the floor of what a
 *    decision can cost);
 * 2. GCRA on bun:sqlite `:memory:`: read the key's TAT, write it back,
 *    statements prepared once;
 * 3. the same on a bun:sqlite file, WAL + `synchronous=NORMAL` (persisted,
 *    no fsync per decision);
 * 4. roost `memory` engine, sync binding;
 * 5. roost `durable` engine, sync binding: its limiter actors are
 *    `buffered`, so a decision is answered from memory and the state is
 *    written at the next flush.
 *
 * Each runs once on one hot key and once cycling over 10,000 keys (client
 * IPs). The policy admits every request (10^9 per minute) and every
 * scenario checks that it did. A context row measures denials: one key far
 * over a limit of 10 per hour, checked to admit exactly 10.
 *
 * Usage: bench/bun/run ratelimit [--seconds N] [--append]
 */
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Roost, type Durability } from "../../bindings/bun/index.ts";
import { appendReport, runHeading } from "./results.ts";

const args = process.argv.slice(2);
function flag(name: string, fallback: number): number {
  const at = args.indexOf(name);
  return at >= 0 && at + 1 < args.length ? Number(args[at + 1]) : fallback;
}
const SECONDS = flag("--seconds", 3);
const WARM_UP_MS = 500;
const APPEND = args.includes("--append");

const LIMIT = 1_000_000_000;
const WINDOW_MS = 60_000;
const WINDOW_US = WINDOW_MS * 1000;
const INTERVAL_US = WINDOW_US / LIMIT;
const MANY = 10_000;
const ONE_KEY = ["203.0.113.7"];
const MANY_KEYS = Array.from({ length: MANY }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);

const scratch = mkdtempSync(join(tmpdir(), "roost-bun-ratelimit-bench-"));
process.on("exit", () => rmSync(scratch, { recursive: true, force: true }));

/** A limiter under test: decides one request for `key`. */
interface Limiter {
  decide(key: string): boolean;
  close(): void;
}

/** GCRA: the TAT after admitting one unit at `nowUs`, or null when denied. */
function gcra(tat: number | undefined | null, nowUs: number): number | null {
  const next = (tat != null && tat > nowUs ? tat : nowUs) + INTERVAL_US;
  return next - WINDOW_US <= nowUs ? next : null;
}

function jsMap(): Limiter {
  const tats = new Map<string, number>();
  return {
    decide(key) {
      const next = gcra(tats.get(key), Date.now() * 1000);
      if (next === null) return false;
      tats.set(key, next);
      return true;
    },
    close() {},
  };
}

function sqlite(path: string): Limiter {
  const db = new Database(path, { create: true });
  if (path !== ":memory:") {
    db.run("PRAGMA journal_mode = WAL");
    db.run("PRAGMA synchronous = NORMAL");
  }
  db.run("CREATE TABLE IF NOT EXISTS limits (key TEXT PRIMARY KEY, tat REAL NOT NULL)");
  const read = db.prepare("SELECT tat FROM limits WHERE key = ?1");
  const write = db.prepare(
    "INSERT INTO limits (key, tat) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET tat = excluded.tat",
  );
  return {
    decide(key) {
      const row = read.get(key) as { tat: number } | null;
      const next = gcra(row?.tat, Date.now() * 1000);
      if (next === null) return false;
      write.run(key, next);
      return true;
    },
    close() {
      read.finalize();
      write.finalize();
      db.close();
    },
  };
}

let runs = 0;
function roost(durability: Durability, policy = { limit: LIMIT, windowMs: WINDOW_MS }): Limiter {
  const db = Roost.open({ dataDir: join(scratch, `roost-${durability}-${runs++}`), durability });
  return {
    decide: (key) => db.ratelimit(key, policy).allowed,
    close: () => db.close(),
  };
}

/** Decides in a loop over `keys`: a warm-up, then `SECONDS` measured. Returns decisions/s. */
function measure(name: string, limiter: Limiter, keys: string[], expectAllowed = true): number {
  let decisions = 0;
  let allowed = 0;
  let next = 0;
  const batch = () => {
    for (let i = 0; i < 64; i++) {
      if (limiter.decide(keys[next])) allowed++;
      next = next + 1 === keys.length ? 0 : next + 1;
    }
    decisions += 64;
  };
  const warmUntil = performance.now() + WARM_UP_MS;
  while (performance.now() < warmUntil) batch();
  const warmDecisions = decisions;
  const started = performance.now();
  const until = started + SECONDS * 1000;
  while (performance.now() < until) batch();
  const seconds = (performance.now() - started) / 1000;
  limiter.close();
  if (expectAllowed && allowed !== decisions) {
    throw new Error(`${name}: ${allowed} of ${decisions} decisions allowed under a limit never reached`);
  }
  if (!expectAllowed && allowed !== 10) throw new Error(`${name}: admitted ${allowed}, not the limit of 10`);
  return (decisions - warmDecisions) / seconds;
}

const scenarios: { name: string; make: () => Limiter }[] = [
  { name: "JS Map, GCRA in memory (nothing persisted)", make: jsMap },
  { name: "bun:sqlite :memory:, GCRA, prepared once", make: () => sqlite(":memory:") },
  {
    name: "bun:sqlite file, WAL + synchronous=NORMAL, GCRA, prepared once",
    make: () => sqlite(join(scratch, `limits-${runs++}.sqlite`)),
  },
  { name: "roost memory, sync binding", make: () => roost("memory") },
  { name: "roost durable (limiter buffered), sync binding", make: () => roost("durable") },
];

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const lines: string[] = [runHeading(), ""];
lines.push(
  `${SECONDS} s measured per scenario after a ${WARM_UP_MS} ms warm-up; one decision (cost 1) per op, ` +
    `policy 10^9 per ${WINDOW_MS / 1000} s, so every request is allowed.`,
);
lines.push("");
lines.push(`| scenario | decisions/s, 1 key | decisions/s, ${fmt(MANY)} keys |`);
lines.push("|---|---:|---:|");
for (const { name, make } of scenarios) {
  const one = measure(`${name}, 1 key`, make(), ONE_KEY);
  const many = measure(`${name}, ${MANY} keys`, make(), MANY_KEYS);
  lines.push(`| ${name} | ${fmt(one)} | ${fmt(many)} |`);
}
const denials = measure("roost memory, denials", roost("memory", { limit: 10, windowMs: 3_600_000 }), ONE_KEY, false);
lines.push(`| (context) roost memory, sync binding, 1 key over a limit of 10/hour (denials) | ${fmt(denials)} | |`);
const report = lines.join("\n");
console.log(report);

if (APPEND) appendReport("## Bun binding: rate limiting (bench/bun/run ratelimit)", report);
