import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { classifyAnswer } from "./build-answer.js";
import { buildRequestBody, splitPackages } from "./build-command.js";
import { chooseImages, answeredImages, type AnsweredImage } from "./image-download.js";
import { listProfiles } from "./metadata-commands.js";
import { formatElapsed, printable } from "./progress-reporter.js";

describe("classifyAnswer", () => {
  it("reads the body's status as owut does, and tells a failed build from a server fault", () => {
    expect(classifyAnswer(200, { status: 200 })).toBe("done");
    expect(classifyAnswer(202, { status: 202 })).toBe("pending");
    expect(classifyAnswer(500, { status: 500, imagebuilder_status: "failed" })).toBe("failed");
    expect(classifyAnswer(500, { status: 500, detail: "Internal Server Error" })).toBe("unavailable");
    expect(classifyAnswer(400, { status: 400 })).toBe("bad_request");
    expect(classifyAnswer(422, { status: 422 })).toBe("bad_request");
    expect(classifyAnswer(429, { status: 429 })).toBe("unavailable");
    expect(classifyAnswer(529, { status: 529 })).toBe("unavailable");
    expect(classifyAnswer(503, {})).toBe("unavailable"); // a proxy's page without a body status
  });
});

describe("image choice", () => {
  const img = (name: string, type: string): AnsweredImage => ({ name, type, sha256: "0".repeat(64) });

  it("takes sysupgrade and factory images, or everything but kernels on targets without them (x86)", () => {
    const ath79 = [
      img("a-sysupgrade.bin", "sysupgrade"),
      img("a-factory.bin", "factory"),
      img("k.bin", "kernel"),
    ];
    expect(chooseImages(ath79, ["sysupgrade", "factory"]).map((i) => i.type)).toEqual([
      "sysupgrade",
      "factory",
    ]);
    const x86 = [img("c.img.gz", "combined"), img("e.img.gz", "combined-efi"), img("i.bin", "initramfs")];
    expect(chooseImages(x86, ["sysupgrade", "factory"]).map((i) => i.type)).toEqual([
      "combined",
      "combined-efi",
    ]);
    expect(chooseImages(x86, "all")).toHaveLength(3);
  });

  it("drops entries whose name could leave the output folder or whose sha256 is not one", () => {
    const images = answeredImages({
      images: [
        { name: "../evil.bin", type: "sysupgrade", sha256: "0".repeat(64) },
        { name: "sub/evil.bin", type: "sysupgrade", sha256: "0".repeat(64) },
        { name: ".hidden", type: "sysupgrade", sha256: "0".repeat(64) },
        { name: "good.bin", type: "sysupgrade", sha256: "not a hash" },
        { name: "good.bin", type: "sysupgrade", sha256: "0".repeat(64) },
      ],
    });
    expect(images.map((i) => i.name)).toEqual(["good.bin"]);
  });
});

describe("command line helpers", () => {
  it("splits --packages on commas and spaces, over repeated options", () => {
    expect(splitPackages(["luci,tcpdump", " -ppp  htop,"])).toEqual(["luci", "tcpdump", "-ppp", "htop"]);
  });

  it("sends rootfs_size_mb as a number and the client name", async () => {
    const body = await buildRequestBody({
      server: "http://x",
      version: "24.10.4",
      target: "x86/64",
      profile: "generic",
      packages: [],
      rootfsSizeMb: 512,
      out: ".",
      images: "all",
      requestTimeout: 1,
      timeout: 1,
      pollOnly: true,
    });
    expect(body).toMatchObject({
      version: "24.10.4",
      target: "x86/64",
      profile: "generic",
      rootfs_size_mb: 512,
    });
    expect(body.client).toMatch(/^asu-cli\//);
    expect(body).not.toHaveProperty("defaults");
  });

  it("strips control characters from text that came from a server", () => {
    expect(printable("ok\u001b[2J\r done\u0007")).toBe("ok[2J done");
    expect(formatElapsed(75_000)).toBe("1:15");
    expect(formatElapsed(3_725_000)).toBe("1:02:05");
  });
});

describe("asu profiles when the download server cannot be read", () => {
  const servers: Server[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await new Promise<void>((resolve) => s.close(() => resolve()));
  });

  it("looks the exact name up through the server's {profile}.json route", async () => {
    const server = createServer((req, res) => {
      res.setHeader("content-type", "application/json");
      if (req.url === "/json/v1/overview.json") {
        // Port 9 is one fetch refuses at once: the download server "cannot be read".
        return res.end(
          JSON.stringify({
            upstream_url: "http://127.0.0.1:9",
            branches: {
              "24.10": {
                name: "24.10",
                enabled: true,
                path: "releases/{version}",
                versions: ["24.10.4"],
                targets: { "ath79/generic": "mips_24kc" },
              },
            },
          }),
        );
      }
      if (req.url === "/json/v1/releases/24.10.4/targets/ath79/generic/archer-c7-v5.json") {
        return res.end(
          JSON.stringify({
            id: "tplink_archer-c7-v5",
            titles: [{ vendor: "TP-Link", model: "Archer C7", variant: "v5" }],
            supported_devices: ["tplink,archer-c7-v5", "archer-c7-v5"],
          }),
        );
      }
      res.statusCode = 404;
      res.end(JSON.stringify({ status: 404, detail: "Unknown profile" }));
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const opts = { server: url, version: "24.10.4", target: "ath79/generic", timeout: 5 };

    const found = await listProfiles({ ...opts, search: "archer-c7-v5" });
    expect(found.lines).toEqual([
      "tplink_archer-c7-v5  TP-Link Archer C7 v5  tplink,archer-c7-v5, archer-c7-v5",
    ]);
    expect(found.notes[0]).toMatch(/^http:\/\/127\.0\.0\.1:9 cannot be read/);

    const err = await listProfiles(opts).catch((e: unknown) => e);
    expect((err as Error).message).toContain("Give --search with an exact profile or device name");
  });
});
