import type { FastifyInstance } from "fastify";
import type { Store } from "../store/store.js";
import { errorBody } from "./error-handler.js";

/**
 * `GET/HEAD /store/<hash>/<file>`: image downloads. auc rejects chunked transfers, so the
 * length is always sent; anything that is not a stored file is a 404. A store that keeps
 * files elsewhere (S3) answers with a redirect, which LuCI, owut and auc follow.
 */
export function registerStoreRoutes(app: FastifyInstance, store: Store): void {
  app.get<{ Params: { hash: string; file: string } }>(
    "/store/:hash/:file",
    { schema: { hide: true } },
    async (request, reply) => {
      const found = await store.locate(request.params.hash, request.params.file);
      if (!found) {
        return reply
          .code(404)
          .send(errorBody(404, "No such file in the store. The build may have expired; request it again."));
      }
      if (found.kind === "redirect") {
        // A presigned URL expires within minutes: no cache may keep the redirect longer.
        return reply.header("Cache-Control", "no-store").redirect(found.url, 302);
      }
      void reply
        .header("Content-Length", String(found.size))
        .header("Content-Type", "application/octet-stream")
        .header("X-Content-Type-Options", "nosniff")
        .header("Last-Modified", found.mtime.toUTCString())
        .header("Cache-Control", "public, max-age=3600");
      // For HEAD, Fastify's automatic HEAD route drops the stream but keeps Content-Length
      // (sending an empty body here reset it to 0).
      return reply.send(found.stream);
    },
  );
}
