/**
 * Cache-hit throughput of the build API, against its floor.
 *
 *   npx tsx bench/build-api.ts [seconds per run, default 5] [connections, default 32]
 *
 * Measures requests per second and p99 latency for:
 *   - POST /api/v1/build whose result is cached,
 *   - GET /api/v1/build/{hash} of that result,
 *   - a minimal Fastify route doing one Redis GET of the same key (the floor of this design),
 * all in one run on loopback, and prints each figure with its ratio to the floor.
 * Needs Redis on 127.0.0.1:6379 (or TEST_REDIS_URL).
 */
import autocannon from "autocannon";
import Fastify from "fastify";
import { Redis } from "ioredis";
import { request, startStack, stopStack } from "../test/integration/harness.js";
import { normalizeRequest } from "../src/request/normalize-request.js";
import { requestHash } from "../src/request/request-hash.js";
import type { BuildRequestBody } from "../src/request/build-request-schema.js";

const seconds = Number(process.argv[2] ?? 5);
const connections = Number(process.argv[3] ?? 32);

interface Figures {
  rps: number;
  p99: number;
  p50: number;
  errors: number;
}

async function measure(opts: autocannon.Options): Promise<Figures> {
  const result = await autocannon({ ...opts, connections, duration: seconds });
  const bad = result.non2xx + result.errors + result.timeouts;
  return { rps: result.requests.average, p99: result.latency.p99, p50: result.latency.p50, errors: bad };
}

async function main(): Promise<void> {
  const stack = await startStack({ role: "api" });
  const server = stack.api;
  const body = {
    version: "24.10.4",
    target: "ath79/generic",
    profile: "tplink_archer-c7-v5",
    packages: ["luci", "tcpdump", "curl"],
  } as unknown as BuildRequestBody;
  const hash = requestHash(normalizeRequest(body));

  // A realistic finished result (~6 KB, like a real 200 body with its manifest).
  const manifest = Object.fromEntries(Array.from({ length: 120 }, (_, i) => [`package-${i}`, `1.${i}.0-r1`]));
  const result = JSON.stringify({
    status: 200,
    detail: "done",
    imagebuilder_status: "done",
    request_hash: hash,
    manifest,
    images: [
      { name: "openwrt-sysupgrade.bin", sha256: "0".repeat(64), type: "sysupgrade", filesystem: "squashfs" },
    ],
  });
  await server.server.queue.setResult(hash, 200, result, 3600);
  const check = await request(server.url, "POST", "/api/v1/build", body);
  if (check.status !== 200) throw new Error(`expected a cache hit, got ${check.status}: ${check.text}`);

  // The floor: the least a Fastify + Redis design can do for this answer.
  const redis = new Redis(process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379");
  const floor = Fastify();
  const key = `${server.prefix}:result:${hash}`;
  floor.get("/floor", async (_req, reply) => {
    const raw = await redis.get(key);
    return reply.type("application/json").send(raw?.slice(3));
  });
  const floorUrl = await floor.listen({ host: "127.0.0.1", port: 0 });

  const runs: [string, autocannon.Options][] = [
    ["floor: Fastify + one Redis GET", { url: `${floorUrl}/floor` }],
    [
      "POST /api/v1/build (cache hit)",
      {
        url: `${server.url}/api/v1/build`,
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      },
    ],
    ["GET /api/v1/build/{hash}", { url: `${server.url}/api/v1/build/${hash}` }],
  ];
  const figures: [string, Figures][] = [];
  for (const [name, opts] of runs) figures.push([name, await measure(opts)]);

  const base = figures[0]?.[1] as Figures;
  console.log(`\n${seconds}s per run, ${connections} connections, loopback, one process each side`);
  console.log(
    "run".padEnd(34),
    "req/s".padStart(9),
    "p50 ms".padStart(8),
    "p99 ms".padStart(8),
    "rps/floor".padStart(10),
    "errors".padStart(7),
  );
  for (const [name, f] of figures) {
    console.log(
      name.padEnd(34),
      f.rps.toFixed(0).padStart(9),
      f.p50.toFixed(1).padStart(8),
      f.p99.toFixed(1).padStart(8),
      (f.rps / base.rps).toFixed(2).padStart(10),
      String(f.errors).padStart(7),
    );
  }

  await floor.close();
  redis.disconnect();
  await stopStack(stack);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
