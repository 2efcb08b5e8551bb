/**
 * One counter workload, five ways, in one Bun process:
 *
 * 1. bun:sqlite `:memory:`, the upsert prepared on every call (the pattern
 *    many Bun users write by hand);
 * 2. bun:sqlite `:memory:`, the statement prepared once (the best hand-tuned
 *    in-memory version);
 * 3. roost `memory` mode through the sync binding;
 * 4. bun:sqlite file database, WAL + `synchronous=FULL`, prepared once (the
 *    durable equivalent: one fsync per increment);
 * 5. roost `durable` mode through the async binding with many writes in
 *    flight (group commit: one fsync per batch).
 *
 * Two context rows follow (roost durable one write at a time, roost memory
 * async). Every scenario checks that the counter ends at the number of
 * increments it made. Targets (from the issue): 3 ≥ 5× 1 and ≥ 1× 2;
 * 5 ≥ 10× 4.
 *
 * Usage: bench/bun/run [counter] [--seconds N] [--window N] [--append]
 */
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Roost } from "../../bindings/bun/index.ts";
import { appendReport, runHeading } from "./results.ts";

const args = process.argv.slice(2);
function flag(name: string, fallback: number): number {
  const at = args.indexOf(name);
  return at >= 0 && at + 1 < args.length ? Number(args[at + 1]) : fallback;
}
const SECONDS = flag("--seconds", 3);
const WINDOW = flag("--window", 1000);
const WARM_UP_MS = 500;
const APPEND = args.includes("--append");

const UPSERT =
  "INSERT INTO counters (id, val) VALUES (?1, 1) ON CONFLICT(id) DO UPDATE SET val = val + 1 RETURNING val";
const SCHEMA = "CREATE TABLE IF NOT EXISTS counters (id TEXT PRIMARY KEY, val INTEGER NOT NULL)";
const COUNTER_ID = "counter-1";

interface Measurement {
  name: string;
  ops: number;
  seconds: number;
  opsPerSec: number;
}

const scratch = mkdtempSync(join(tmpdir(), "roost-bun-bench-"));
process.on("exit", () => rmSync(scratch, { recursive: true, force: true }));

/** Runs `op` in a loop: a warm-up, then `SECONDS` measured. Returns increments made. */
function runSync(name: string, op: () => number): { measurement: Measurement; total: number } {
  let total = 0;
  let last = 0;
  const warmUntil = performance.now() + WARM_UP_MS;
  while (performance.now() < warmUntil) {
    for (let i = 0; i < 64; i++) last = op();
    total += 64;
  }
  const started = performance.now();
  const until = started + SECONDS * 1000;
  let ops = 0;
  while (performance.now() < until) {
    for (let i = 0; i < 64; i++) last = op();
    ops += 64;
  }
  const seconds = (performance.now() - started) / 1000;
  total += ops;
  if (last !== total) throw new Error(`${name}: counter is ${last} after ${total} increments`);
  return { measurement: { name, ops, seconds, opsPerSec: ops / seconds }, total };
}

/** Keeps `WINDOW` increments in flight: a warm-up, then `SECONDS` measured. */
async function runAsync(name: string, op: () => Promise<number>): Promise<{ measurement: Measurement; total: number }> {
  let total = 0;
  let measuredOps = 0;
  let measuring = false;
  let highest = 0;
  const warmUntil = performance.now() + WARM_UP_MS;
  const until = warmUntil + SECONDS * 1000;
  let started = 0;
  const worker = async () => {
    while (performance.now() < until) {
      const value = await op();
      if (value > highest) highest = value;
      total++;
      if (!measuring && performance.now() >= warmUntil) {
        measuring = true;
        started = performance.now();
      }
      if (measuring) measuredOps++;
    }
  };
  await Promise.all(Array.from({ length: WINDOW }, worker));
  const seconds = (performance.now() - started) / 1000;
  if (highest !== total) throw new Error(`${name}: counter is ${highest} after ${total} increments`);
  return { measurement: { name, ops: measuredOps, seconds, opsPerSec: measuredOps / seconds }, total };
}

function sqlitePreparePerCall(): Measurement {
  const db = new Database(":memory:");
  db.run(SCHEMA);
  const { measurement } = runSync("bun:sqlite :memory:, prepare on every call", () => {
    const statement = db.prepare(UPSERT);
    const row = statement.get(COUNTER_ID) as { val: number };
    statement.finalize();
    return row.val;
  });
  db.close();
  return measurement;
}

function sqlitePreparedOnce(): Measurement {
  const db = new Database(":memory:");
  db.run(SCHEMA);
  const statement = db.prepare(UPSERT);
  const { measurement } = runSync(
    "bun:sqlite :memory:, prepared once",
    () => (statement.get(COUNTER_ID) as { val: number }).val,
  );
  statement.finalize();
  db.close();
  return measurement;
}

function sqliteDurable(): Measurement {
  const db = new Database(join(scratch, "durable.sqlite"), { create: true });
  db.run("PRAGMA journal_mode = WAL");
  db.run("PRAGMA synchronous = FULL");
  db.run(SCHEMA);
  const statement = db.prepare(UPSERT);
  const { measurement } = runSync(
    "bun:sqlite file, WAL + synchronous=FULL, prepared once",
    () => (statement.get(COUNTER_ID) as { val: number }).val,
  );
  statement.finalize();
  db.close();
  return measurement;
}

function roostMemorySync(): Measurement {
  const db = Roost.open({ dataDir: join(scratch, "roost-memory"), durability: "memory" });
  const counter = db.actor(COUNTER_ID).counter("val");
  const { measurement } = runSync("roost memory, sync binding", () => counter.add(1));
  db.close();
  return measurement;
}

function roostDurableSync(): Measurement {
  const db = Roost.open({ dataDir: join(scratch, "roost-durable-sync"), durability: "durable" });
  const counter = db.actor(COUNTER_ID).counter("val");
  const { measurement } = runSync("roost durable, sync binding (one write at a time)", () => counter.add(1));
  db.close();
  return measurement;
}

async function roostAsync(durability: "durable" | "memory", label: string): Promise<Measurement> {
  const db = Roost.open({ dataDir: join(scratch, `roost-${durability}-async`), durability });
  const counter = db.actor(COUNTER_ID).counter("val");
  const { measurement } = await runAsync(label, () => counter.addAsync(1));
  db.close();
  return measurement;
}

function ratio(a: Measurement, b: Measurement): number {
  return a.opsPerSec / b.opsPerSec;
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

const preparePerCall = sqlitePreparePerCall();
const preparedOnce = sqlitePreparedOnce();
const memorySync = roostMemorySync();
const sqliteFull = sqliteDurable();
const durableAsync = await roostAsync("durable", `roost durable, async binding, ${WINDOW} in flight`);
const durableSync = roostDurableSync();
const memoryAsync = await roostAsync("memory", `roost memory, async binding, ${WINDOW} in flight`);

const rows = [preparePerCall, preparedOnce, memorySync, sqliteFull, durableAsync];
const context = [durableSync, memoryAsync];
const targets = [
  {
    what: "roost memory (sync) / bun:sqlite prepare on every call",
    value: ratio(memorySync, preparePerCall),
    target: 5,
  },
  { what: "roost memory (sync) / bun:sqlite prepared once", value: ratio(memorySync, preparedOnce), target: 1 },
  {
    what: "roost durable (async) / bun:sqlite WAL + synchronous=FULL",
    value: ratio(durableAsync, sqliteFull),
    target: 10,
  },
];

const lines: string[] = [];
lines.push(runHeading());
lines.push("");
lines.push(`${SECONDS} s measured per scenario after a ${WARM_UP_MS} ms warm-up; one counter incremented by 1 per op.`);
lines.push("");
lines.push("| scenario | ops/s |");
lines.push("|---|---:|");
for (const m of rows) lines.push(`| ${m.name} | ${fmt(m.opsPerSec)} |`);
for (const m of context) lines.push(`| (context) ${m.name} | ${fmt(m.opsPerSec)} |`);
lines.push("");
lines.push("| ratio | measured | target | |");
lines.push("|---|---:|---:|---|");
for (const t of targets) {
  lines.push(
    `| ${t.what} | ${t.value.toFixed(2)}× | ≥ ${t.target}× | ${t.value >= t.target ? "met" : "**not met**"} |`,
  );
}
const report = lines.join("\n");
console.log(report);

if (APPEND) appendReport("## Bun binding (bench/bun/run)", report);
