/** Shared by the Bun benchmarks: the report's heading line and `--append` to bench/RESULTS.md. */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { version as roostVersion } from "../../bindings/bun/index.ts";

/** `### <time>Z, <cores> × <CPU>, Bun <version>, roost <version>`. */
export function runHeading(): string {
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  return `### ${new Date().toISOString().slice(0, 19)}Z, ${cpus().length} × ${cpu}, Bun ${Bun.version}, roost ${roostVersion()}`;
}

/** Adds `report` at the end of the `heading` section of bench/RESULTS.md (created if missing). */
export function appendReport(heading: string, report: string): void {
  const path = join(import.meta.dir, "..", "RESULTS.md");
  const current = existsSync(path) ? readFileSync(path, "utf8") : "# Benchmark results\n";
  let updated: string;
  const at = current.indexOf(heading);
  if (at < 0) {
    updated = `${current.trimEnd()}\n\n${heading}\n\n${report}\n`;
  } else {
    // Insert at the end of this section: before the next "## " heading, or at the end.
    const next = current.indexOf("\n## ", at + heading.length);
    const end = next < 0 ? current.length : next + 1;
    updated = `${current.slice(0, end).trimEnd()}\n\n${report}\n${next < 0 ? "" : `\n${current.slice(end)}`}`;
  }
  writeFileSync(path, updated);
  console.log(`\nappended to ${path}`);
}
