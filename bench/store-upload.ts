/**
 * What storing a finished build costs, local folder vs S3, for one 16 MiB image plus its
 * manifest and profiles.json (the worker's store step).
 *
 *   npx tsx bench/store-upload.ts [runs, default 9] [MiB, default 16]
 *
 * The S3 side is s3rver on loopback, through the same counting proxy the tests use: it
 * measures the protocol and SDK overhead (multipart upload in 8 MiB parts, HEAD check,
 * listing for stale files), not a network. Prints the median and range of each.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { openRegularFile } from "../src/shared/safe-fs.js";
import { LocalStore } from "../src/store/local-store.js";
import { S3Store } from "../src/store/s3-store.js";
import type { Store } from "../src/store/store.js";
import { startS3 } from "../test/support/s3-server.js";

const runs = Number(process.argv[2] ?? 9);
const mib = Number(process.argv[3] ?? 16);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};

async function timePuts(store: Store, dir: string, image: Buffer): Promise<number[]> {
  const sha256 = createHash("sha256").update(image).digest("hex");
  const times: number[] = [];
  for (let i = 0; i <= runs; i++) {
    const hash = createHash("sha256").update(`bench-${i}`).digest("hex");
    const file = await openRegularFile(dir, "sysupgrade.bin", image.length + 1);
    const started = performance.now();
    try {
      await store.put(hash, [
        { name: "sysupgrade.bin", file, sha256, maxBytes: image.length + 1 },
        { name: "openwrt.manifest", data: "base-files - 1\n".repeat(200) },
        { name: "profiles.json", data: "{}" },
      ]);
    } finally {
      await file.handle.close();
    }
    // The first run warms caches and connections and is left out.
    if (i > 0) times.push(performance.now() - started);
    await store.remove(hash);
  }
  return times;
}

const work = await mkdtemp(path.join(tmpdir(), "asu-bench-store-"));
const image = randomBytes(mib * 1024 * 1024);
await writeFile(path.join(work, "sysupgrade.bin"), image);
const s3 = await startS3("asu-bench");
const local = new LocalStore(path.join(work, "public"));
await local.init();
const remote = new S3Store({
  endpoint: s3.endpoint,
  region: "us-east-1",
  bucket: s3.bucket,
  accessKey: "S3RVER",
  secretKey: "S3RVER",
});
await remote.init();
try {
  for (const [name, store] of [
    ["local", local],
    ["s3 (s3rver, loopback)", remote],
  ] as const) {
    const times = await timePuts(store, work, image);
    console.log(
      `${name.padEnd(24)} ${mib} MiB image: median ${median(times).toFixed(1)} ms ` +
        `(min ${Math.min(...times).toFixed(1)}, max ${Math.max(...times).toFixed(1)}, ${runs} runs)`,
    );
  }
} finally {
  await remote.close();
  await s3.close();
  await rm(work, { recursive: true, force: true });
}
