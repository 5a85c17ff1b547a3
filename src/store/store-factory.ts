import type { AsuConfig } from "../config/config.js";
import { LocalStore } from "./local-store.js";
import { S3Store } from "./s3-store.js";
import type { Store } from "./store.js";

/** The one place that picks the store from `store_backend`; everything else sees `Store`. */
export function createStore(config: AsuConfig): Store {
  if (config.store_backend === "s3" && config.s3) {
    const s3 = config.s3;
    return new S3Store({
      bucket: s3.bucket,
      region: s3.region,
      ...(s3.endpoint ? { endpoint: s3.endpoint } : {}),
      ...(s3.access_key ? { accessKey: s3.access_key } : {}),
      ...(s3.secret_key ? { secretKey: s3.secret_key } : {}),
      ...(s3.public_url ? { publicUrl: s3.public_url } : {}),
    });
  }
  return new LocalStore(config.public_path);
}
