import { LogController, type FastifyReply, type FastifyRequest } from "fastify";

/**
 * One access log line per request, when it is answered: Fastify's "request completed" line
 * with the request fields of its "incoming request" line (method, url, host, address).
 * Fastify writes two lines per request; on a cache hit they cost more than the Redis GET
 * (issue #13).
 */
/** The message of an answered request's access line (src/app.ts lets only these wait in its batch). */
export const ACCESS_LINE = "request completed";

export class AccessLogController extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(
    error: Error | null | undefined,
    request: FastifyRequest,
    reply: FastifyReply,
  ): void {
    if (this.isLogDisabled(request)) return;
    const line = { req: request, res: reply, responseTime: reply.elapsedTime };
    if (error) reply.log.error({ ...line, err: error }, "request errored");
    else reply.log.info(line, ACCESS_LINE);
  }
}
