import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";

// `npm test` builds dist/ before vitest runs; the package must ship the server only.
const DIST = path.resolve(import.meta.dirname, "../../dist");

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(full)));
    else out.push(path.relative(DIST, full));
  }
  return out;
}

describe("dist/", () => {
  it("holds no mirror, fixture, demo or test code (npm test builds it first)", async () => {
    expect(existsSync(DIST)).toBe(true);
    const files = await walk(DIST);
    expect(files).toContain("cli/main.js");
    const offending = files.filter((f) => /(^|\/)(mirror|fixtures?|demo)[/.-]|\.test\.js$|fixture/.test(f));
    expect(offending).toEqual([]);
  });
});
