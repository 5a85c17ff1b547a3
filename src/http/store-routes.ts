import type { FastifyInstance } from "fastify";
import type { LocalStore } from "../store/local-store.js";
import { errorBody } from "./error-handler.js";

/**
 * `GET/HEAD /store/<hash>/<file>`: image downloads. auc rejects chunked transfers, so the
 * length is always sent; anything that is not a regular file inside the store is a 404.
 */
export function registerStoreRoutes(app: FastifyInstance, store: LocalStore): void {
  app.get<{ Params: { hash: string; file: string } }>(
    "/store/:hash/:file",
    { schema: { hide: true } },
    async (request, reply) => {
      const file = await store.open(request.params.hash, request.params.file);
      if (!file) {
        return reply
          .code(404)
          .send(errorBody(404, "No such file in the store. The build may have expired; request it again."));
      }
      void reply
        .header("Content-Length", String(file.size))
        .header("Content-Type", "application/octet-stream")
        .header("X-Content-Type-Options", "nosniff")
        .header("Last-Modified", file.mtime.toUTCString())
        .header("Cache-Control", "public, max-age=3600");
      // For HEAD, Fastify's automatic HEAD route drops the stream but keeps Content-Length
      // (sending an empty body here reset it to 0).
      return reply.send(file.stream);
    },
  );
}
