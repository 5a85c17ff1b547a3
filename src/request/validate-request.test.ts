import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadConfig, type RawConfig } from "../config/config.js";
import { AsuError, SchemaError, UnknownPackageError, ValidationError } from "../shared/errors.js";
import { Catalog } from "../upstream/catalog.js";
import {
  realOpenwrt23054Dir,
  sampleUpstreamTree,
  startFixtureUpstream,
  type FixtureUpstream,
} from "../../test/support/fixture-upstream.js";
import type { ProfilesJson } from "../upstream/upstream-documents.js";
import { UpstreamClient } from "../upstream/upstream-client.js";
import type { BuildRequestBody } from "./build-request-schema.js";
import { normalizeRequest } from "./normalize-request.js";
import { resolveProfile, validateRequest, type ValidatedRequest } from "./validate-request.js";

let upstream: FixtureUpstream;
let clock: number;

function deps(overrides: Partial<RawConfig> = {}) {
  const config = loadConfig({
    cwd: mkdtempSync(path.join(tmpdir(), "asu-validate-")),
    env: {},
    overrides: { upstream_url: upstream.url, branches: { "22.03": { enabled: false } }, ...overrides },
  });
  const client = new UpstreamClient({ baseUrl: config.upstream_url, now: () => clock });
  return { config, upstream: client, catalog: new Catalog(config, client) };
}

type Deps = ReturnType<typeof deps>;

const ath79: BuildRequestBody = {
  version: "23.05.4",
  target: "ath79/generic",
  profile: "tplink,archer-c7-v5",
};

function validate(body: BuildRequestBody, d: Deps = deps()): Promise<ValidatedRequest> {
  return validateRequest(normalizeRequest(body), d);
}

async function failure(promise: Promise<unknown>): Promise<AsuError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AsuError);
  return err as AsuError;
}

beforeEach(async () => {
  clock = 10_000_000;
  upstream = await startFixtureUpstream(sampleUpstreamTree());
});

afterEach(async () => {
  await upstream.close();
});

describe("validateRequest: a good request", () => {
  it("resolves branch, paths, profile and architecture (LuCI's comma profile)", async () => {
    const v = await validate({ ...ath79, packages: ["luci", "tcpdump", "-ppp", "kernel", "libc"] });
    expect(v.branch.name).toBe("23.05");
    expect([v.path, v.pathPackages, v.arch]).toEqual([
      "releases/23.05.4",
      "releases/23.05.4/packages",
      "mips_24kc",
    ]);
    expect([v.profile, v.requestedProfile]).toEqual(["tplink_archer-c7-v5", "tplink_archer-c7-v5"]);
    expect(v.profileInfo.supported_devices).toContain("tplink,archer-c7-v5");
    expect(v.profilesJson.version_code).toBe("r24012-d8dd03c46f");
    expect(v.packageCheck).toBe("checked");
    expect(v.packages).toEqual(["luci", "tcpdump", "-ppp"]);
  });

  it("works for an apk snapshot with kmods", async () => {
    const v = await validate({
      version: "SNAPSHOT",
      target: "x86/64",
      profile: "generic",
      packages: ["tcpdump", "kmod-e1000", "owut"],
    });
    expect([v.path, v.pathPackages, v.profile, v.packageCheck]).toEqual([
      "snapshots",
      "snapshots/packages",
      "generic",
      "checked",
    ]);
  });

  it("accepts 24.10 kernel modules from the kmods folder and device packages", async () => {
    const v = await validate({
      version: "24.10.4",
      target: "ath79/generic",
      profile: "tplink_archer-c7-v5",
      packages: ["kmod-wireguard", "kmod-ath10k-ct", "ath10k-firmware-qca988x-ct", "tcpdump"],
    });
    expect(v.packageCheck).toBe("checked");
  });

  it("checks names after OpenWrt's renames (auc → owut, opkg language packs on 24.10)", async () => {
    const v = await validate({
      version: "24.10.4",
      target: "ath79/generic",
      profile: "tplink_archer-c6-v2",
      packages: ["auc", "luci-i18n-opkg-de", "luci-i18n-base-en"],
    });
    expect(v.packageCheck).toBe("checked");
  });

  it("accepts a router's ABI-suffixed library names", async () => {
    expect((await validate({ ...ath79, packages: ["libubox20230523", "libubox"] })).packageCheck).toBe(
      "checked",
    );
  });
});

describe("validateRequest: distro, branch and version", () => {
  it("refuses another distro", async () => {
    const err = await failure(validate({ ...ath79, distro: "lede" }));
    expect([err.status, err.detail]).toEqual([
      400,
      'Unsupported distro: lede. This server builds only OpenWrt; send "distro": "openwrt" or leave the field out.',
    ]);
  });

  it("refuses an unknown branch", async () => {
    const err = await failure(validate({ ...ath79, version: "19.07.10" }));
    expect([err.status, err.detail]).toEqual([
      400,
      "Unsupported branch: 19.07.10. Branch 19.07 is not built here; this server builds branches SNAPSHOT, 25.12, 24.10, 23.05, 21.02; choose a version from one of them.",
    ]);
  });

  it("refuses a disabled branch", async () => {
    const err = await failure(validate({ ...ath79, version: "22.03.7" }));
    expect([err.status, err.detail]).toEqual([
      400,
      "Unsupported branch: 22.03.7. Branch 22.03 is disabled on this server; choose a version from SNAPSHOT, 25.12, 24.10, 23.05, 21.02.",
    ]);
  });

  it("refuses an unknown version", async () => {
    const err = await failure(validate({ ...ath79, version: "23.05.9" }));
    expect([err.status, err.detail]).toEqual([
      400,
      "Unsupported version: 23.05.9. Versions of 23.05 on the download server: 23.05.4, 23.05.3. Choose one of them.",
    ]);
  });

  it("refuses a listed version whose targets are not published", async () => {
    const err = await failure(validate({ ...ath79, version: "24.10-SNAPSHOT" }));
    expect([err.status, err.detail]).toEqual([
      400,
      "Unsupported version: 24.10-SNAPSHOT. The download server publishes no targets for it (yet). Please choose another version or try again later.",
    ]);
  });
});

describe("validateRequest: target", () => {
  const message =
    "Unsupported target: ramips/mt7621. The requested target was either dropped, is still being built or is not supported by the selected version. Please check the forums or try again later.";

  it("refuses an unknown target with the exact text clients show", async () => {
    const err = await failure(validate({ ...ath79, target: "ramips/mt7621" }));
    expect(err).toBeInstanceOf(ValidationError);
    expect([err.status, err.detail]).toEqual([400, message]);
  });

  it("reloads .targets.json once on a miss, then refuses", async () => {
    const d = deps();
    await validate(ath79, d);
    clock += 60_000;
    await failure(validate({ ...ath79, target: "ramips/mt7621" }, d));
    expect(upstream.count("releases/23.05.4/.targets.json")).toBe(2);
    await failure(validate({ ...ath79, target: "ramips/mt7621" }, d));
    expect(upstream.count("releases/23.05.4/.targets.json")).toBe(2);
  });

  it("finds a target published after .targets.json was cached", async () => {
    const d = deps();
    await validate(ath79, d);
    const tree = sampleUpstreamTree();
    upstream.set("releases/23.05.4/.targets.json", {
      "ath79/generic": "mips_24kc",
      "x86/64": "x86_64",
      "ath79/nand": "mips_24kc",
    });
    upstream.set("releases/23.05.4/targets/ath79/nand/profiles.json", {
      ...(JSON.parse(
        JSON.stringify(tree["releases/23.05.4/targets/ath79/generic/profiles.json"]),
      ) as ProfilesJson),
      target: "ath79/nand",
    });
    clock += 15_000;
    const v = await validate({ ...ath79, target: "ath79/nand", packages: [] }, d);
    expect(v.profile).toBe("tplink_archer-c7-v5");
  });

  it("refuses a listed target whose profiles.json is not there yet", async () => {
    upstream.set("releases/23.05.4/targets/x86/64/profiles.json", undefined);
    const err = await failure(validate({ ...ath79, target: "x86/64", profile: "generic" }));
    expect(err.detail).toBe(message.replace("ramips/mt7621", "x86/64"));
  });
});

describe("validateRequest: profile", () => {
  it("maps supported_devices entries, raw and with underscores, to the profile", async () => {
    const d = deps();
    expect((await validate({ ...ath79, profile: "carambola2" }, d)).profile).toBe("8dev_carambola2");
    expect((await validate({ ...ath79, profile: "8dev,carambola2" }, d)).profile).toBe("8dev_carambola2");
    expect((await validate({ ...ath79, profile: "archer-c7" }, d)).profile).toBe("tplink_archer-c7-v2");
    expect((await validate({ ...ath79, profile: "netgear,wndr3700v2" }, d)).profile).toBe(
      "netgear_wndr3700-v2",
    );
    // A board listed by two profiles: the first in profiles.json wins.
    expect((await validate({ ...ath79, profile: "wndr3700" }, d)).profile).toBe("netgear_wndr3700");
  });

  it("falls back to generic on a target whose only profile is generic (x86)", async () => {
    const v = await validate({ ...ath79, target: "x86/64", profile: "pc-engines-apu2" });
    expect([v.profile, v.requestedProfile]).toEqual(["generic", "pc-engines-apu2"]);
  });

  it("refuses an unknown profile, suggesting a close one", async () => {
    const err = await failure(validate({ ...ath79, profile: "tplink_archer-c7-v9" }));
    expect([err.status, err.detail]).toEqual([
      400,
      "Unsupported profile: tplink_archer-c7-v9. The requested profile is not available for ath79/generic in 23.05.4. Did you mean tplink_archer-c7-v2? Use the router's board_name (ubus call system board) or a profile id from the firmware selector, or choose another version.",
    ]);
    const err2 = await failure(validate({ ...ath79, profile: "foo" }));
    expect(err2.detail).toBe(
      "Unsupported profile: foo. The requested profile is not available for ath79/generic in 23.05.4. Use the router's board_name (ubus call system board) or a profile id from the firmware selector, or choose another version.",
    );
  });

  it("reloads profiles.json once on a miss, and finds a profile added since", async () => {
    const d = deps();
    await validate(ath79, d);
    clock += 60_000;
    await failure(validate({ ...ath79, profile: "new_device" }, d));
    expect(upstream.count("releases/23.05.4/targets/ath79/generic/profiles.json")).toBe(2);

    const doc = JSON.parse(
      upstream.files.get("releases/23.05.4/targets/ath79/generic/profiles.json") as string,
    ) as ProfilesJson;
    doc.profiles.new_device = { supported_devices: ["vendor,new-device"] };
    upstream.set("releases/23.05.4/targets/ath79/generic/profiles.json", doc);
    clock += 15_000;
    expect((await validate({ ...ath79, profile: "vendor,new-device" }, d)).profile).toBe("new_device");
  });
});

describe("validateRequest: defaults, rootfs size, repositories", () => {
  it("refuses defaults when the server does not allow them", async () => {
    const err = await failure(validate({ ...ath79, defaults: "echo hi" }));
    expect(err).toBeInstanceOf(ValidationError);
    expect([err.status, err.detail]).toEqual([
      400,
      'This server does not allow "defaults" (a first-boot script). Remove "defaults" from the request, or use a server that allows it.',
    ]);
  });

  it("accepts an empty defaults string anyway (OFS)", async () => {
    expect((await validate({ ...ath79, defaults: "" })).defaults).toBeNull();
  });

  it("refuses defaults longer than max_defaults_length with 422", async () => {
    const d = deps({ allow_defaults: true, max_defaults_length: 10 });
    const err = await failure(validate({ ...ath79, defaults: "echo hällo!" }, d));
    expect(err).toBeInstanceOf(SchemaError);
    expect([err.status, err.detail]).toEqual([
      422,
      '"defaults" is 12 bytes; this server accepts at most 10 bytes. Shorten the script.',
    ]);
    expect((await validate({ ...ath79, defaults: "echo hi" }, d)).defaults).toBe("echo hi");
  });

  it("refuses rootfs_size_mb above max_custom_rootfs_size_mb with 422", async () => {
    const d = deps({ max_custom_rootfs_size_mb: 512 });
    const err = await failure(validate({ ...ath79, rootfs_size_mb: "1024" }, d));
    expect([err.status, err.detail]).toEqual([
      422,
      "rootfs_size_mb 1024 is more than this server allows (512 MB). Ask for 512 MB or less, or leave it out for the device's default.",
    ]);
    expect((await validate({ ...ath79, rootfs_size_mb: "512" }, d)).rootfs_size_mb).toBe(512);
  });

  it("refuses repositories outside the allow list", async () => {
    const d = deps({ repository_allow_list: ["https://downloads.openwrt.org/releases"] });
    for (const url of [
      "https://downloads.openwrt.org.evil.com/releases/x",
      "https://downloads.openwrt.org/releasesX/x",
    ]) {
      const err = await failure(validate({ ...ath79, repositories: { extra: url } }, d));
      expect([err.status, err.detail]).toEqual([
        400,
        `Repository extra (${url}) is not allowed. Allowed locations: https://downloads.openwrt.org/releases. Use an allowed location, or remove it from "repositories".`,
      ]);
    }
    // Userinfo is refused before the allow list (issue #9, item 3): curl and WHATWG disagree on it.
    for (const url of [
      "https://downloads.openwrt.org@evil.com/releases/x",
      "https://user@downloads.openwrt.org/releases/x",
    ]) {
      // normalizeRequest throws it, before any upstream lookup.
      const err = await failure(
        Promise.resolve().then(() => validate({ ...ath79, repositories: { extra: url } }, d)),
      );
      expect([err.status, err.detail]).toEqual([
        422,
        `Repository extra: the URL ${JSON.stringify(url)} contains a user name or password (user@host). Remove it; feeds are fetched anonymously.`,
      ]);
    }
    // The detail names the URL as the server stores and checks it (no trailing slash).
    const none = await failure(validate({ ...ath79, repositories: { a: "https://example.org/" } }));
    expect(none.detail).toBe(
      'Repository a (https://example.org) is not allowed. This server allows no extra repositories. Use an allowed location, or remove it from "repositories".',
    );
  });

  it("skips the package check for requests with their own repositories", async () => {
    const d = deps({ repository_allow_list: ["https://feeds.example.org/"] });
    const v = await validate(
      {
        ...ath79,
        packages: ["my-own-package"],
        repositories: { mine: "https://feeds.example.org/mips_24kc" },
      },
      d,
    );
    expect(v.packageCheck).toBe("skipped_custom_repositories");
  });
});

describe("validateRequest: unknown packages", () => {
  it("names the package and suggests the close one", async () => {
    const err = await failure(validate({ ...ath79, packages: ["luci", "luci-app-wireguard"] }));
    expect(err).toBeInstanceOf(UnknownPackageError);
    expect([err.status, err.detail]).toEqual([
      422,
      "Unknown package: luci-app-wireguard (did you mean luci-proto-wireguard?). Check the name, or remove it from the request.",
    ]);
    expect(err.extra.unknown_packages).toEqual(["luci-app-wireguard"]);
    expect(err.extra.suggestions).toEqual({ "luci-app-wireguard": "luci-proto-wireguard" });
    expect((err as UnknownPackageError).packages).toEqual(["luci-app-wireguard"]);
  });

  it("lists several, with suggestions only where something is close", async () => {
    const err = await failure(
      validate({
        ...ath79,
        packages: ["tcpdum", "passwall", "-not-there-either"],
        packages_versions: { "vim-fulll": "9" },
      }),
    );
    expect(err.detail).toBe(
      "Unknown packages: tcpdum (did you mean tcpdump?), passwall, vim-fulll (did you mean vim-full?). Check the names, or remove them from the request.",
    );
    expect(err.extra.unknown_packages).toEqual(["tcpdum", "passwall", "vim-fulll"]);
  });

  it("checks apk snapshots too", async () => {
    const err = await failure(
      validate({ version: "SNAPSHOT", target: "x86/64", profile: "generic", packages: ["tcpdmup"] }),
    );
    expect(err.detail).toBe(
      "Unknown package: tcpdmup (did you mean tcpdump?). Check the name, or remove it from the request.",
    );
  });

  it("skips the check when the package indexes are not published", async () => {
    upstream.set("releases/23.05.4/targets/ath79/generic/packages/Packages", undefined);
    expect((await validate({ ...ath79, packages: ["whatever"] })).packageCheck).toBe("skipped_no_index");
  });

  it("skips the check when the download server fails on an index", async () => {
    upstream.fail("releases/23.05.4/packages/mips_24kc/luci/Packages", 500);
    expect((await validate({ ...ath79, packages: ["whatever"] })).packageCheck).toBe("skipped_no_index");
  });

  it("skips the check when a promised kmods folder is missing", async () => {
    upstream.set(
      "releases/24.10.4/targets/ath79/generic/kmods/6.6.86-1-0123456789abcdef0123456789abcdef/Packages",
      undefined,
    );
    const v = await validate({
      version: "24.10.4",
      target: "ath79/generic",
      profile: "tplink_archer-c7-v5",
      packages: ["kmod-wireguard"],
    });
    expect(v.packageCheck).toBe("skipped_no_index");
  });
});

/** Every profiles.json OpenWrt published for 23.05.4 (75 targets, 1,534 profiles). */
const realDir = realOpenwrt23054Dir();

describe("resolveProfile on OpenWrt's real 23.05.4 profiles", () => {
  it("finds the real data beside the repository (../shared/data/openwrt-23.05.4)", () => {
    expect(realDir, "set ASU_OPENWRT_23_05_4 to the openwrt-23.05.4 data folder").toBeDefined();
  });

  const files: { target: string; json: ProfilesJson }[] = [];
  if (realDir) {
    for (const target of readdirSync(path.join(realDir, "targets"))) {
      for (const sub of readdirSync(path.join(realDir, "targets", target))) {
        const file = path.join(realDir, "targets", target, sub, "profiles.json");
        files.push({
          target: `${target}/${sub}`,
          json: JSON.parse(readFileSync(file, "utf8")) as ProfilesJson,
        });
      }
    }
  }

  it("maps every supported_devices entry, comma and underscore form, to a profile that lists it", () => {
    let entries = 0;
    let commas = 0;
    let exact = 0;
    for (const { target, json } of files) {
      const ids = Object.keys(json.profiles);
      const claims = new Map<string, Set<string>>();
      for (const [id, info] of Object.entries(json.profiles)) {
        for (const device of info.supported_devices ?? []) {
          const key = device.replaceAll(",", "_");
          if (!claims.has(key)) claims.set(key, new Set());
          claims.get(key)?.add(id);
        }
      }
      for (const [id, info] of Object.entries(json.profiles)) {
        for (const device of info.supported_devices ?? []) {
          entries++;
          if (device.includes(",")) commas++;
          const underscored = device.replaceAll(",", "_");
          for (const asked of new Set([device, underscored])) {
            const resolved = resolveProfile(json, asked);
            const where = `${target}: ${asked} (listed by ${id}) → ${resolved}`;
            expect(resolved, where).toBeDefined();
            const owners = claims.get(underscored) ?? new Set();
            // Either it names a profile id, or the resolved profile lists the device.
            expect(resolved === underscored || owners.has(resolved as string), where).toBe(true);
            if (owners.size === 1 && !ids.includes(underscored)) {
              expect(resolved, where).toBe(id);
              exact++;
            }
          }
        }
      }
    }
    expect(files.length).toBe(75);
    expect(commas).toBe(1611);
    expect(entries).toBeGreaterThan(commas);
    // Entries listed by one profile only and not another profile's id resolve to exactly it.
    expect(exact).toBeGreaterThan(500);
  });

  it("maps every profile id to itself and falls back to generic only where it is the single profile", () => {
    let profiles = 0;
    for (const { json } of files) {
      for (const id of Object.keys(json.profiles)) {
        profiles++;
        expect(resolveProfile(json, id)).toBe(id);
      }
      const ids = Object.keys(json.profiles);
      const fallback = resolveProfile(json, "no-such-board-anywhere");
      expect(fallback).toBe(ids.length === 1 && ids[0] === "generic" ? "generic" : undefined);
    }
    expect(profiles).toBe(1534);
  });
});
