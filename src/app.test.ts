import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { sandboxHiddenPaths } from "./app.js";
import { loadConfig } from "./config/config.js";
import { generateKeyPair } from "./shared/usign.js";

describe("sandboxHiddenPaths", () => {
  it("hides the config file, signing key and certificate, store, cache and embedded Redis data from builds", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "asu-app-"));
    writeFileSync(path.join(dir, "asu.key"), generateKeyPair().secretFile);
    writeFileSync(path.join(dir, "asu.key.ucert"), "cert");
    mkdirSync(path.join(dir, "bin"));
    for (const tool of ["usign", "ucert", "fwtool"]) {
      writeFileSync(path.join(dir, "bin", tool), "#!/bin/sh\n", { mode: 0o755 });
    }
    writeFileSync(
      path.join(dir, "asu.toml"),
      'signing_key = "asu.key"\nredis_url = "redis://:pw@127.0.0.1:6379"\n',
    );
    const config = loadConfig({ cwd: dir, env: { PATH: path.join(dir, "bin") } });
    expect(sandboxHiddenPaths(config, dir).sort()).toEqual(
      [
        path.join(dir, "asu.toml"),
        path.join(dir, "asu.key"),
        path.join(dir, "asu.key.ucert"),
        path.join(dir, "public"),
        path.join(dir, "var", "cache"),
        path.join(dir, "var", "redis"),
      ].sort(),
    );
  });
});
