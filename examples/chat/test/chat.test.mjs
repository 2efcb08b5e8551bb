// Headless Chromium test of examples/chat/index.html against a real roost
// server: two tabs see each other's messages and the actor's change events,
// and both notice when the server goes away.
//
//   node chat.test.mjs      (from examples/chat/test, after `npm ci`)
//
// ROOST_BIN: the roost binary (default: <repo>/target/release/roost; this
// script builds nothing). CHROMIUM: the browser (default /usr/bin/chromium).
// Exit code 0 when every check passed.

import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../../..");
const ROOST_BIN = resolve(process.env.ROOST_BIN || join(repo, "target/release/roost"));
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const PAGE = pathToFileURL(resolve(here, "../index.html"));
const WAIT_MS = 10_000;

const started = Date.now();
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);

/** Rejects with `what` if `promise` has not settled within `ms`. */
async function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

/** Starts `roost serve` on a free port; resolves once it printed its URL. */
async function startRoost(dataDir, listen = "127.0.0.1:0") {
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn" };
  // Loopback without credentials: nothing to authenticate.
  delete env.ROOST_TOKEN;
  delete env.ROOST_JWT_SECRET;
  const child = spawn(ROOST_BIN, ["serve", "--listen", listen, "--data-dir", dataDir, "--allowed-origins", "null"], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output = []; // the last lines of both streams, for failure reports
  const keep = (line) => {
    output.push(line);
    if (output.length > 200) output.shift();
  };
  child.stderr.setEncoding("utf8");
  createInterface({ input: child.stderr }).on("line", keep);
  const exited = new Promise((res) => child.once("exit", (code, signal) => res({ code, signal })));
  const firstLine = new Promise((res, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.once("line", res);
    lines.on("line", keep);
    child.once("error", reject);
    exited.then(({ code, signal }) => reject(new Error(`roost exited early (code ${code}, signal ${signal})`)));
  });
  try {
    const line = await within(WAIT_MS, "roost to print its listening address", firstLine);
    const match = /^roost: listening on (http:\/\/\S+)$/.exec(line);
    if (!match) throw new Error(`unexpected first line from roost: ${JSON.stringify(line)}`);
    return { child, url: match[1], exited, output };
  } catch (err) {
    child.kill("SIGKILL");
    await within(WAIT_MS, "roost to die after SIGKILL", exited).catch(() => {});
    throw new Error(`${err.message}\n--- roost output ---\n${output.join("\n")}\n---`);
  }
}

/**
 * Waits until the page's connection state (the #status badge) is `state`,
 * its text matching `text` if given.
 */
async function waitForState(page, tab, state, text = /(?:)/) {
  await within(
    WAIT_MS,
    `tab ${tab} to show connection state "${state}" with text matching ${text}`,
    page.waitForFunction(
      ([s, src]) => {
        const el = document.getElementById("status");
        return el.dataset.state === s && new RegExp(src).test(el.textContent);
      },
      [state, text.source],
      { timeout: WAIT_MS + 1000, polling: 50 },
    ),
  ).catch(async (err) => {
    throw new Error(`${err.message}; it shows "${await statusOf(page)}"`);
  });
}

async function statusOf(page) {
  return page
    .evaluate(() => {
      const s = document.getElementById("status");
      return `${s.dataset.state}: ${s.textContent}`;
    })
    .catch((e) => `unreadable (${e.message})`);
}

/**
 * Waits until some <li> in list `listId` has the text `text` (a string:
 * exactly; a RegExp: matching); returns that text.
 */
async function waitForItem(page, tab, listId, text) {
  const [source, flags] = text instanceof RegExp ? [text.source, text.flags] : [null, null];
  const handle = await within(
    WAIT_MS,
    `tab ${tab}: ${text instanceof RegExp ? text : JSON.stringify(text)} in #${listId}`,
    page.waitForFunction(
      ([id, exact, src, fl]) =>
        [...document.querySelectorAll(`#${id} li`)]
          .map((li) => li.textContent)
          .find((t) => (src === null ? t === exact : new RegExp(src, fl).test(t))),
      [listId, text instanceof RegExp ? null : text, source, flags],
      { timeout: WAIT_MS + 1000, polling: 50 },
    ),
  ).catch(async (err) => {
    const items = await listItems(page, listId).catch(() => []);
    throw new Error(`${err.message}; #${listId} holds ${JSON.stringify(items)}`);
  });
  return handle.jsonValue();
}

const listItems = (page, listId) =>
  page.evaluate((id) => [...document.querySelectorAll(`#${id} li`)].map((li) => li.textContent), listId);

async function say(page, name, text) {
  // As a person would: switch to the tab first (a background tab gets few
  // animation frames, which slows Playwright's actionability checks).
  await page.bringToFront();
  await page.fill("#name", name);
  await page.fill("#text", text);
  await page.click("#submit", { timeout: WAIT_MS });
}

async function main() {
  check(existsSync(ROOST_BIN), `roost binary ${ROOST_BIN} exists (run 'cargo build --release' or set ROOST_BIN)`);
  check(existsSync(CHROMIUM), `browser ${CHROMIUM} exists (apt-get install chromium, or set CHROMIUM)`);

  const dataDir = mkdtempSync(join(tmpdir(), "roost-chat-test-"));
  let server = null;
  let browser = null;
  const pageErrors = [];
  try {
    server = await startRoost(dataDir);
    log(`roost serving at ${server.url} (data in ${dataDir})`);

    browser = await within(
      WAIT_MS * 2,
      `Chromium (${CHROMIUM}) to start`,
      chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] }),
    );
    const context = await browser.newContext();
    // A room name that needs percent-encoding: space and slash.
    const room = `chat test/${process.pid}-${Date.now()}`;
    const url = `${PAGE}?server=${encodeURIComponent(server.url)}&room=${encodeURIComponent(room)}`;
    const tabs = [];
    for (const tab of ["A", "B"]) {
      const page = await context.newPage();
      page.on("pageerror", (err) => pageErrors.push(`tab ${tab}: ${err.message}`));
      page.on("console", (msg) => {
        if (msg.type() === "error") log(`tab ${tab} console: ${msg.text()}`);
      });
      await within(WAIT_MS, `tab ${tab} to load ${url}`, page.goto(url));
      tabs.push(page);
    }
    const [a, b] = tabs;
    await waitForState(a, "A", "open");
    await waitForState(b, "B", "open");
    log(`both tabs connected to room ${JSON.stringify(room)}`);

    // A → B, with markup that must stay text.
    const fromA = "hello from A <b>bold?</b> & <img src=x onerror=alert(1)>";
    await say(a, "alice", fromA);
    await waitForItem(b, "B", "messages", `alice:${fromA}`);
    await waitForItem(a, "A", "messages", `alice:${fromA}`);
    for (const [page, tab] of [[a, "A"], [b, "B"]]) {
      const markup = await page.evaluate(() => document.querySelectorAll("#messages b, #messages img").length);
      check(markup === 0, `tab ${tab} rendered message text as markup`);
    }
    log("A → B: message seen in both tabs, escaped");

    // B → A.
    const fromB = "hi A, this is B ✓";
    await say(b, "bob", fromB);
    await waitForItem(a, "A", "messages", `bob:${fromB}`);
    await waitForItem(b, "B", "messages", `bob:${fromB}`);
    const listA = await listItems(a, "messages");
    const listB = await listItems(b, "messages");
    check(
      JSON.stringify(listA) === JSON.stringify(listB) && listA.length === 2,
      `both tabs show the same two messages in the same order: A=${JSON.stringify(listA)} B=${JSON.stringify(listB)}`,
    );
    log("B → A: message seen in both tabs, same order");

    // Change events from plain HTTP writes reach both tabs' event logs.
    const actor = `${server.url}/v1/actors/${encodeURIComponent(room)}`;
    const counted = await within(WAIT_MS, "POST counter", fetch(`${actor}/counters/clicks`, { method: "POST" }));
    check(counted.ok, `POST counter answered ${counted.status}: ${await counted.clone().text()}`);
    const { value } = await counted.json();
    check(value === 1, `counter value is 1, got ${value}`);
    // seq starts anywhere (roost seeds it from the clock) and goes up by 1.
    const seqs = [];
    for (const [page, tab] of [[a, "A"], [b, "B"]]) {
      const line = await waitForItem(page, tab, "events", /^#\d+ counter clicks = 1$/);
      seqs.push(Number(/^#(\d+)/.exec(line)[1]));
    }
    check(seqs[0] === seqs[1], `both tabs got the counter event with the same seq: ${seqs}`);
    const put = await within(WAIT_MS, "PUT kv", fetch(`${actor}/kv/topic`, { method: "PUT", body: "rust" }));
    check(put.ok, `PUT kv answered ${put.status}: ${await put.text()}`);
    for (const [page, tab] of [[a, "A"], [b, "B"]]) {
      await waitForItem(page, tab, "events", `#${seqs[0] + 1} kv.put topic v1`);
    }
    log("counter and kv.put change events seen in both tabs");

    // Server shutdown: roost closes the sockets with 1001 (going away) and
    // both tabs drop to the reconnecting state.
    server.child.kill("SIGTERM");
    const { code, signal } = await within(WAIT_MS, "roost to exit after SIGTERM", server.exited);
    log(`roost exited after SIGTERM (code ${code}, signal ${signal})`);
    check(code === 0, `roost exits with code 0 after SIGTERM, got code ${code}, signal ${signal}`);
    for (const [page, tab] of [[a, "A"], [b, "B"]]) {
      await waitForState(page, tab, "reconnecting", /\b1001\b/);
      log(`tab ${tab}: ${await statusOf(page)}`);
    }

    // Back on the same address: both tabs reconnect by themselves and chat on.
    const listen = new URL(server.url).host;
    server = await startRoost(dataDir, listen);
    log(`roost restarted at ${server.url}`);
    await waitForState(a, "A", "open");
    await waitForState(b, "B", "open");
    const again = "back again";
    await say(a, "alice", again);
    await waitForItem(b, "B", "messages", `alice:${again}`);
    await waitForItem(a, "A", "messages", `alice:${again}`);
    log("after the restart both tabs reconnected and a message went through");
    server.child.kill("SIGTERM");
    await within(WAIT_MS, "roost to exit after SIGTERM", server.exited);

    check(pageErrors.length === 0, `no script errors in the page: ${pageErrors.join("; ")}`);
  } catch (err) {
    if (server) {
      console.error("--- roost output (last lines) ---\n" + server.output.join("\n") + "\n---");
    }
    if (pageErrors.length) console.error(`page errors: ${pageErrors.join("; ")}`);
    throw err;
  } finally {
    if (browser) await within(WAIT_MS, "browser to close", browser.close()).catch((e) => log(String(e)));
    if (server && server.child.exitCode === null && server.child.signalCode === null) {
      server.child.kill("SIGKILL");
      await within(WAIT_MS, "roost to die after SIGKILL", server.exited).catch((e) => log(String(e)));
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
}

try {
  await main();
  log("PASS: examples/chat in headless Chromium");
} catch (err) {
  console.error(`FAIL: ${err.stack || err}`);
  process.exitCode = 1;
}
