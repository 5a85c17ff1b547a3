import type { TrustProxy } from "../config/config.js";

/**
 * `trust_proxy` as Fastify's `trustProxy` option. Fastify's own `true` trusts every hop and
 * so takes the leftmost X-Forwarded-For entry, which the client writes itself: a client could
 * pick a fresh address per request and escape the per-address build limit (issue #9, item 7).
 * Addresses are therefore always counted from the right:
 *   - a number n: the socket peer and the n-1 entries to the right are proxies; the entry
 *     n hops from the right is the client (Fastify 5 ignores a plain number, so it is a function);
 *   - a list: proxy-addr skips, from the right, the addresses in the listed networks.
 */
export function fastifyTrustProxy(
  trust: TrustProxy,
): false | string[] | ((address: string, hop: number) => boolean) {
  if (trust === false) return false;
  if (typeof trust === "number") {
    const hops = trust;
    return (_address, hop) => hop < hops;
  }
  return [...trust];
}
