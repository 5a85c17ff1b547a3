#!/usr/bin/env node
/**
 * `npm run mirror [-- --dir var/mirror --port 8001 --host 127.0.0.1 --snapshot-revision 30000]`:
 * generates the synthetic OpenWrt mirror and serves it. The usign key is kept next to the
 * mirror folder (<dir>.usign.sec, never inside the served tree), so the public key stays
 * the same across restarts and asu.toml can keep its `pubkey`.
 */
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { generateKeyPair, parseSecretKey, type UsignKeyPair } from "../shared/usign.js";
import { generateMirror } from "./generate-mirror.js";
import { startMirrorServer } from "./mirror-server.js";

function publicFromSecret(secretFile: string): UsignKeyPair {
  const sk = parseSecretKey(secretFile);
  const publicLine = Buffer.concat([Buffer.from("Ed"), sk.keyId, sk.publicKey]).toString("base64");
  const keyIdHex = sk.keyId.toString("hex");
  return {
    secretFile,
    publicFile: `untrusted comment: public key ${keyIdHex}\n${publicLine}\n`,
    publicLine,
    keyIdHex,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      dir: { type: "string", default: path.join("var", "mirror") },
      port: { type: "string", default: "8001" },
      host: { type: "string", default: "127.0.0.1" },
      "snapshot-revision": { type: "string" },
    },
  });
  const dir = path.resolve(values.dir);
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`--port: not a port number: ${values.port}`);
  const revision =
    values["snapshot-revision"] === undefined ? undefined : Number(values["snapshot-revision"]);
  if (revision !== undefined && !Number.isInteger(revision)) {
    throw new Error(`--snapshot-revision: not a number: ${values["snapshot-revision"]}`);
  }

  const keyFile = `${dir}.usign.sec`;
  let keyPair: UsignKeyPair;
  if (existsSync(keyFile)) {
    keyPair = publicFromSecret(await readFile(keyFile, "utf8"));
  } else {
    keyPair = generateKeyPair("asu-ts test mirror");
    await writeFile(keyFile, keyPair.secretFile, { mode: 0o600 });
  }

  const started = Date.now();
  const info = await generateMirror({
    dir,
    keyPair,
    ...(revision !== undefined ? { snapshotRevision: revision } : {}),
  });
  const server = await startMirrorServer({ dir, host: values.host, port });
  const lines = [
    `synthetic OpenWrt mirror in ${dir} (generated in ${Date.now() - started} ms)`,
    `serving on ${server.url}`,
    `usign public key (asu.toml branches.<name>.pubkey): ${info.publicKeyLine}`,
    `versions: ${Object.keys(info.versions).join(", ")} (+ ${info.minimalVersions.join(", ")}: .targets.json only)`,
    `SNAPSHOT revision: ${info.versions.SNAPSHOT?.revision ?? "?"}`,
  ];
  process.stdout.write(lines.join("\n") + "\n");
  const stop = () => {
    server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`mirror: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
