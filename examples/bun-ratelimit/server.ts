/**
 * An HTTP server that rate-limits each client IP in-process with the roost
 * Bun binding: no Redis, no network hop, and the allowances survive a
 * restart (roost keeps the limiter's state on disk on the buffered schedule).
 *
 *   bun examples/bun-ratelimit/server.ts
 *   curl -i localhost:3000/
 *
 * Env: PORT (default 3000; 0 picks a free one), LIMIT requests per
 * WINDOW_MS per client (default 10 per 60000), ROOST_DATA_DIR (default
 * ./ratelimit-data), ROOST_LIB (the library; default the repository's
 * target/release).
 */
import { Roost, type RateLimitOptions } from "../../bindings/bun/index.ts";

function setting(name: string, fallback: number): number {
  const raw = process.env[name];
  const value = raw === undefined ? fallback : Number(raw);
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`${name} must be a whole number, not ${raw}`);
  return value;
}

const policy: RateLimitOptions = { limit: setting("LIMIT", 10), windowMs: setting("WINDOW_MS", 60_000) };
const db = Roost.open({ dataDir: process.env.ROOST_DATA_DIR ?? "./ratelimit-data" });

/** `RateLimit-Policy` and `RateLimit` as the IETF httpapi draft writes them (as roost's HTTP API does). */
function rateLimitHeaders(remaining: number, resetMs: number): Record<string, string> {
  const windowS = Math.max(1, Math.ceil(policy.windowMs / 1000));
  return {
    "RateLimit-Policy": `"per-ip";q=${policy.limit};w=${windowS}`,
    RateLimit: `"per-ip";r=${remaining};t=${Math.ceil(resetMs / 1000)}`,
  };
}

const server = Bun.serve({
  port: setting("PORT", 3000),
  fetch(req, server) {
    // Behind a reverse proxy this is the proxy's address: key on the
    // client address the proxy reports instead (and only trust that header
    // from the proxy).
    const ip = server.requestIP(req)?.address ?? "unknown";
    // Sync: the limiter decides in memory and never waits for a disk write.
    const decision = db.ratelimit(`ip:${ip}`, policy);
    const headers = rateLimitHeaders(decision.remaining, decision.resetMs);
    if (!decision.allowed) {
      const retryAfterS = Math.ceil(decision.retryAfterMs / 1000);
      return new Response(`Too many requests: retry in ${retryAfterS} s\n`, {
        status: 429,
        headers: { ...headers, "Retry-After": String(retryAfterS) },
      });
    }
    return new Response(`Hello, ${ip}: ${decision.remaining} requests left in this window\n`, { headers });
  },
  error(err) {
    console.error(err);
    return new Response("Internal error\n", { status: 500 });
  },
});

console.log(`listening on ${server.url} (${policy.limit} requests per ${policy.windowMs} ms per client IP)`);

// Closing flushes the limiter's state, so a restart keeps every allowance.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    server.stop();
    db.close();
    process.exit(0);
  });
}
