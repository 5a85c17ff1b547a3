#!/usr/bin/env node
/**
 * `npm run demo`: a synthetic OpenWrt mirror on loopback plus a server configured for it,
 * so a new user sees a finished build within a minute without internet access.
 */
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { startServer } from "../app.js";
import { loadConfig } from "../config/config.js";
import { generateMirror, type MirrorInfo } from "../mirror/generate-mirror.js";
import { startMirrorServer } from "../mirror/mirror-server.js";
import { ConfigError } from "../shared/errors.js";

async function main(): Promise<void> {
  const root = path.resolve("var", "demo");
  const mirrorDir = path.join(root, "mirror");
  // Outside the served folder: the info holds the mirror's secret signing key.
  const infoFile = path.join(root, "mirror-info.json");
  let info: MirrorInfo;
  if (existsSync(infoFile)) {
    info = JSON.parse(await readFile(infoFile, "utf8")) as MirrorInfo;
  } else {
    process.stdout.write(`generating the synthetic OpenWrt mirror in ${mirrorDir} ...\n`);
    info = await generateMirror({ dir: mirrorDir });
    await writeFile(infoFile, JSON.stringify(info));
  }
  const mirror = await startMirrorServer({ dir: mirrorDir, port: Number(process.env.MIRROR_PORT ?? 0) });
  const pubkey = info.publicKeyLine;
  let config;
  try {
    config = loadConfig({
      overrides: {
        upstream_url: mirror.url,
        public_path: path.join(root, "public"),
        cache_path: path.join(root, "cache"),
        allow_defaults: true,
        branches: { SNAPSHOT: { pubkey }, "24.10": { pubkey }, "23.05": { pubkey } },
      },
    });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const server = await startServer(config, { role: "all", embeddedRedis: true });
  const url = server.url ?? `http://${config.host}:${config.port}`;
  const body = JSON.stringify({
    version: "24.10.4",
    target: "ath79/generic",
    profile: "tplink,archer-c7-v5",
    packages: ["luci", "tcpdump"],
  });
  process.stdout.write(
    [
      "",
      `asu-ts demo: server ${url}, synthetic upstream ${mirror.url}`,
      "Request a build, then poll it with the request_hash from the answer:",
      `  curl -s -H 'content-type: application/json' -d '${body}' ${url}/api/v1/build`,
      `  curl -s ${url}/api/v1/build/<request_hash>`,
      `API docs: ${url}/docs   overview: ${url}/`,
      "Press Ctrl-C to stop.",
      "",
    ].join("\n"),
  );
  const stop = () => {
    Promise.all([server.close(), mirror.close()])
      .then(() => process.exit(0))
      .catch(() => process.exit(1));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`demo: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
