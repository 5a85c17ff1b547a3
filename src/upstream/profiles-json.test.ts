import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { realOpenwrt23054Dir } from "../../test/support/fixture-upstream.js";
import { UpstreamError } from "../shared/errors.js";
import { startFixtureUpstream } from "../../test/support/fixture-upstream.js";
import { UpstreamClient } from "./upstream-client.js";

/**
 * Hand-made documents in the shapes the releases published (field sets from OpenWrt's
 * scripts/json_overview_image_info.py and json_add_image_info.py of each era).
 */
const shapes: Record<string, object> = {
  // 19.07: version_commit, no arch_packages, default_packages, device_packages or epoch.
  "19.07": {
    metadata_version: 1,
    target: "ath79/generic",
    version_commit: "r11427-9ce6aa9d8d",
    version_number: "19.07.10",
    profiles: {
      "tplink_archer-c7-v5": {
        image_prefix: "openwrt-19.07.10-ath79-generic-tplink_archer-c7-v5",
        images: [
          {
            name: "openwrt-19.07.10-ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin",
            type: "sysupgrade",
            sha256: "ab",
          },
        ],
        supported_devices: ["tplink,archer-c7-v5", "archer-c7-v5"],
        titles: [{ vendor: "TP-Link", model: "Archer C7", variant: "v5" }],
      },
    },
  },
  // 21.02: source_date_epoch as a string (upstream ASU's own fixture has "1612136917").
  "21.02": {
    arch_packages: "mips_24kc",
    default_packages: ["base-files", "busybox"],
    metadata_version: 1,
    source_date_epoch: "1612136917",
    target: "ath79/generic",
    version_code: "r16279-5cc0535800",
    version_number: "21.02.1",
    profiles: {
      "tplink_archer-c7-v5": {
        device_packages: ["kmod-ath10k-ct"],
        image_prefix: "openwrt-21.02.1-ath79-generic-tplink_archer-c7-v5",
        images: [
          { name: "x-squashfs-sysupgrade.bin", type: "sysupgrade", sha256: "ab", filesystem: "squashfs" },
        ],
        supported_devices: ["tplink,archer-c7-v5"],
        titles: [{ vendor: "TP-Link", model: "Archer C7", variant: "v5" }],
      },
    },
  },
  // 22.03: integer epoch, sha256_unsigned, file_size_limits (unknown to us), a null title field.
  "22.03": {
    arch_packages: "mips_24kc",
    default_packages: ["base-files"],
    metadata_version: 1,
    source_date_epoch: 1697392347,
    target: "ath79/generic",
    version_code: "r20265-f85a79bcb4",
    version_number: "22.03.6",
    profiles: {
      "tplink_archer-c7-v5": {
        device_packages: ["kmod-ath10k-ct"],
        file_size_limits: { image: 15872000, kernel: null },
        image_prefix: "openwrt-22.03.6-ath79-generic-tplink_archer-c7-v5",
        images: [
          {
            name: "x-squashfs-sysupgrade.bin",
            type: "sysupgrade",
            sha256: "ab",
            sha256_unsigned: "cd",
            size: 123,
          },
        ],
        supported_devices: ["tplink,archer-c7-v5"],
        titles: [{ vendor: "TP-Link", model: "Archer C7", variant: null }],
      },
    },
  },
};

async function profilesFrom(doc: unknown) {
  const upstream = await startFixtureUpstream({
    "releases/x/targets/ath79/generic/profiles.json": doc as object,
  });
  try {
    return await new UpstreamClient({ baseUrl: upstream.url }).getProfiles("releases/x", "ath79/generic");
  } finally {
    await upstream.close();
  }
}

describe("profiles.json read as leniently as upstream ASU", () => {
  it("reads source_date_epoch given as a string, as int() does upstream (21.02 shape)", async () => {
    const profiles = await profilesFrom(shapes["21.02"]);
    expect(profiles?.source_date_epoch).toBe(1612136917);
    expect(profiles?.version_code).toBe("r16279-5cc0535800");
  });

  it("reads the 19.07 shape: version_commit, no arch_packages or default_packages", async () => {
    const profiles = await profilesFrom(shapes["19.07"]);
    expect(profiles?.version_code).toBe("r11427-9ce6aa9d8d");
    expect(profiles?.arch_packages).toBe("");
    expect(profiles?.default_packages).toBeUndefined();
    expect(profiles?.profiles["tplink_archer-c7-v5"]?.supported_devices).toEqual([
      "tplink,archer-c7-v5",
      "archer-c7-v5",
    ]);
  });

  it("reads the 22.03 shape, keeps unknown fields and drops nulls", async () => {
    const profiles = await profilesFrom(shapes["22.03"]);
    const info = profiles?.profiles["tplink_archer-c7-v5"] as Record<string, unknown> | undefined;
    expect(info?.file_size_limits).toEqual({ image: 15872000, kernel: null });
    expect(profiles?.profiles["tplink_archer-c7-v5"]?.titles).toEqual([
      { vendor: "TP-Link", model: "Archer C7" },
    ]);
    expect(profiles?.profiles["tplink_archer-c7-v5"]?.images?.[0]).toMatchObject({
      size: 123,
      sha256_unsigned: "cd",
    });
  });

  it("accepts nulls and missing optional fields (linux_kernel, titles, supported_devices, image_prefix, default_packages)", async () => {
    const profiles = await profilesFrom({
      arch_packages: null,
      default_packages: null,
      linux_kernel: null,
      metadata_version: "1",
      source_date_epoch: null,
      target: "ath79/generic",
      version_code: "r1-abc",
      version_number: null,
      profiles: { a: { images: null, titles: null, supported_devices: null, image_prefix: null }, b: {} },
    });
    expect(profiles?.metadata_version).toBe(1);
    expect(profiles?.source_date_epoch).toBeUndefined();
    expect(profiles?.linux_kernel).toBeUndefined();
    expect(profiles?.version_number).toBe("");
    expect(Object.keys(profiles?.profiles ?? {})).toEqual(["a", "b"]);
  });

  it("refuses only a document without a profiles object, naming the field", async () => {
    const err = await profilesFrom({ target: "ath79/generic", version_code: "r1", profiles: [] }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).detail).toContain('field "profiles" is missing or not an object');
  });

  const realDir = realOpenwrt23054Dir();
  it.skipIf(!realDir)("reads every real 23.05.4 profiles.json unchanged", async () => {
    const tree: Record<string, object> = {};
    const targets: string[] = [];
    for (const target of readdirSync(path.join(realDir as string, "targets"))) {
      for (const sub of readdirSync(path.join(realDir as string, "targets", target))) {
        const file = path.join(realDir as string, "targets", target, sub, "profiles.json");
        tree[`releases/23.05.4/targets/${target}/${sub}/profiles.json`] = JSON.parse(
          readFileSync(file, "utf8"),
        ) as object;
        targets.push(`${target}/${sub}`);
      }
    }
    const upstream = await startFixtureUpstream(tree);
    try {
      const client = new UpstreamClient({ baseUrl: upstream.url });
      expect(targets.length).toBeGreaterThan(70);
      for (const target of targets) {
        const parsed = await client.getProfiles("releases/23.05.4", target);
        expect(parsed).toEqual(tree[`releases/23.05.4/targets/${target}/profiles.json`]);
      }
    } finally {
      await upstream.close();
    }
  });
});
