/**
 * The floor of the cache-hit benchmarks, run as its own process by bench/build-api.ts:
 * a bare Fastify app (no logger, no plugins) with
 *   - POST /floor: parses the JSON body, hashes it (sha256), does one Redis GET, sends it;
 *   - GET /floor/:hash: one Redis GET of that hash, sends it.
 * It is the least a Fastify + Redis design can do for a cache hit.
 *
 *   node --import tsx bench/support/floor-server.ts <redis url> <key prefix>
 *
 * Prints its URL on the first line of stdout.
 */
import { createHash } from "node:crypto";
import Fastify from "fastify";
import { Redis } from "ioredis";

const [redisUrl = "redis://127.0.0.1:6379", prefix = "asu-bench"] = process.argv.slice(2);
const redis = new Redis(redisUrl);
const app = Fastify();

// The driver stores the same result under sha256(JSON.stringify(body)).
const floorHash = (body: unknown) => createHash("sha256").update(JSON.stringify(body)).digest("hex");

app.post("/floor", async (request, reply) => {
  const raw = await redis.get(`${prefix}:result:${floorHash(request.body)}`);
  return reply.type("application/json; charset=utf-8").send(raw?.slice(3));
});
app.get<{ Params: { hash: string } }>("/floor/:hash", async (request, reply) => {
  const raw = await redis.get(`${prefix}:result:${request.params.hash}`);
  return reply.type("application/json; charset=utf-8").send(raw?.slice(3));
});

const url = await app.listen({ host: "127.0.0.1", port: 0 });
process.stdout.write(`${url}\n`);
process.on("SIGTERM", () => {
  void app.close().then(() => {
    redis.disconnect();
    process.exit(0);
  });
});
