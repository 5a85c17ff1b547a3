import { fastifySSE } from "@fastify/sse";
import type { ServerResponse } from "node:http";
import type { FastifyInstance } from "fastify";
import { Gauge, type Registry } from "prom-client";
import { BuildResponse, HashParams, send } from "./build-routes.js";
import type { BuildEventsService, OutgoingEvent } from "./build-events-service.js";

const DESCRIPTION = [
  "Server-sent events (text/event-stream) for one build; polling GET /api/v1/build/{request_hash} works as before.",
  "Every event has an `id`; reconnecting with the `Last-Event-ID` header resumes after it.",
  '`queue`: `{"queue_position": N}` while queued, on change.',
  '`status`: `{"imagebuilder_status": "<stage>"}` on every stage change.',
  '`log`: `{"stream": "stdout"|"stderr", "line": "..."}`, one output line of the ImageBuilder as it happens (host paths replaced, at most 1000 characters a line and 5000 lines a build).',
  "`result`: exactly the body GET /api/v1/build/{request_hash} returns for the finished build (`status` 200 or an error status); the stream then ends.",
  'A comment line ": heartbeat" is sent at a fixed interval (`events_heartbeat`).',
  "An unknown hash answers 404 with the same JSON as the poll route.",
].join("\n\n");

/** SSE framing; `data` is one line of JSON, split anyway so no text can end the event early. */
function formatEvent(event: OutgoingEvent): string {
  const data = event.data
    .split(/\r\n|\r|\n/)
    .map((line) => `data: ${line}\n`)
    .join("");
  return `id: ${event.id}\nevent: ${event.event}\n${data}\n`;
}

/** Writes, then waits until the socket takes more (or the client is gone). */
async function write(raw: ServerResponse, text: string): Promise<void> {
  if (raw.destroyed || raw.writableEnded) return;
  if (raw.write(text)) return;
  await new Promise<void>((resolve) => {
    const done = () => {
      raw.off("drain", done);
      raw.off("close", done);
      resolve();
    };
    raw.on("drain", done);
    raw.on("close", done);
  });
}

/** `GET /api/v1/build/{request_hash}/events` (issue #14). */
export async function registerBuildEventRoutes(
  app: FastifyInstance,
  service: BuildEventsService,
  opts: { heartbeatMs: number; registry?: Registry },
): Promise<void> {
  await app.register(fastifySSE, { heartbeatInterval: opts.heartbeatMs });
  if (opts.registry) {
    new Gauge({
      name: "asu_event_streams",
      help: "Build event streams (GET /api/v1/build/{hash}/events) this API process serves now",
      registers: [opts.registry],
      collect() {
        this.set(service.openStreams);
      },
    });
  }
  // Open streams would hold app.close() until their builds end.
  app.addHook("preClose", async () => service.stopAll());

  app.get<{ Params: { request_hash: string } }>(
    "/api/v1/build/:request_hash/events",
    {
      // 'manual': no Accept negotiation (curl, fetch and EventSource all get the stream), and
      // the handler can still answer a plain JSON 404.
      sse: "manual",
      // A HEAD would open a stream with no body to put it in.
      exposeHeadRoute: false,
      schema: {
        tags: ["build"],
        summary: "Follow a build live (server-sent events)",
        description: DESCRIPTION,
        params: HashParams,
        response: {
          200: {
            description: "An event stream: queue, status, log and result events",
            content: { "text/event-stream": { schema: { type: "string" } } },
          },
          404: BuildResponse,
        },
      },
    },
    async (request, reply) => {
      const header = request.headers["last-event-id"];
      const opened = await service.open(
        request.params.request_hash,
        typeof header === "string" ? header : undefined,
      );
      if (opened.kind === "reply") return send(reply, opened.reply);
      const stream = reply.sse;
      stream.keepAlive();
      stream.onClose(() => opened.stop());
      // Headers at once: the client knows the stream is open, and heartbeats start.
      stream.sendHeaders(200);
      try {
        await opened.run({
          // One write per batch (a read of up to 200 entries), not one per event: with many
          // clients on a chatty build the per-event cost is what limits (bench/event-stream.ts).
          send: (events) => write(reply.raw, events.map(formatEvent).join("")),
          get closed() {
            return !stream.isConnected;
          },
        });
      } catch (err) {
        // A client that left while we wrote is normal; anything else is a server fault.
        if (stream.isConnected) request.log.error({ err }, "build event stream failed");
      }
      stream.close();
      return reply;
    },
  );
}
