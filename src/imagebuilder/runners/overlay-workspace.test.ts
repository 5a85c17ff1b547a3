import {
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readlink,
  rm,
  symlink,
  utimes,
  writeFile,
  chmod,
} from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProcessRunner } from "../process-runner.js";
import { createOverlayWorkspace } from "./overlay-workspace.js";

let tmp: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "asu-overlay-ws-"));
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe("createOverlayWorkspace", () => {
  it("copies the tree's top-level files and links as cp -a does: bytes, mode, times, link targets", async () => {
    const tree = path.join(tmp, "ib");
    await mkdir(path.join(tree, "include"), { recursive: true });
    await writeFile(path.join(tree, "Makefile"), "all:\n\ttrue\n");
    await writeFile(path.join(tree, ".profiles.mk"), "PROFILE_NAMES = a\n");
    await chmod(path.join(tree, ".profiles.mk"), 0o640);
    const old = new Date("2024-07-01T12:00:00Z");
    await utimes(path.join(tree, ".profiles.mk"), old, old);
    await symlink("include/rules.mk", path.join(tree, "rules.mk"));

    const ws = await createOverlayWorkspace(tree, {
      processRunner: new ProcessRunner(),
      parent: path.join(tmp, "workspaces"),
      linkedReadOnly: ["include"],
    });
    try {
      expect(await readFile(path.join(ws.dir, "Makefile"), "utf8")).toBe("all:\n\ttrue\n");
      const copied = await lstat(path.join(ws.dir, ".profiles.mk"));
      expect(copied.mode & 0o7777).toBe(0o640);
      expect(copied.mtimeMs).toBe(old.getTime());
      expect(await readlink(path.join(ws.dir, "rules.mk"))).toBe("include/rules.mk");
      // Folders are not copied: the build sees them through the overlay.
      expect((await lstat(path.join(ws.dir, "include")).catch(() => undefined)) === undefined).toBe(true);
    } finally {
      await ws.dispose();
    }
  });
});
