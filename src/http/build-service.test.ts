import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../config/config.js";
import { normalizeRequest } from "../request/normalize-request.js";
import { resultTtl } from "./build-service.js";

describe("resultTtl", () => {
  const config = loadConfig({ cwd: mkdtempSync(path.join(tmpdir(), "asu-ttl-")), env: {} });
  const base = { version: "24.10.4", target: "ath79/generic", profile: "x" };

  it("keeps fully pinned builds longest, others shorter", () => {
    expect(resultTtl(normalizeRequest({ ...base, packages_versions: { vim: "1" } }), config)).toBe(
      config.build_ttl,
    );
    expect(resultTtl(normalizeRequest({ ...base, packages: ["vim"] }), config)).toBe(
      config.build_ttl_unversioned,
    );
  });

  it("does not count a name like toString as pinned by Object.prototype", () => {
    for (const name of ["toString", "constructor", "valueOf", "hasOwnProperty", "__proto__"]) {
      expect(resultTtl(normalizeRequest({ ...base, packages: [name] }), config)).toBe(
        config.build_ttl_unversioned,
      );
    }
  });
});
