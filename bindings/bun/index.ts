/**
 * roost for Bun: the roost engine in-process over `bun:ffi`, with a
 * Durable-Object-like API.
 *
 * ```ts
 * const db = Roost.open({ dataDir: "./data" });
 * const room = db.actor("room-42");
 * room.storage.put("topic", "hello");
 * room.counter("visits").add(1);
 * await room.counter("visits").addAsync(1); // never blocks the event loop
 * room.sql("CREATE TABLE IF NOT EXISTS t (x)");
 * if (!db.ratelimit(clientIp, { limit: 100, windowMs: 60_000 }).allowed) reject();
 * db.close();
 * ```
 *
 * Sync methods call the engine and wait for the answer on the JS thread:
 * ideal for `memory` and `buffered` actors, whose writes answer in
 * microseconds. `...Async` methods queue the operation on the actor's
 * thread and resolve from a completion callback, so a `durable` write's
 * fsync never blocks the event loop. Every buffer roost returns is copied
 * into JS memory and freed at once; the engine itself is released by
 * `close()`, or by a FinalizationRegistry if a Roost is dropped unclosed.
 */
import { CString, dlopen, FFIType, JSCallback, suffix, toArrayBuffer, type Pointer } from "bun:ffi";
import { join } from "node:path";

/** When a write is acknowledged (see the roost spec). */
export type Durability = "durable" | "buffered" | "memory";

export interface OpenOptions {
  /** Directory of the actors' databases (created if missing). */
  dataDir: string;
  /** Durability of new actors: "durable" (default), "buffered" or "memory". */
  durability?: Durability;
  /** The roost shared library; default `ROOST_LIB`, else the repository's target/release. */
  libPath?: string;
  /**
   * Further engine settings with the C ABI's names, e.g. `flush_interval_ms`,
   * `max_value_bytes`, `query_timeout_ms`. Unknown names are rejected.
   */
  config?: Record<string, string | number>;
}

/** A value SQL can bind: integers beyond 2^53 need a bigint. */
export type SqlValue = null | boolean | number | bigint | string | Uint8Array | ArrayBuffer;
export type SqlParams = SqlValue[] | Record<string, SqlValue>;

export interface ListOptions {
  /** Only keys starting with this. */
  prefix?: string;
  /** First key (inclusive). */
  start?: string;
  /** Key to stop before (exclusive). */
  end?: string;
  /** Most keys returned (default: all). */
  limit?: number;
  /** Descending key order. */
  reverse?: boolean;
}

/** A rate-limit policy: `limit` units of cost per `windowMs`, spending `cost` (default 1). */
export interface RateLimitOptions {
  /** Units of cost allowed per window (1 to 1,000,000,000); also the largest burst. */
  limit: number;
  /** The window in milliseconds (1 ms to 366 days). */
  windowMs: number;
  /** Units this request spends when allowed: default 1; 0 only looks. */
  cost?: number;
}

/** One rate-limit decision. A denial is an answer, not an error. */
export interface RateLimitDecision {
  allowed: boolean;
  /** Units that could still be spent right now. */
  remaining: number;
  /** Milliseconds until the whole limit is available again. */
  resetMs: number;
  /** Milliseconds until this request would be allowed (0 when allowed): a `Retry-After`. */
  retryAfterMs: number;
}

/** A roost failure, with the result code's name (`ROOST_INVALID_ACTOR_ID`...). */
export class RoostError extends Error {
  /** The `roost_result` name, e.g. `"ROOST_NOT_FOUND"`. */
  readonly code: string;
  /** The `roost_result` number. */
  readonly status: number;

  constructor(status: number, detail: string) {
    const code = resultName(status);
    super(detail.startsWith(code) ? detail : `${code}: ${detail}`);
    this.name = "RoostError";
    this.code = code;
    this.status = status;
  }
}

/** The outcome of one SQL statement. */
export class SqlResult {
  constructor(
    readonly columns: string[],
    /** Rows as arrays, in column order; blobs are Uint8Array. */
    readonly rows: unknown[][],
    readonly rowsAffected: number,
    readonly lastInsertRowid: number | null,
  ) {}

  /** Rows as objects keyed by column name. */
  objects(): Record<string, unknown>[] {
    return this.rows.map((row) => Object.fromEntries(this.columns.map((c, i) => [c, row[i]])));
  }
}

const OK = 0;
const NOT_FOUND = 1;

/** The C ABI as bun:ffi sees it (see include/roost.h). */
const SYMBOLS = {
  roost_version: { args: [], returns: "ptr" },
  roost_result_name: { args: ["u32"], returns: "ptr" },
  roost_last_error: { args: ["ptr", "usize"], returns: "usize" },
  roost_engine_open: { args: ["ptr", "ptr"], returns: "u32" },
  roost_engine_close: { args: ["ptr"], returns: "void" },
  roost_bytes_release: { args: ["ptr"], returns: "void" },
  roost_counter_add: { args: ["ptr", "ptr", "usize", "ptr", "usize", "i64", "ptr"], returns: "u32" },
  roost_counter_get: { args: ["ptr", "ptr", "usize", "ptr", "usize", "ptr"], returns: "u32" },
  roost_kv_get: { args: ["ptr", "ptr", "usize", "ptr", "usize", "ptr"], returns: "u32" },
  roost_kv_put: { args: ["ptr", "ptr", "usize", "ptr", "usize", "ptr", "usize"], returns: "u32" },
  roost_kv_delete_if: {
    args: ["ptr", "ptr", "usize", "ptr", "usize", "i64", "ptr"],
    returns: "u32",
  },
  roost_kv_list: { args: ["ptr", "ptr", "usize", "ptr", "usize", "ptr"], returns: "u32" },
  roost_sql: { args: ["ptr", "ptr", "usize", "ptr", "usize", "ptr"], returns: "u32" },
  roost_actor_delete: { args: ["ptr", "ptr", "usize", "ptr"], returns: "u32" },
  roost_actor_list: { args: ["ptr", "ptr", "usize", "ptr"], returns: "u32" },
  roost_actor_export: { args: ["ptr", "ptr", "usize", "ptr"], returns: "u32" },
  roost_actor_import: { args: ["ptr", "ptr", "usize", "ptr", "usize"], returns: "u32" },
  roost_ratelimit: { args: ["ptr", "ptr", "usize", "u64", "u64", "u64", "ptr"], returns: "u32" },
  roost_counter_add_async: {
    args: ["ptr", "ptr", "usize", "ptr", "usize", "i64", "ptr", "ptr"],
    returns: "u32",
  },
  roost_counter_get_async: {
    args: ["ptr", "ptr", "usize", "ptr", "usize", "ptr", "ptr"],
    returns: "u32",
  },
  roost_kv_get_async: { args: ["ptr", "ptr", "usize", "ptr", "usize", "ptr", "ptr"], returns: "u32" },
  roost_kv_put_async: {
    args: ["ptr", "ptr", "usize", "ptr", "usize", "ptr", "usize", "ptr", "ptr"],
    returns: "u32",
  },
  roost_kv_delete_async: {
    args: ["ptr", "ptr", "usize", "ptr", "usize", "ptr", "ptr"],
    returns: "u32",
  },
  roost_kv_list_async: {
    args: ["ptr", "ptr", "usize", "ptr", "usize", "ptr", "ptr"],
    returns: "u32",
  },
  roost_sql_async: { args: ["ptr", "ptr", "usize", "ptr", "usize", "ptr", "ptr"], returns: "u32" },
  roost_actor_delete_async: { args: ["ptr", "ptr", "usize", "ptr", "ptr"], returns: "u32" },
} as const;

type Library = ReturnType<typeof dlopen<typeof SYMBOLS>>["symbols"];

/** `expected_version` that makes roost_kv_delete_if unconditional. */
const VERSION_ANY = -1;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const libraries = new Map<string, Library>();
let defaultLibrary: Library | undefined;

/** Loads the library: `libPath`, else `ROOST_LIB`, else the repo's target/release. */
function load(libPath?: string): Library {
  const path =
    libPath ?? process.env.ROOST_LIB ?? join(import.meta.dir, "..", "..", "target", "release", `libroost.${suffix}`);
  let lib = libraries.get(path);
  if (!lib) {
    lib = dlopen(path, SYMBOLS).symbols;
    libraries.set(path, lib);
  }
  defaultLibrary ??= lib;
  return lib;
}

function resultName(status: number): string {
  const lib = defaultLibrary;
  const name = lib ? lib.roost_result_name(status) : null;
  return name ? new CString(name).toString() : `ROOST_RESULT_${status}`;
}

/** The library's version (`roost_version()`). */
export function version(libPath?: string): string {
  return new CString(load(libPath).roost_version() as Pointer).toString();
}

/** A count passed to C as a u64: a whole number from 0 to 2^53 - 1. */
function wholeNumber(name: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new TypeError(`${name} must be a whole number ≥ 0, not ${String(value)}`);
  }
  return value;
}

/** Copies a roost buffer into JS memory and frees it. */
function takeBytes(lib: Library, out: BigUint64Array): Uint8Array {
  const address = Number(out[0]);
  const length = Number(out[1]);
  const copy = address === 0 ? new Uint8Array(0) : new Uint8Array(toArrayBuffer(address as Pointer, 0, length)).slice();
  lib.roost_bytes_release(out);
  return copy;
}

function bytesOf(value: string | Uint8Array | ArrayBuffer): Uint8Array {
  if (typeof value === "string") return encoder.encode(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  throw new TypeError("a value must be a string, Uint8Array or ArrayBuffer");
}

function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

/** JSON for SQL parameters, exact for bigints and blobs. */
function paramJson(value: SqlValue): string {
  if (value === null || value === undefined) return "null";
  switch (typeof value) {
    case "boolean":
    case "string":
      return JSON.stringify(value);
    case "bigint":
      return value.toString();
    case "number":
      if (!Number.isFinite(value)) throw new TypeError(`SQL cannot bind ${value}`);
      return JSON.stringify(value);
  }
  if (value instanceof Uint8Array || value instanceof ArrayBuffer) {
    return `{"base64":"${toBase64(bytesOf(value))}"}`;
  }
  throw new TypeError(`SQL cannot bind a ${typeof value}`);
}

function paramsJson(params: SqlParams): string {
  if (Array.isArray(params)) return `[${params.map(paramJson).join(",")}]`;
  const fields = Object.entries(params).map(([name, value]) => `${JSON.stringify(name)}:${paramJson(value)}`);
  return `{${fields.join(",")}}`;
}

function statementJson(sql: string, params?: SqlParams): string {
  const body = `"sql":${JSON.stringify(sql)}`;
  return params === undefined ? `{${body}}` : `{${body},"params":${paramsJson(params)}}`;
}

function sqlValue(value: unknown): unknown {
  if (value !== null && typeof value === "object" && "base64" in value) {
    return new Uint8Array(Buffer.from(String((value as { base64: string }).base64), "base64"));
  }
  return value;
}

interface WireResult {
  columns: string[];
  rows: unknown[][];
  rows_affected: number;
  last_insert_rowid: number | null;
}

function sqlResults(json: Uint8Array): SqlResult[] {
  const parsed = JSON.parse(decoder.decode(json)) as { results: WireResult[] };
  return parsed.results.map(
    (r) =>
      new SqlResult(
        r.columns,
        r.rows.map((row) => row.map(sqlValue)),
        r.rows_affected,
        r.last_insert_rowid,
      ),
  );
}

function listedValue(value: unknown): Uint8Array {
  if (typeof value === "string") return encoder.encode(value);
  return sqlValue(value) as Uint8Array;
}

interface WirePage {
  items: { key: string; version: number; value: unknown }[];
  cursor: string | null;
}

/** Serializes list options for one page. */
function listQuery(options: ListOptions, remaining: number, cursor: string | null): Uint8Array {
  const query: Record<string, unknown> = { values: true, limit: Math.min(remaining, 1000) };
  if (options.prefix !== undefined) query.prefix = options.prefix;
  if (options.start !== undefined) query.start = options.start;
  if (options.end !== undefined) query.end = options.end;
  if (options.reverse) query.reverse = true;
  if (cursor !== null) query.cursor = cursor;
  return encoder.encode(JSON.stringify(query));
}

type Settle = (status: number, value: number, data: Uint8Array) => void;

/** One engine handle, its completion callback and its in-flight operations. */
class Engine {
  readonly lib: Library;
  /** The engine token; kept after close so later calls get ROOST_CLOSED. */
  handle: number;
  closed = false;
  /** Scratch out-params, reused: the JS thread makes one call at a time. */
  readonly outI64 = new BigInt64Array(1);
  readonly outBytes = new BigUint64Array(2);
  readonly outBool = new Uint8Array(1);
  /** A `roost_ratelimit_decision`: `allowed` is byte 0, then three u64 words. */
  readonly outDecision = new BigUint64Array(4);
  readonly outDecisionBytes = new Uint8Array(this.outDecision.buffer);
  /** A rate-limit key encoded in place, to spare an allocation per decision. */
  keyScratch = new Uint8Array(256);
  private readonly errorBuf = new Uint8Array(1024);
  private readonly pending = new Map<number, Settle>();
  private nextTicket = 1;
  private completion: JSCallback | null = null;
  /** Keeps the process alive while operations are in flight. */
  private keepAlive: ReturnType<typeof setInterval> | null = null;
  private readonly releaseScratch = new BigUint64Array(2);

  constructor(lib: Library, handle: number) {
    this.lib = lib;
    this.handle = handle;
  }

  /** Throws the failure of the last sync call on this thread. */
  fail(status: number): never {
    const length = Number(this.lib.roost_last_error(this.errorBuf, this.errorBuf.length));
    const shown = Math.min(length, this.errorBuf.length - 1);
    throw new RoostError(status, decoder.decode(this.errorBuf.subarray(0, shown)));
  }

  check(status: number): void {
    if (status !== OK) this.fail(status);
  }

  private callback(): Pointer {
    if (this.completion === null) {
      this.completion = new JSCallback(
        // i64_fast/u64_fast arrive as bigint only beyond 2^53.
        (ticket: number, status: number, value: number | bigint, data: number | null, length: number | bigint) =>
          this.complete(ticket, status, Number(value), data, Number(length)),
        {
          args: [FFIType.ptr, FFIType.u32, FFIType.i64_fast, FFIType.ptr, FFIType.u64_fast],
          returns: "void",
          threadsafe: true,
        },
      );
    }
    return this.completion.ptr as Pointer;
  }

  private complete(ticket: number, status: number, value: number, data: number | null, length: number): void {
    let bytes = new Uint8Array(0);
    // bun:ffi hands a NULL pointer over as null.
    if (data) {
      bytes = new Uint8Array(toArrayBuffer(data as Pointer, 0, length)).slice();
      this.releaseScratch[0] = BigInt(data);
      this.releaseScratch[1] = BigInt(length);
      this.lib.roost_bytes_release(this.releaseScratch);
    }
    const settle = this.pending.get(ticket);
    this.pending.delete(ticket);
    if (this.pending.size === 0) this.idle();
    settle?.(status, value, bytes);
  }

  private idle(): void {
    this.keepAlive?.unref();
    if (this.closed) this.dropCallback();
  }

  private dropCallback(): void {
    if (this.keepAlive !== null) {
      clearInterval(this.keepAlive);
      this.keepAlive = null;
    }
    this.completion?.close();
    this.completion = null;
  }

  /**
   * Submits an `_async` call: `call(callback, ticket)` returns its status;
   * `decode` turns a successful completion into the promised value.
   */
  submit<T>(
    call: (callback: Pointer, ticket: number) => number,
    decode: (value: number, data: Uint8Array) => T,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const ticket = this.nextTicket++;
      this.pending.set(ticket, (status, value, data) => {
        if (status === OK) {
          try {
            resolve(decode(value, data));
          } catch (err) {
            reject(err);
          }
        } else {
          reject(new RoostError(status, decoder.decode(data)));
        }
      });
      const status = call(this.callback(), ticket);
      if (status !== OK) {
        this.pending.delete(ticket);
        if (this.pending.size === 0) this.idle();
        try {
          this.fail(status);
        } catch (err) {
          reject(err);
        }
        return;
      }
      if (this.pending.has(ticket)) {
        this.keepAlive ??= setInterval(() => {}, 1 << 30);
        this.keepAlive.ref();
      }
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // Closing waits for queued operations; their callbacks are already
    // queued to this thread and settle their promises on the next turns.
    this.lib.roost_engine_close(this.handle as unknown as Pointer);
    if (this.pending.size === 0) this.dropCallback();
  }
}

/** Closes engines whose Roost was garbage-collected without close(). */
const unclosed = new FinalizationRegistry<Engine>((engine) => engine.close());

/** An engine: one data directory of actors. */
export class Roost {
  private readonly engine: Engine;

  private constructor(engine: Engine) {
    this.engine = engine;
  }

  /** Opens (creating if needed) the data directory. Close it with close(). */
  static open(options: OpenOptions): Roost {
    if (!options || typeof options.dataDir !== "string") {
      throw new TypeError("Roost.open needs { dataDir }");
    }
    const lib = load(options.libPath);
    const config: Record<string, unknown> = { ...options.config, data_dir: options.dataDir };
    if (options.durability !== undefined) config.durability = options.durability;
    const out = new BigUint64Array(1);
    const status = lib.roost_engine_open(encoder.encode(`${JSON.stringify(config)}\0`), out);
    const engine = new Engine(lib, 0);
    engine.check(status);
    engine.handle = Number(out[0]);
    const roost = new Roost(engine);
    unclosed.register(roost, engine, roost);
    return roost;
  }

  /** The actor named `id` (1–512 bytes of UTF-8, no control characters). */
  actor(id: string): Actor {
    // Cheap to make and not cached, so millions of IDs cost nothing here.
    return new Actor(this, this.engine, id);
  }

  /**
   * Decides one request against the rate limit of `key` (a client IP, user
   * or API key): GCRA, a burst of up to `limit`, then one unit every
   * `windowMs / limit`. Sync and cheap: the limiter decides in memory and
   * never waits for a disk write, whatever the durability (its state is
   * written on the buffered schedule and survives close and reopen).
   * Throws RoostError for an empty or oversized key, a bad policy, or a
   * `cost` above `limit`; TypeError for a count that is not a whole number.
   */
  ratelimit(key: string, options: RateLimitOptions): RateLimitDecision {
    const engine = this.engine;
    const limit = wholeNumber("limit", options.limit);
    const windowMs = wholeNumber("windowMs", options.windowMs);
    const cost = wholeNumber("cost", options.cost ?? 1);
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    if (engine.keyScratch.length < key.length * 3) engine.keyScratch = new Uint8Array(key.length * 3);
    const { written } = encoder.encodeInto(key, engine.keyScratch);
    engine.check(
      engine.lib.roost_ratelimit(this.handle(), engine.keyScratch, written, limit, windowMs, cost, engine.outDecision),
    );
    const out = engine.outDecision;
    return {
      allowed: engine.outDecisionBytes[0] !== 0,
      remaining: Number(out[1]),
      resetMs: Number(out[2]),
      retryAfterMs: Number(out[3]),
    };
  }

  /** Actors stored in this engine (and open in-memory ones), in ID order. */
  listActors(options: { prefix?: string; limit?: number; cursor?: string } = {}): {
    actors: { id: string; sizeBytes: number }[];
    cursor: string | null;
  } {
    const engine = this.engine;
    const query = encoder.encode(JSON.stringify(options));
    engine.check(engine.lib.roost_actor_list(this.handle(), query, query.length, engine.outBytes));
    const page = JSON.parse(decoder.decode(takeBytes(engine.lib, engine.outBytes))) as {
      actors: { id: string; size_bytes: number }[];
      cursor: string | null;
    };
    return { actors: page.actors.map((a) => ({ id: a.id, sizeBytes: a.size_bytes })), cursor: page.cursor };
  }

  /** Flushes every actor and releases the engine; later calls throw ROOST_CLOSED. */
  close(): void {
    unclosed.unregister(this);
    this.engine.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private handle(): Pointer {
    return this.engine.handle as unknown as Pointer;
  }
}

/** One actor: its KV storage, SQL database and counters. */
export class Actor {
  readonly id: string;
  readonly storage: Storage;
  /** Keeps the Roost (and so the engine) alive while its actors are in use. */
  readonly roost: Roost;
  private readonly engine: Engine;
  /** The UTF-8 ID, encoded once. */
  readonly idBytes: Uint8Array;
  private readonly counters = new Map<string, Counter>();

  constructor(roost: Roost, engine: Engine, id: string) {
    this.roost = roost;
    this.engine = engine;
    this.id = id;
    this.idBytes = encoder.encode(id);
    this.storage = new Storage(engine, this);
  }

  /** Runs one SQL statement (or several without params) and returns the last result. */
  sql(query: string, params?: SqlParams): SqlResult {
    const results = this.run(encoder.encode(statementJson(query, params)));
    return results[results.length - 1];
  }

  /** Like sql(), without blocking the event loop. */
  async sqlAsync(query: string, params?: SqlParams): Promise<SqlResult> {
    const results = await this.runAsync(encoder.encode(statementJson(query, params)));
    return results[results.length - 1];
  }

  /** Runs the statements in one transaction (all or nothing). */
  batch(statements: { sql: string; params?: SqlParams }[]): SqlResult[] {
    return this.run(
      encoder.encode(`{"statements":[${statements.map((s) => statementJson(s.sql, s.params)).join(",")}]}`),
    );
  }

  /** Like batch(), without blocking the event loop. */
  batchAsync(statements: { sql: string; params?: SqlParams }[]): Promise<SqlResult[]> {
    return this.runAsync(
      encoder.encode(`{"statements":[${statements.map((s) => statementJson(s.sql, s.params)).join(",")}]}`),
    );
  }

  /** The counter `name` of this actor. */
  counter(name: string): Counter {
    let counter = this.counters.get(name);
    if (!counter) {
      counter = new Counter(this.engine, this, name);
      this.counters.set(name, counter);
    }
    return counter;
  }

  /** Removes the actor and all its data; true if it existed. */
  destroy(): boolean {
    const engine = this.engine;
    engine.check(engine.lib.roost_actor_delete(this.handle(), this.idBytes, this.idBytes.length, engine.outBool));
    return engine.outBool[0] === 1;
  }

  /** Like destroy(), without blocking the event loop. */
  destroyAsync(): Promise<boolean> {
    const engine = this.engine;
    return engine.submit(
      (callback, ticket) =>
        engine.lib.roost_actor_delete_async(
          this.handle(),
          this.idBytes,
          this.idBytes.length,
          callback,
          ticket as unknown as Pointer,
        ),
      (value) => value === 1,
    );
  }

  /** A consistent copy of the actor's database, as a SQLite file. */
  export(): Uint8Array {
    const engine = this.engine;
    engine.check(engine.lib.roost_actor_export(this.handle(), this.idBytes, this.idBytes.length, engine.outBytes));
    return takeBytes(engine.lib, engine.outBytes);
  }

  /** Replaces the actor's state with a SQLite file (e.g. from export()); a bad file changes nothing. */
  import(database: Uint8Array | ArrayBuffer): void {
    const engine = this.engine;
    const bytes = bytesOf(database);
    engine.check(engine.lib.roost_actor_import(this.handle(), this.idBytes, this.idBytes.length, bytes, bytes.length));
  }

  /** @internal */
  handle(): Pointer {
    return this.engine.handle as unknown as Pointer;
  }

  private run(request: Uint8Array): SqlResult[] {
    const engine = this.engine;
    engine.check(
      engine.lib.roost_sql(this.handle(), this.idBytes, this.idBytes.length, request, request.length, engine.outBytes),
    );
    return sqlResults(takeBytes(engine.lib, engine.outBytes));
  }

  private runAsync(request: Uint8Array): Promise<SqlResult[]> {
    const engine = this.engine;
    return engine.submit(
      (callback, ticket) =>
        engine.lib.roost_sql_async(
          this.handle(),
          this.idBytes,
          this.idBytes.length,
          request,
          request.length,
          callback,
          ticket as unknown as Pointer,
        ),
      (_, data) => sqlResults(data),
    );
  }
}

/** A counter: add(n) returns the new value, get() the current one (0 if never set). */
export class Counter {
  readonly name: string;
  private readonly engine: Engine;
  private readonly actor: Actor;
  private readonly nameBytes: Uint8Array;

  constructor(engine: Engine, actor: Actor, name: string) {
    this.engine = engine;
    this.actor = actor;
    this.name = name;
    this.nameBytes = encoder.encode(name);
  }

  add(delta: number = 1): number {
    const engine = this.engine;
    const id = this.actor.idBytes;
    const status = engine.lib.roost_counter_add(
      this.actor.handle(),
      id,
      id.length,
      this.nameBytes,
      this.nameBytes.length,
      delta,
      engine.outI64,
    );
    if (status !== OK) engine.fail(status);
    return Number(engine.outI64[0]);
  }

  get(): number {
    const engine = this.engine;
    const id = this.actor.idBytes;
    engine.check(
      engine.lib.roost_counter_get(
        this.actor.handle(),
        id,
        id.length,
        this.nameBytes,
        this.nameBytes.length,
        engine.outI64,
      ),
    );
    return Number(engine.outI64[0]);
  }

  addAsync(delta: number = 1): Promise<number> {
    const engine = this.engine;
    const id = this.actor.idBytes;
    return engine.submit(
      (callback, ticket) =>
        engine.lib.roost_counter_add_async(
          this.actor.handle(),
          id,
          id.length,
          this.nameBytes,
          this.nameBytes.length,
          delta,
          callback,
          ticket as unknown as Pointer,
        ),
      (value) => value,
    );
  }

  getAsync(): Promise<number> {
    const engine = this.engine;
    const id = this.actor.idBytes;
    return engine.submit(
      (callback, ticket) =>
        engine.lib.roost_counter_get_async(
          this.actor.handle(),
          id,
          id.length,
          this.nameBytes,
          this.nameBytes.length,
          callback,
          ticket as unknown as Pointer,
        ),
      (value) => value,
    );
  }
}

/** KV storage of an actor: keys are strings, values bytes. */
export class Storage {
  private readonly engine: Engine;
  private readonly actor: Actor;

  constructor(engine: Engine, actor: Actor) {
    this.engine = engine;
    this.actor = actor;
  }

  /** The value of `key`, or undefined. */
  get(key: string): Uint8Array | undefined {
    const engine = this.engine;
    const id = this.actor.idBytes;
    const keyBytes = encoder.encode(key);
    const status = engine.lib.roost_kv_get(
      this.actor.handle(),
      id,
      id.length,
      keyBytes,
      keyBytes.length,
      engine.outBytes,
    );
    if (status === NOT_FOUND) return undefined;
    engine.check(status);
    return takeBytes(engine.lib, engine.outBytes);
  }

  /** The value of `key` decoded as UTF-8, or undefined. */
  getText(key: string): string | undefined {
    const value = this.get(key);
    return value === undefined ? undefined : decoder.decode(value);
  }

  /** Stores `value` (a string is stored as UTF-8) under `key`. */
  put(key: string, value: string | Uint8Array | ArrayBuffer): void {
    const engine = this.engine;
    const id = this.actor.idBytes;
    const keyBytes = encoder.encode(key);
    const bytes = bytesOf(value);
    engine.check(
      engine.lib.roost_kv_put(this.actor.handle(), id, id.length, keyBytes, keyBytes.length, bytes, bytes.length),
    );
  }

  /** Deletes `key`; true if it existed. */
  delete(key: string): boolean {
    const engine = this.engine;
    const id = this.actor.idBytes;
    const keyBytes = encoder.encode(key);
    engine.check(
      engine.lib.roost_kv_delete_if(
        this.actor.handle(),
        id,
        id.length,
        keyBytes,
        keyBytes.length,
        VERSION_ANY,
        engine.outBool,
      ),
    );
    return engine.outBool[0] === 1;
  }

  /** Keys and values in key order, as a Map (like Durable Objects' list()). */
  list(options: ListOptions = {}): Map<string, Uint8Array> {
    const engine = this.engine;
    const id = this.actor.idBytes;
    return collectPages(options, (query) => {
      engine.check(engine.lib.roost_kv_list(this.actor.handle(), id, id.length, query, query.length, engine.outBytes));
      return takeBytes(engine.lib, engine.outBytes);
    });
  }

  getAsync(key: string): Promise<Uint8Array | undefined> {
    const engine = this.engine;
    const id = this.actor.idBytes;
    const keyBytes = encoder.encode(key);
    return engine
      .submit(
        (callback, ticket) =>
          engine.lib.roost_kv_get_async(
            this.actor.handle(),
            id,
            id.length,
            keyBytes,
            keyBytes.length,
            callback,
            ticket as unknown as Pointer,
          ),
        (_, data): Uint8Array | undefined => data,
      )
      .catch((err: unknown) => {
        if (err instanceof RoostError && err.status === NOT_FOUND) return undefined;
        throw err;
      });
  }

  async getTextAsync(key: string): Promise<string | undefined> {
    const value = await this.getAsync(key);
    return value === undefined ? undefined : decoder.decode(value);
  }

  /** Like put(), without blocking the event loop on a durable commit. */
  putAsync(key: string, value: string | Uint8Array | ArrayBuffer): Promise<void> {
    const engine = this.engine;
    const id = this.actor.idBytes;
    const keyBytes = encoder.encode(key);
    const bytes = bytesOf(value);
    return engine.submit(
      (callback, ticket) =>
        engine.lib.roost_kv_put_async(
          this.actor.handle(),
          id,
          id.length,
          keyBytes,
          keyBytes.length,
          bytes,
          bytes.length,
          callback,
          ticket as unknown as Pointer,
        ),
      () => undefined,
    );
  }

  deleteAsync(key: string): Promise<boolean> {
    const engine = this.engine;
    const id = this.actor.idBytes;
    const keyBytes = encoder.encode(key);
    return engine.submit(
      (callback, ticket) =>
        engine.lib.roost_kv_delete_async(
          this.actor.handle(),
          id,
          id.length,
          keyBytes,
          keyBytes.length,
          callback,
          ticket as unknown as Pointer,
        ),
      (value) => value === 1,
    );
  }

  async listAsync(options: ListOptions = {}): Promise<Map<string, Uint8Array>> {
    const engine = this.engine;
    const id = this.actor.idBytes;
    const result = new Map<string, Uint8Array>();
    let remaining = options.limit ?? Number.POSITIVE_INFINITY;
    let cursor: string | null = null;
    do {
      const query = listQuery(options, remaining, cursor);
      const page = await engine.submit(
        (callback, ticket) =>
          engine.lib.roost_kv_list_async(
            this.actor.handle(),
            id,
            id.length,
            query,
            query.length,
            callback,
            ticket as unknown as Pointer,
          ),
        (_, data) => JSON.parse(decoder.decode(data)) as WirePage,
      );
      for (const item of page.items) result.set(item.key, listedValue(item.value));
      remaining -= page.items.length;
      cursor = page.cursor;
    } while (cursor !== null && remaining > 0);
    return result;
  }
}

/** Follows list cursors until `limit` keys or the end. */
function collectPages(options: ListOptions, fetchPage: (query: Uint8Array) => Uint8Array): Map<string, Uint8Array> {
  const result = new Map<string, Uint8Array>();
  let remaining = options.limit ?? Number.POSITIVE_INFINITY;
  let cursor: string | null = null;
  do {
    const page = JSON.parse(decoder.decode(fetchPage(listQuery(options, remaining, cursor)))) as WirePage;
    for (const item of page.items) result.set(item.key, listedValue(item.value));
    remaining -= page.items.length;
    cursor = page.cursor;
  } while (cursor !== null && remaining > 0);
  return result;
}
