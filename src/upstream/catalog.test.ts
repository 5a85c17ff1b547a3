import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadConfig, type AsuConfig, type RawConfig } from "../config/config.js";
import { ValidationError } from "../shared/errors.js";
import { branchNameOf, Catalog, compareVersionsDesc, fillBranchPath, isSnapshotVersion } from "./catalog.js";
import {
  sampleUpstreamTree,
  startFixtureUpstream,
  type FixtureUpstream,
} from "../../test/support/fixture-upstream.js";
import { UpstreamClient } from "./upstream-client.js";

let upstream: FixtureUpstream;
let clock: number;

function setup(overrides: Partial<RawConfig> = {}): { config: AsuConfig; catalog: Catalog } {
  const config = loadConfig({
    cwd: mkdtempSync(path.join(tmpdir(), "asu-catalog-")),
    env: {},
    overrides: { upstream_url: upstream.url, branches: { "22.03": { enabled: false } }, ...overrides },
  });
  const client = new UpstreamClient({ baseUrl: config.upstream_url, now: () => clock });
  return { config, catalog: new Catalog(config, client) };
}

async function validationError(promise: Promise<unknown>): Promise<ValidationError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ValidationError);
  return err as ValidationError;
}

beforeEach(async () => {
  clock = 5_000_000;
  upstream = await startFixtureUpstream(sampleUpstreamTree());
});

afterEach(async () => {
  await upstream.close();
});

describe("version helpers", () => {
  it("maps versions to branches", () => {
    expect(branchNameOf("23.05.4")).toBe("23.05");
    expect(branchNameOf("24.10-SNAPSHOT")).toBe("24.10");
    expect(branchNameOf("25.12.0-rc1")).toBe("25.12");
    expect(branchNameOf("SNAPSHOT")).toBe("SNAPSHOT");
    expect(branchNameOf("23.05")).toBe("23.05");
    expect(branchNameOf("snapshot")).toBeUndefined();
    expect(branchNameOf("23")).toBeUndefined();
    expect(branchNameOf("23.05x")).toBeUndefined();
  });

  it("recognises snapshots", () => {
    expect(isSnapshotVersion("SNAPSHOT")).toBe(true);
    expect(isSnapshotVersion("24.10-SNAPSHOT")).toBe(true);
    expect(isSnapshotVersion("24.10.4")).toBe(false);
    expect(isSnapshotVersion("24.10-SNAPSHOTS")).toBe(false);
  });

  it("fills path templates", () => {
    expect(fillBranchPath("releases/{version}", "24.10.4", "24.10")).toBe("releases/24.10.4");
    expect(fillBranchPath("releases/packages-{branch}", "24.10.4", "24.10")).toBe("releases/packages-24.10");
    expect(fillBranchPath("snapshots", "SNAPSHOT", "SNAPSHOT")).toBe("snapshots");
  });

  it("orders versions newest first, release candidates before their release", () => {
    const sorted = [
      "23.05.4",
      "24.10.0-rc1",
      "24.10.10",
      "24.10.2",
      "24.10.0",
      "24.10.0-rc2",
      "19.07.10",
    ].sort(compareVersionsDesc);
    expect(sorted).toEqual([
      "24.10.10",
      "24.10.2",
      "24.10.0",
      "24.10.0-rc2",
      "24.10.0-rc1",
      "23.05.4",
      "19.07.10",
    ]);
  });
});

describe("Catalog.resolve", () => {
  it("fills the paths of a listed release", async () => {
    const { catalog } = setup();
    const r = await catalog.resolve("23.05.4");
    expect(r.branch.name).toBe("23.05");
    expect(r.path).toBe("releases/23.05.4");
    expect(r.pathPackages).toBe("releases/23.05.4/packages");
    expect(r.snapshot).toBe(false);
  });

  it("resolves main and branch snapshots without .versions.json", async () => {
    const { catalog } = setup();
    const main = await catalog.resolve("SNAPSHOT");
    expect([main.branch.name, main.path, main.pathPackages, main.snapshot]).toEqual([
      "SNAPSHOT",
      "snapshots",
      "snapshots/packages",
      true,
    ]);
    const branch = await catalog.resolve("24.10-SNAPSHOT");
    expect([branch.branch.name, branch.path, branch.pathPackages]).toEqual([
      "24.10",
      "releases/24.10-SNAPSHOT",
      "releases/24.10-SNAPSHOT/packages",
    ]);
  });

  it("refuses an unknown branch, naming the supported ones", async () => {
    const { catalog } = setup();
    const err = await validationError(catalog.resolve("19.07.10"));
    expect(err.status).toBe(400);
    expect(err.detail).toBe(
      "Unsupported branch: 19.07.10. Branch 19.07 is not built here; this server builds branches SNAPSHOT, 25.12, 24.10, 23.05, 21.02; choose a version from one of them.",
    );
  });

  it("names the version the client sent, as upstream (Unsupported branch: 10.10.10)", async () => {
    const { catalog } = setup();
    const err = await validationError(catalog.resolve("10.10.10"));
    expect(err.detail).toMatch(/^Unsupported branch: 10\.10\.10\. /);
  });

  it("refuses a disabled branch", async () => {
    const { catalog } = setup();
    const err = await validationError(catalog.resolve("22.03.7"));
    expect(err.detail).toBe(
      "Unsupported branch: 22.03.7. Branch 22.03 is disabled on this server; choose a version from SNAPSHOT, 25.12, 24.10, 23.05, 21.02.",
    );
  });

  it("refuses an unlisted version after one forced reload, naming the branch's versions", async () => {
    const { catalog } = setup();
    await catalog.resolve("23.05.4");
    clock += 60_000;
    const err = await validationError(catalog.resolve("23.05.9"));
    expect(err.detail).toBe(
      "Unsupported version: 23.05.9. Versions of 23.05 on the download server: 23.05.4, 23.05.3. Choose one of them.",
    );
    expect(upstream.count(".versions.json")).toBe(2);
    // A second miss within the reload interval does not go upstream again.
    await validationError(catalog.resolve("23.05.9"));
    expect(upstream.count(".versions.json")).toBe(2);
  });

  it("finds a release published after the versions were cached (reload on a miss)", async () => {
    const { catalog } = setup();
    await catalog.resolve("23.05.4");
    upstream.set(".versions.json", { stable_version: "23.05.5", versions_list: ["23.05.5", "23.05.4"] });
    clock += 15_000;
    expect((await catalog.resolve("23.05.5")).path).toBe("releases/23.05.5");
  });

  it("says so when a branch has no release yet", async () => {
    const { catalog } = setup();
    const err = await validationError(catalog.resolve("21.02.7"));
    expect(err.detail).toBe(
      "Unsupported version: 21.02.7. The download server lists no release of 21.02. Choose a version of another branch: SNAPSHOT, 25.12, 24.10, 23.05.",
    );
  });

  it("refuses text that is no version", async () => {
    const { catalog } = setup();
    const err = await validationError(catalog.resolve("latest"));
    expect(err.detail).toBe(
      "Unsupported version: latest. Versions look like 24.10.4, 24.10-SNAPSHOT or SNAPSHOT; this server builds branches SNAPSHOT, 25.12, 24.10, 23.05, 21.02.",
    );
  });

  it("refuses SNAPSHOT-style names that the branch does not publish", async () => {
    const { catalog } = setup({ branches: { SNAPSHOT: { enabled: true, snapshot: false } } });
    const err = await validationError(catalog.resolve("SNAPSHOT"));
    expect(err.detail).toContain("Unsupported version: SNAPSHOT. Branch SNAPSHOT does not publish it");
  });
});

describe("Catalog.branchesOverview", () => {
  it("lists enabled branches with versions, targets and package changes, and latest newest first", async () => {
    const { catalog } = setup();
    const { branches, latest } = await catalog.branchesOverview();
    expect(Object.keys(branches)).toEqual(["SNAPSHOT", "25.12", "24.10", "23.05", "21.02"]);
    expect(latest).toEqual(["25.12.0-rc1", "24.10.4", "23.05.4"]);

    const b2305 = branches["23.05"];
    expect(b2305).toMatchObject({
      name: "23.05",
      enabled: true,
      snapshot: false,
      path: "releases/{version}",
      path_packages: "releases/{version}/packages",
      versions: ["23.05.4", "23.05.3"],
      targets: { "ath79/generic": "mips_24kc", "x86/64": "x86_64" },
      branch_off_rev: 23069,
    });
    expect(b2305?.package_changes.map((c) => c.source)).toContain("firewall");

    expect(branches.SNAPSHOT).toMatchObject({
      snapshot: true,
      path: "snapshots",
      path_packages: "snapshots/packages",
      versions: ["SNAPSHOT"],
      targets: { "x86/64": "x86_64" },
    });
    expect(branches.SNAPSHOT?.branch_off_rev).toBeUndefined();
    // 25.12.0-rc1 has no .targets.json in the fixture: the branch shows no targets.
    expect(branches["25.12"]?.targets).toEqual({});
    expect(branches["21.02"]).toMatchObject({ versions: [], targets: {} });
  });
});
