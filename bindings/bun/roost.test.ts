import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Roost, RoostError, version, type Durability } from "./index.ts";

const dirs: string[] = [];
const open: Roost[] = [];

function freshDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "roost-bun-"));
  dirs.push(dir);
  return dir;
}

function openDb(durability: Durability = "memory", dataDir = freshDir(), config?: Record<string, number>): Roost {
  const db = Roost.open({ dataDir, durability, config });
  open.push(db);
  return db;
}

afterEach(() => {
  for (const db of open.splice(0)) db.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** The RoostError `fn` throws (or rejects with). */
async function failure(fn: () => unknown): Promise<RoostError> {
  try {
    await fn();
  } catch (err) {
    expect(err).toBeInstanceOf(RoostError);
    return err as RoostError;
  }
  throw new Error("expected a RoostError");
}

const text = (bytes: Uint8Array | undefined) => (bytes === undefined ? undefined : new TextDecoder().decode(bytes));

describe("the library", () => {
  test("reports the version in Cargo.toml", () => {
    const manifest = readFileSync(join(import.meta.dir, "..", "..", "Cargo.toml"), "utf8");
    const cargoVersion = /^version = "(.*)"$/m.exec(manifest)?.[1];
    expect(version()).toBe(cargoVersion!);
  });

  test("is loaded from libPath, and a wrong libPath fails to open", () => {
    const libPath = join(import.meta.dir, "..", "..", "target", "release", "libroost.so");
    const db = Roost.open({ dataDir: freshDir(), durability: "memory", libPath });
    expect(db.actor("a").counter("n").add()).toBe(1);
    db.close();
    expect(() => Roost.open({ dataDir: freshDir(), libPath: "/nonexistent/libroost.so" })).toThrow();
  });
});

describe("counters", () => {
  test("add returns the new value and get reads it (0 if never set)", () => {
    const counter = openDb().actor("room").counter("hits");
    expect(counter.get()).toBe(0);
    expect(counter.add()).toBe(1);
    expect(counter.add(41)).toBe(42);
    expect(counter.add(-2)).toBe(40);
    expect(counter.get()).toBe(40);
  });

  test("async add and get resolve with the values", async () => {
    const counter = openDb("durable").actor("room").counter("hits");
    const values = await Promise.all(Array.from({ length: 100 }, () => counter.addAsync(1)));
    expect(values.sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(await counter.getAsync()).toBe(100);
  });

  test("overflow is an error and changes nothing", async () => {
    const counter = openDb().actor("room").counter("big");
    expect(counter.add(2 ** 62)).toBe(2 ** 62);
    const err = await failure(() => counter.add(2 ** 62));
    expect(err.code).toBe("ROOST_INVALID_REQUEST");
    expect(counter.get()).toBe(2 ** 62);
  });

  test("memory counters are current in SQL and in an export right after adds", async () => {
    const actor = openDb("memory").actor("room");
    const hits = actor.counter("hits");
    for (let i = 0; i < 1000; i++) hits.add(1);
    await Promise.all(Array.from({ length: 10 }, () => hits.addAsync(1)));
    actor.counter("misses").add(-3);
    const read = "SELECT name, value FROM _roost_counters ORDER BY name";
    expect(actor.sql(read).rows).toEqual([
      ["hits", 1010],
      ["misses", -3],
    ]);
    hits.add(5);
    const path = join(freshDir(), "export.db");
    writeFileSync(path, actor.export());
    const copy = new Database(path, { readonly: true });
    expect(copy.query(read).values()).toEqual([
      ["hits", 1015],
      ["misses", -3],
    ]);
    copy.close();
  });
});

describe("storage", () => {
  test("get, put and delete strings and bytes", () => {
    const storage = openDb().actor("room").storage;
    expect(storage.get("missing")).toBeUndefined();
    storage.put("text", "héllo");
    expect(storage.getText("text")).toBe("héllo");
    storage.put("bytes", new Uint8Array([0, 255, 7]));
    expect([...storage.get("bytes")!]).toEqual([0, 255, 7]);
    storage.put("empty", "");
    expect(storage.get("empty")).toEqual(new Uint8Array(0));
    expect(storage.delete("text")).toBe(true);
    expect(storage.delete("text")).toBe(false);
    expect(storage.get("text")).toBeUndefined();
  });

  test("list returns a Map in key order with prefix, range, limit and reverse", () => {
    const storage = openDb().actor("room").storage;
    for (const key of ["b/2", "a/1", "a/3", "a/2", "c"]) storage.put(key, key.toUpperCase());
    storage.put("a/bin", new Uint8Array([0xff]));
    const all = storage.list();
    expect([...all.keys()]).toEqual(["a/1", "a/2", "a/3", "a/bin", "b/2", "c"]);
    expect(text(all.get("b/2"))).toBe("B/2");
    expect([...all.get("a/bin")!]).toEqual([0xff]);
    expect([...storage.list({ prefix: "a/" }).keys()]).toEqual(["a/1", "a/2", "a/3", "a/bin"]);
    expect([...storage.list({ start: "a/2", end: "b/2" }).keys()]).toEqual(["a/2", "a/3", "a/bin"]);
    expect([...storage.list({ limit: 2, reverse: true }).keys()]).toEqual(["c", "b/2"]);
  });

  test("list follows cursors past one page", async () => {
    const storage = openDb().actor("many").storage;
    for (let i = 0; i < 1500; i++) storage.put(`k${String(i).padStart(4, "0")}`, String(i));
    expect(storage.list().size).toBe(1500);
    expect(storage.list({ limit: 1200 }).size).toBe(1200);
    const listed = await storage.listAsync();
    expect(listed.size).toBe(1500);
    expect(text(listed.get("k1499"))).toBe("1499");
    expect((await storage.listAsync({ prefix: "k1" })).size).toBe(500);
  });

  test("async get, put, delete and list", async () => {
    const storage = openDb("durable").actor("room").storage;
    await storage.putAsync("k", "v");
    expect(await storage.getTextAsync("k")).toBe("v");
    expect(await storage.getAsync("nope")).toBeUndefined();
    expect([...(await storage.listAsync()).keys()]).toEqual(["k"]);
    expect(await storage.deleteAsync("k")).toBe(true);
    expect(await storage.deleteAsync("k")).toBe(false);
  });
});

describe("sql", () => {
  test("runs statements with positional and named params", () => {
    const actor = openDb().actor("db");
    actor.sql("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, data BLOB, big INTEGER)");
    const inserted = actor.sql("INSERT INTO items (name, price, data, big) VALUES (?, ?, ?, ?)", [
      "apple",
      1.5,
      new Uint8Array([1, 2, 3]),
      1n << 40n,
    ]);
    expect(inserted.rowsAffected).toBe(1);
    expect(inserted.lastInsertRowid).toBe(1);
    actor.sql("INSERT INTO items (name, price) VALUES (:name, :price)", { name: "pear", price: 2 });
    const result = actor.sql("SELECT name, price, data, big FROM items ORDER BY id");
    expect(result.columns).toEqual(["name", "price", "data", "big"]);
    expect(result.rows[0]).toEqual(["apple", 1.5, new Uint8Array([1, 2, 3]), 2 ** 40]);
    expect(result.objects()[1]).toEqual({ name: "pear", price: 2, data: null, big: null });
  });

  test("a batch is one transaction: a failing statement undoes the others", async () => {
    const actor = openDb().actor("db");
    actor.sql("CREATE TABLE t (x INTEGER UNIQUE)");
    const err = await failure(() =>
      actor.batch([{ sql: "INSERT INTO t VALUES (1)" }, { sql: "INSERT INTO t VALUES (1)" }]),
    );
    expect(err.code).toBe("ROOST_SQL_ERROR");
    expect(actor.sql("SELECT count(*) FROM t").rows).toEqual([[0]]);
    const results = await actor.batchAsync([
      { sql: "INSERT INTO t VALUES (?)", params: [1] },
      { sql: "SELECT x FROM t" },
    ]);
    expect(results[1].rows).toEqual([[1]]);
  });

  test("async sql resolves with the result", async () => {
    const actor = openDb("durable").actor("db");
    expect((await actor.sqlAsync("SELECT 6 * 7 AS answer")).rows).toEqual([[42]]);
  });

  test("denied and broken SQL fail with their codes", async () => {
    const actor = openDb().actor("db");
    expect((await failure(() => actor.sql("ATTACH 'x.db' AS x"))).code).toBe("ROOST_SQL_DENIED");
    expect((await failure(() => actor.sql("SELEKT 1"))).code).toBe("ROOST_SQL_ERROR");
    expect((await failure(() => actor.sqlAsync("SELEKT 1"))).code).toBe("ROOST_SQL_ERROR");
    expect(() => actor.sql("SELECT ?", [Number.NaN])).toThrow(TypeError);
  });
});

describe("persistence", () => {
  test("durable data survives close and reopen", async () => {
    const dataDir = freshDir();
    const db = Roost.open({ dataDir });
    const actor = db.actor("user:1");
    actor.counter("visits").add(3);
    actor.storage.put("name", "ada");
    await actor.storage.putAsync("async", "kept");
    actor.sql("CREATE TABLE notes (body TEXT)");
    await actor.sqlAsync("INSERT INTO notes VALUES (?)", ["hi"]);
    db.close();

    const again = openDb("durable", dataDir);
    const same = again.actor("user:1");
    expect(same.counter("visits").get()).toBe(3);
    expect(same.storage.getText("name")).toBe("ada");
    expect(same.storage.getText("async")).toBe("kept");
    expect(same.sql("SELECT body FROM notes").rows).toEqual([["hi"]]);
    expect(again.listActors().actors.map((a) => a.id)).toEqual(["user:1"]);
  });

  test("buffered writes are flushed by close", () => {
    const dataDir = freshDir();
    const db = Roost.open({ dataDir, durability: "buffered", config: { flush_interval_ms: 60_000 } });
    for (let i = 0; i < 100; i++) db.actor("b").storage.put(`k${i}`, "v");
    db.close();
    expect(openDb("buffered", dataDir).actor("b").storage.list().size).toBe(100);
  });

  test("export and import move an actor's state", async () => {
    const db = openDb("durable");
    db.actor("from").counter("n").add(9);
    const file = db.actor("from").export();
    expect(new TextDecoder().decode(file.subarray(0, 15))).toBe("SQLite format 3");
    db.actor("to").import(file);
    expect(db.actor("to").counter("n").get()).toBe(9);
    expect((await failure(() => db.actor("to").import(new TextEncoder().encode("garbage")))).code).toBe(
      "ROOST_INVALID_REQUEST",
    );
    expect((await failure(() => db.actor("nobody").export())).code).toBe("ROOST_NOT_FOUND");
  });

  test("destroy removes the actor", async () => {
    const db = openDb("durable");
    db.actor("gone").storage.put("k", "v");
    expect(db.actor("gone").destroy()).toBe(true);
    expect(db.actor("gone").storage.get("k")).toBeUndefined();
    expect(await db.actor("gone").destroyAsync()).toBe(false);
  });
});

describe("errors", () => {
  test("a bad actor id fails with ROOST_INVALID_ACTOR_ID, sync and async", async () => {
    const db = openDb();
    for (const id of ["", "a\nb", "x".repeat(513)]) {
      const sync = await failure(() => db.actor(id).counter("n").add());
      expect(sync.code).toBe("ROOST_INVALID_ACTOR_ID");
      expect(sync.message).toContain("ROOST_INVALID_ACTOR_ID");
      const async = await failure(() => db.actor(id).storage.putAsync("k", "v"));
      expect(async.code).toBe("ROOST_INVALID_ACTOR_ID");
    }
  });

  test("oversized keys and values fail with ROOST_TOO_LARGE", async () => {
    const storage = openDb("memory", freshDir(), { max_key_bytes: 8, max_value_bytes: 16 }).actor("a").storage;
    storage.put("12345678", "x".repeat(16));
    expect((await failure(() => storage.put("123456789", "x"))).code).toBe("ROOST_TOO_LARGE");
    expect((await failure(() => storage.put("k", "x".repeat(17)))).code).toBe("ROOST_TOO_LARGE");
    expect((await failure(() => storage.putAsync("k", "x".repeat(17)))).code).toBe("ROOST_TOO_LARGE");
    expect((await failure(() => storage.put("", "x"))).code).toBe("ROOST_INVALID_REQUEST");
  });

  test("an unknown or bad config key fails with ROOST_INVALID_CONFIG", async () => {
    const dataDir = freshDir();
    const configs: Record<string, number>[] = [{ max_valu_bytes: 1 }, { flush_interval_ms: -1 }];
    for (const config of configs) {
      const err = await failure(() => Roost.open({ dataDir, config }));
      expect(err.code).toBe("ROOST_INVALID_CONFIG");
    }
    const err = await failure(() => Roost.open({ dataDir, durability: "sometimes" as Durability }));
    expect(err.code).toBe("ROOST_INVALID_CONFIG");
  });

  test("calls after close fail with ROOST_CLOSED and closing twice is harmless", async () => {
    const db = Roost.open({ dataDir: freshDir(), durability: "memory" });
    const actor = db.actor("a");
    actor.counter("n").add();
    db.close();
    db.close();
    expect((await failure(() => actor.counter("n").add())).code).toBe("ROOST_CLOSED");
    expect((await failure(() => actor.counter("n").addAsync())).code).toBe("ROOST_CLOSED");
    expect((await failure(() => actor.storage.get("k"))).code).toBe("ROOST_CLOSED");
  });
});

describe("rate limiting", () => {
  const MINUTE = 60_000;

  test("a burst gets exactly the limit, then a denial with retryAfterMs", () => {
    const db = openDb();
    for (let spent = 1; spent <= 5; spent++) {
      const decision = db.ratelimit("10.0.0.1", { limit: 5, windowMs: MINUTE });
      expect(decision).toMatchObject({ allowed: true, remaining: 5 - spent, retryAfterMs: 0 });
      expect(decision.resetMs).toBeGreaterThan(0);
    }
    const denied = db.ratelimit("10.0.0.1", { limit: 5, windowMs: MINUTE });
    expect(denied.allowed).toBe(false);
    expect(denied.remaining).toBe(0);
    // One unit comes back every 60 s / 5 = 12 s.
    expect(denied.retryAfterMs).toBeGreaterThan(11_000);
    expect(denied.retryAfterMs).toBeLessThanOrEqual(12_000);
    expect(denied.resetMs).toBeGreaterThan(59_000);
    expect(denied.resetMs).toBeLessThanOrEqual(MINUTE);
    expect(db.ratelimit("10.0.0.2", { limit: 5, windowMs: MINUTE }).remaining).toBe(4);
  });

  test("a denied request is allowed once retryAfterMs has passed", async () => {
    const db = openDb();
    expect(db.ratelimit("client", { limit: 2, windowMs: 300, cost: 2 }).allowed).toBe(true);
    const denied = db.ratelimit("client", { limit: 2, windowMs: 300 });
    const deniedAt = performance.now();
    expect(denied.allowed).toBe(false);
    expect(denied.retryAfterMs).toBeGreaterThanOrEqual(1);
    expect(denied.retryAfterMs).toBeLessThanOrEqual(150);
    // A timer may fire a little early; wait the full retryAfterMs.
    while (performance.now() - deniedAt < denied.retryAfterMs) await Bun.sleep(1);
    expect(db.ratelimit("client", { limit: 2, windowMs: 300 }).allowed).toBe(true);
  });

  test("cost spends several units, 0 only looks, and keys are exact UTF-8", () => {
    const db = openDb();
    expect(db.ratelimit("k", { limit: 10, windowMs: MINUTE, cost: 0 }).remaining).toBe(10);
    expect(db.ratelimit("k", { limit: 10, windowMs: MINUTE, cost: 7 }).remaining).toBe(3);
    const tooDear = db.ratelimit("k", { limit: 10, windowMs: MINUTE, cost: 4 });
    expect(tooDear).toMatchObject({ allowed: false, remaining: 3 });
    expect(db.ratelimit("clé", { limit: 1, windowMs: MINUTE }).allowed).toBe(true);
    expect(db.ratelimit("cle", { limit: 1, windowMs: MINUTE }).allowed).toBe(true);
    expect(db.ratelimit("clé", { limit: 1, windowMs: MINUTE }).allowed).toBe(false);
    const long = "é".repeat(300);
    expect(db.ratelimit(long, { limit: 1, windowMs: MINUTE }).allowed).toBe(true);
    expect(db.ratelimit(long, { limit: 1, windowMs: MINUTE }).allowed).toBe(false);
  });

  test("bad policies and keys throw RoostError and spend nothing", async () => {
    const db = openDb("memory", freshDir(), { max_key_bytes: 8 });
    const code = async (key: string, options: { limit: number; windowMs: number; cost?: number }) =>
      (await failure(() => db.ratelimit(key, options))).code;
    expect(await code("k", { limit: 0, windowMs: MINUTE })).toBe("ROOST_INVALID_REQUEST");
    expect(await code("k", { limit: 3, windowMs: 0 })).toBe("ROOST_INVALID_REQUEST");
    expect(await code("k", { limit: 3, windowMs: MINUTE, cost: 4 })).toBe("ROOST_INVALID_REQUEST");
    expect(await code("k", { limit: 2_000_000_000, windowMs: MINUTE })).toBe("ROOST_INVALID_REQUEST");
    expect(await code("", { limit: 3, windowMs: MINUTE })).toBe("ROOST_INVALID_REQUEST");
    expect(await code("123456789", { limit: 3, windowMs: MINUTE })).toBe("ROOST_TOO_LARGE");
    const err = await failure(() => db.ratelimit("k", { limit: 3, windowMs: MINUTE, cost: 4 }));
    expect(err.message).toContain("cost 4");
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 53]) {
      expect(() => db.ratelimit("k", { limit: bad, windowMs: MINUTE })).toThrow(TypeError);
      expect(() => db.ratelimit("k", { limit: 3, windowMs: MINUTE, cost: bad })).toThrow(TypeError);
    }
    expect(db.ratelimit("k", { limit: 3, windowMs: MINUTE, cost: 0 }).remaining).toBe(3);
    db.close();
    expect(await code("k", { limit: 3, windowMs: MINUTE })).toBe("ROOST_CLOSED");
  });

  test("a spent allowance survives close and reopen", () => {
    const dataDir = freshDir();
    const db = Roost.open({ dataDir });
    expect(db.ratelimit("api-key-7", { limit: 5, windowMs: 3_600_000, cost: 5 }).allowed).toBe(true);
    db.close();
    const denied = openDb("durable", dataDir).ratelimit("api-key-7", { limit: 5, windowMs: 3_600_000 });
    expect(denied.allowed).toBe(false);
    expect(denied.retryAfterMs).toBeGreaterThan(700_000);
  });
});

describe("the async API", () => {
  test("1,000 durable writes in flight leave the event loop free", async () => {
    const actor = openDb("durable").actor("loop");
    let ticks = 0;
    let turns = 0;
    const timer = setInterval(() => ticks++, 1);
    let inFlight = true;
    // Counts event-loop turns: each one is a moment the JS thread was free.
    const turnCounter = (async () => {
      while (inFlight) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        turns++;
      }
    })();
    const started = performance.now();
    const writes = Array.from({ length: 1000 }, (_, i) => actor.storage.putAsync(`k${i}`, `value ${i}`));
    const submitted = performance.now() - started;
    await Promise.all(writes);
    const finished = performance.now() - started;
    inFlight = false;
    await turnCounter;
    clearInterval(timer);
    // Submitting never waits for a commit; the loop kept turning until the
    // last fsync was acknowledged.
    expect(submitted).toBeLessThan(finished);
    expect(turns).toBeGreaterThan(0);
    expect(actor.storage.list().size).toBe(1000);
    console.log(
      `1000 durable putAsync: submitted in ${submitted.toFixed(1)} ms, done in ${finished.toFixed(1)} ms, ` +
        `${turns} event-loop turns and ${ticks} timer ticks meanwhile`,
    );
  });

  test("closing with writes in flight settles every promise", async () => {
    const dataDir = freshDir();
    const db = Roost.open({ dataDir });
    const counter = db.actor("closing").counter("n");
    const adds = Array.from({ length: 300 }, () => counter.addAsync());
    db.close();
    const values = await Promise.all(adds);
    expect(Math.max(...values)).toBe(300);
    expect(openDb("durable", dataDir).actor("closing").counter("n").get()).toBe(300);
  });
});

describe("resources", () => {
  test("an unclosed Roost is closed when garbage-collected, flushing its writes", async () => {
    const dataDir = freshDir();
    (() => {
      const db = Roost.open({ dataDir, durability: "buffered", config: { flush_interval_ms: 600_000 } });
      db.actor("gc").storage.put("k", "flushed by the finalizer");
    })();
    // Read the actor's file with plain SQLite: a second engine must not
    // share the directory while the first may still be open.
    const stem = new Bun.CryptoHasher("sha256").update("gc").digest("hex");
    const file = join(dataDir, "actors", stem.slice(0, 2), `${stem}.db`);
    let value: string | undefined;
    for (let attempt = 0; attempt < 100 && value === undefined; attempt++) {
      Bun.gc(true);
      await Bun.sleep(20);
      const sqlite = new Database(file);
      const row = sqlite.query("SELECT value FROM _roost_kv WHERE key = ?").get(new TextEncoder().encode("k")) as {
        value: Uint8Array;
      } | null;
      sqlite.close();
      value = row ? new TextDecoder().decode(row.value) : undefined;
    }
    expect(value).toBe("flushed by the finalizer");
  });

  test("Symbol.dispose closes the engine", async () => {
    const dataDir = freshDir();
    {
      using db = Roost.open({ dataDir, durability: "buffered", config: { flush_interval_ms: 600_000 } });
      db.actor("d").storage.put("k", "v");
    }
    const again = openDb("buffered", dataDir);
    expect(again.actor("d").storage.getText("k")).toBe("v");
  });
});
