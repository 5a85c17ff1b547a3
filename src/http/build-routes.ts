import type { FastifyInstance, FastifyReply } from "fastify";
import Type from "typebox";
import { BuildRequestSchema, type BuildRequestBody } from "../request/build-request-schema.js";
import type { BuildReply, BuildService } from "./build-service.js";

export const HashParams = Type.Object({ request_hash: Type.String({ maxLength: 128 }) });

export const BuildResponse = Type.Object(
  {
    status: Type.Integer({ description: "Equals the HTTP status; owut reads this, not the HTTP code." }),
    detail: Type.String(),
    request_hash: Type.Optional(Type.String()),
    imagebuilder_status: Type.Optional(Type.String()),
    queue_position: Type.Optional(Type.Integer({ description: "Present only while queued (LuCI)." })),
  },
  { additionalProperties: true },
);

export function send(reply: FastifyReply, result: BuildReply): FastifyReply {
  void reply.code(result.status).headers(result.headers);
  if (typeof result.body === "string") {
    // Stored results are already JSON; sending the string avoids a parse and re-serialise.
    return reply.type("application/json; charset=utf-8").send(result.body);
  }
  return reply.send(result.body);
}

/** `/api/v1/build` and the seed API aliases `/api/build` of the 2020–2021 README. */
export function registerBuildRoutes(app: FastifyInstance, service: BuildService): void {
  for (const prefix of ["/api/v1/build", "/api/build"]) {
    const hidden = prefix === "/api/build";
    app.post<{ Body: BuildRequestBody }>(
      prefix,
      {
        schema: {
          hide: hidden,
          tags: ["build"],
          summary: "Request a firmware image",
          body: BuildRequestSchema,
          response: { default: BuildResponse },
        },
      },
      async (request, reply) => send(reply, await service.submit(request.body, request.ip)),
    );
    // Fastify answers HEAD from this GET route with the same status and headers (owut polls with HEAD).
    app.get<{ Params: { request_hash: string } }>(
      `${prefix}/:request_hash`,
      {
        schema: {
          hide: hidden,
          tags: ["build"],
          summary: "Poll a build by its request hash",
          params: HashParams,
          response: { default: BuildResponse },
        },
      },
      async (request, reply) => send(reply, await service.poll(request.params.request_hash)),
    );
  }
}
