import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateMirror, publishSnapshot, type MirrorInfo } from "../../fixtures/mirror/generate-mirror.js";
import { snapshotRevision } from "../../fixtures/mirror/mirror-catalog.js";
import { startMirrorServer, type MirrorServer } from "../../fixtures/mirror/mirror-server.js";
import {
  rewriteRepositories,
  runMake,
  unpackImageBuilder,
} from "../../fixtures/mirror/imagebuilder-test-kit.js";
import { verifyMessage } from "../../src/shared/usign.js";

const sha256 = (data: Buffer | string) => createHash("sha256").update(data).digest("hex");

let work: string;
let info: MirrorInfo;
let server: MirrorServer;

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), "asu-mirror-snapshot-"));
  info = await generateMirror({ dir: path.join(work, "mirror"), snapshotRevision: 30000 });
  server = await startMirrorServer({ dir: info.dir });
});

afterAll(async () => {
  await server?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("publishSnapshot", () => {
  it("publishes a new revision: ImageBuilder, profiles.json, packages and a valid signed sha256sums", async () => {
    const base = `${server.url}/snapshots/targets/x86/64`;
    const before = await fetch(`${base}/sha256sums.sig`, { method: "HEAD" });
    const oldEtag = before.headers.get("etag");
    const oldModified = before.headers.get("last-modified");
    const oldIb = info.versions.SNAPSHOT!.targets["x86/64"]!.imagebuilder;
    const oldIbBytes = await readFile(path.join(info.dir, oldIb));
    const oldIndex = (await (
      await fetch(`${server.url}/snapshots/targets/x86/64/packages/index.json`)
    ).json()) as {
      packages: Record<string, string>;
    };

    await publishSnapshot(info, 30042);

    expect(info.snapshotRevision).toBe(30042);
    const revision = snapshotRevision(30042);
    expect(revision).toMatch(/^r30042-[0-9a-f]{10}$/);
    expect(info.versions.SNAPSHOT!.revision).toBe(revision);
    expect(info.versions.SNAPSHOT!.targets["x86/64"]!.versionCode).toBe(revision);

    const profiles = (await (await fetch(`${base}/profiles.json`)).json()) as { version_code: string };
    expect(profiles.version_code).toBe(revision);

    const after = await fetch(`${base}/sha256sums.sig`, { method: "HEAD" });
    expect(after.headers.get("etag")).not.toBe(oldEtag);
    expect(after.headers.get("last-modified")).not.toBe(oldModified);
    // a conditional request with the old validators gets the new file
    const conditional = await fetch(`${base}/sha256sums.sig`, {
      headers: { "If-None-Match": oldEtag ?? "" },
    });
    expect(conditional.status).toBe(200);

    const sums = await (await fetch(`${base}/sha256sums`)).text();
    const sig = await (await fetch(`${base}/sha256sums.sig`)).text();
    expect(verifyMessage(sums, sig, info.publicKeyLine)).toEqual({ ok: true });
    const ib = info.versions.SNAPSHOT!.targets["x86/64"]!.imagebuilder;
    expect(ib).toBe(oldIb);
    const ibBytes = Buffer.from(await (await fetch(`${server.url}/${ib}`)).arrayBuffer());
    expect(ibBytes.equals(oldIbBytes)).toBe(false);
    expect(sums).toContain(`${sha256(ibBytes)} *${path.basename(ib)}\n`);

    const index = (await (
      await fetch(`${server.url}/snapshots/targets/x86/64/packages/index.json`)
    ).json()) as {
      packages: Record<string, string>;
    };
    expect(index.packages["base-files"]).not.toBe(oldIndex.packages["base-files"]);
    expect(index.packages["base-files"]).toMatch(/-r30042$/);

    const dir = await unpackImageBuilder(path.join(info.dir, ib), path.join(work, "ib"));
    await rewriteRepositories(dir, server.url);
    const make = await runMake(dir, ["info"]);
    expect(make.stdout).toContain(`Current Revision: "${revision}"`);
    const manifest = await runMake(dir, ["manifest", "PROFILE=generic"]);
    expect(manifest.code).toBe(0);
    expect(manifest.stdout).toContain(`base-files ${index.packages["base-files"]}\n`);
  });

  it("leaves the releases untouched", async () => {
    const res = await fetch(`${server.url}/releases/24.10.4/targets/x86/64/profiles.json`);
    expect(((await res.json()) as { version_code: string }).version_code).toBe("r28959-29397011cc");
  });
});
