import { mkdtemp, rm } from "node:fs/promises";
import { createServer, request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import S3rver from "s3rver";

export interface TestS3 {
  endpoint: string;
  bucket: string;
  /** Requests the server received, as "METHOD /path" (query left off). */
  requests: string[];
  /** config overrides for store_backend = "s3" on this server. */
  config: {
    store_backend: "s3";
    s3_endpoint: string;
    s3_bucket: string;
    s3_access_key: string;
    s3_secret_key: string;
    s3_region: string;
  };
  close(): Promise<void>;
}

/**
 * A real S3 protocol server (s3rver: the S3 REST API on the file system, no container) on a
 * random loopback port, with one empty bucket. Its credentials are always S3RVER/S3RVER.
 * Clients talk to it through a pass-through proxy that records each request, so tests can
 * count how often S3 was touched (the Host header is kept: signatures cover it).
 */
export async function startS3(bucket = "asu-test"): Promise<TestS3> {
  const dir = await mkdtemp(path.join(tmpdir(), "asu-s3-"));
  const server = new S3rver({
    address: "127.0.0.1",
    port: 0,
    silent: true,
    directory: dir,
    configureBuckets: [{ name: bucket }],
  });
  const { port } = await server.run();
  const requests: string[] = [];
  const proxy = createServer((req, res) => {
    requests.push(`${req.method ?? "?"} ${(req.url ?? "").split("?")[0]}`);
    const upstream = httpRequest(
      { host: "127.0.0.1", port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  const endpoint = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  return {
    endpoint,
    bucket,
    requests,
    config: {
      store_backend: "s3",
      s3_endpoint: endpoint,
      s3_bucket: bucket,
      s3_access_key: "S3RVER",
      s3_secret_key: "S3RVER",
      s3_region: "us-east-1",
    },
    close: async () => {
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
