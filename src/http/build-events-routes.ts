import { fastifySSE } from "@fastify/sse";
import type { FastifyInstance } from "fastify";
import { Gauge, type Registry } from "prom-client";
import { BuildResponse, HashParams, send } from "./build-routes.js";
import type { BuildEventsService } from "./build-events-service.js";

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
      sse: { kind: "manual", serializer: (data: unknown) => String(data) },
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
          send: (event) => stream.send({ id: event.id, event: event.event, data: event.data }),
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
