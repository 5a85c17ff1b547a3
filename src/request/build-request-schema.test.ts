import Fastify, { type FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BuildRequestSchema,
  FILESYSTEMS,
  makeBuildRequestSchema,
  REQUEST_LIMITS,
  type BuildRequestBody,
} from "./build-request-schema.js";

// The same Ajv options as src/http/app.ts, so this is what Fastify will accept and reject.
let app: FastifyInstance;

beforeAll(async () => {
  app = Fastify({
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: true } },
  });
  app.post<{ Body: BuildRequestBody }>(
    "/build",
    { schema: { body: BuildRequestSchema } },
    async (req) => req.body,
  );
  app.post(
    "/strict",
    { schema: { body: makeBuildRequestSchema({ max_defaults_length: 10, max_custom_rootfs_size_mb: 512 }) } },
    async (req) => req.body,
  );
  await app.ready();
});

afterAll(async () => {
  await app.close();
});

async function post(
  body: unknown,
  url = "/build",
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await app.inject({ method: "POST", url, payload: body as Record<string, unknown> });
  return { status: res.statusCode, json: res.json() };
}

const minimal = { version: "24.10.4", target: "ath79/generic", profile: "tplink_archer-c7-v5" };

describe("BuildRequestSchema accepts what real clients send", () => {
  it("LuCI: profile with a comma, kernel and libc, rootfs_size_mb as a string, query string ignored", async () => {
    const res = await app.inject({
      method: "POST",
      url: "/build?1696506154265",
      payload: {
        client: "luci/git-24.086.45142-09d5a38",
        version: "23.05.4",
        target: "ath79/generic",
        profile: "tplink,archer-c7-v5",
        packages: ["base-files", "busybox", "kernel", "libc", "luci", "libubox20230523"],
        diff_packages: true,
        filesystem: "squashfs",
        rootfs_size_mb: "512",
      },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ rootfs_size_mb: "512", profile: "tplink,archer-c7-v5" });
  });

  it("owut: packages_versions, version_code, integer rootfs_size_mb", async () => {
    const { status } = await post({
      client: "owut/2024.07.01~r1",
      ...minimal,
      version_code: "r28427-6df0e3d02a",
      packages_versions: {
        "luci-app-attendedsysupgrade": "git-24.196.59693-4a4bc3c",
        kernel: "6.6.86~abc-r1",
        wget: "1:1.2",
      },
      diff_packages: true,
      rootfs_size_mb: 256,
      filesystem: "ext4",
    });
    // ":" is not in upstream's version pattern.
    expect(status).toBe(400);
    const ok = await post({
      ...minimal,
      version_code: "",
      packages_versions: {
        "luci-app-attendedsysupgrade": "git-24.196.59693-4a4bc3c",
        kernel: "6.6.86~abc-r1",
      },
      rootfs_size_mb: 256,
    });
    expect(ok.status).toBe(200);
  });

  it("OFS: -pkg removals, empty defaults, empty repositories, unknown extra fields", async () => {
    const { status, json } = await post({
      ...minimal,
      packages: ["-ppp", "-ppp-mod-pppoe", "+luci", "tcpdump"],
      defaults: "",
      repositories: {},
      repository_keys: [],
      repositories_mode: "",
      client: "ofs/4.1.0",
      some_future_field: 1,
    });
    expect(status).toBe(200);
    expect(json.some_future_field).toBe(1);
  });

  it("auc: no packages at all; defaults are filled in", async () => {
    const { status, json } = await post({ ...minimal, version_code: "r24012-d8dd03c46f" });
    expect(status).toBe(200);
    expect(json).toEqual({
      ...minimal,
      version_code: "r24012-d8dd03c46f",
      distro: "openwrt",
      packages: [],
      packages_versions: {},
      diff_packages: false,
      repositories: {},
      repositories_mode: "",
      repository_keys: [],
    });
  });

  it("accepts null for the nullable fields", async () => {
    const { status } = await post({
      ...minimal,
      defaults: null,
      rootfs_size_mb: null,
      filesystem: null,
      client: null,
    });
    expect(status).toBe(200);
  });

  it("accepts repositories and keys", async () => {
    const { status } = await post({
      ...minimal,
      repositories: { "my.feed-1": "https://example.org/feed/packages.adb" },
      repositories_mode: "replace",
      repository_keys: [
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE+Abc/123=\n-----END PUBLIC KEY-----\n",
      ],
    });
    expect(status).toBe(200);
  });
});

describe("BuildRequestSchema rejects before anything runs", () => {
  const bad: [string, Record<string, unknown>][] = [
    ["a missing version", { target: "ath79/generic", profile: "x" }],
    ["an empty version", { ...minimal, version: "" }],
    ["a version with a slash", { ...minimal, version: "../24.10" }],
    ["a target without subtarget", { ...minimal, target: "ath79" }],
    ["a target with three parts", { ...minimal, target: "ath79/generic/x" }],
    ["a profile with a space", { ...minimal, profile: "tplink archer" }],
    ["a profile with a shell character", { ...minimal, profile: "x;reboot" }],
    ["a package with a space", { ...minimal, packages: ["luci tcpdump"] }],
    ["a package with a dollar", { ...minimal, packages: ["$(reboot)"] }],
    ["a package that is only a sign", { ...minimal, packages: ["-"] }],
    ["a package with two signs", { ...minimal, packages: ["--x"] }],
    ["a package name that is not a string", { ...minimal, packages: [1] }],
    ["a packages_versions key with a sign", { ...minimal, packages_versions: { "-x": "1" } }],
    ["a package version with a space", { ...minimal, packages_versions: { x: "1 2" } }],
    ["rootfs_size_mb 0", { ...minimal, rootfs_size_mb: 0 }],
    ["rootfs_size_mb as a fraction", { ...minimal, rootfs_size_mb: 1.5 }],
    ["rootfs_size_mb as a word", { ...minimal, rootfs_size_mb: "big" }],
    ["rootfs_size_mb as a negative string", { ...minimal, rootfs_size_mb: "-5" }],
    ["an unknown filesystem", { ...minimal, filesystem: "ntfs" }],
    ["a repository URL that is not http", { ...minimal, repositories: { a: "ftp://example.org/" } }],
    ["a repository URL with a space", { ...minimal, repositories: { a: "https://example.org/a b" } }],
    ["a repository name with a space", { ...minimal, repositories: { "a b": "https://example.org/" } }],
    ["an unknown repositories_mode", { ...minimal, repositories_mode: "merge" }],
    ["a repository key with a shell character", { ...minimal, repository_keys: ["`reboot`"] }],
    ["diff_packages as a string", { ...minimal, diff_packages: "true" }],
    [
      "too many packages",
      { ...minimal, packages: Array.from({ length: REQUEST_LIMITS.packages + 1 }, (_, i) => `p${i}`) },
    ],
    ["a too long package name", { ...minimal, packages: ["a".repeat(REQUEST_LIMITS.packageNameLength + 1)] }],
    [
      "too many repositories",
      {
        ...minimal,
        repositories: Object.fromEntries(
          Array.from({ length: REQUEST_LIMITS.repositories + 1 }, (_, i) => [
            `r${i}`,
            "https://example.org/",
          ]),
        ),
      },
    ],
    ["a client with a newline", { ...minimal, client: "luci\n" }],
  ];

  for (const [what, body] of bad) {
    it(`rejects ${what}`, async () => {
      const { status } = await post(body);
      expect(status).toBe(400); // Fastify's own status; src/http's error handler turns it into 422.
    });
  }

  it("applies the configured bounds in makeBuildRequestSchema(config)", async () => {
    expect((await post({ ...minimal, defaults: "12345678901" }, "/strict")).status).toBe(400);
    expect((await post({ ...minimal, defaults: "1234567890" }, "/strict")).status).toBe(200);
    expect((await post({ ...minimal, rootfs_size_mb: 513 }, "/strict")).status).toBe(400);
    expect((await post({ ...minimal, rootfs_size_mb: 512 }, "/strict")).status).toBe(200);
  });
});

describe("BuildRequestSchema as OpenAPI sees it", () => {
  it("shows the patterns and limits", () => {
    const p = BuildRequestSchema.properties;
    const pattern = (schema: unknown) => (schema as { pattern?: string }).pattern;
    expect(pattern(p.version)).toBe("^[\\w.,-]*$");
    expect(pattern(p.target)).toBe("^\\w+/\\w+$");
    expect(pattern(p.profile)).toBe("^[\\w.,-]*$");
    const packages = p.packages as unknown as { items: { pattern: string }; maxItems: number };
    expect(packages.items.pattern).toBe("^[+-]?\\w[\\w.,-]*$");
    expect(packages.maxItems).toBe(REQUEST_LIMITS.packages);
    const repos = p.repositories as unknown as { patternProperties: Record<string, { pattern: string }> };
    expect(Object.keys(repos.patternProperties)).toEqual(["^[\\w.-]+$"]);
    expect(Object.values(repos.patternProperties)[0]?.pattern).toBe("^https?://\\S+$");
    const json = JSON.stringify(
      makeBuildRequestSchema({ max_defaults_length: 20480, max_custom_rootfs_size_mb: 1024 }),
    );
    expect(json).toContain('"maximum":1024');
    expect(json).toContain('"maxLength":20480');
  });

  it("lists every filesystem of FILESYSTEMS", () => {
    const fs = BuildRequestSchema.properties.filesystem as unknown as { anyOf: { const?: string }[] };
    expect(fs.anyOf.map((s) => s.const).filter(Boolean)).toEqual([...FILESYSTEMS]);
  });
});
