import type { NormalizedRequest } from "../request/normalize-request.js";

/** The stages LuCI knows; it throws on any other `imagebuilder_status` (client-contract.md). */
export const BUILD_STAGES = [
  "init",
  "container_setup",
  "validate_revision",
  "validate_manifest",
  "calculate_packages_hash",
  "building_image",
  "signing_images",
  "done",
  "failed",
  "download_imagebuilder",
  "unpack_imagebuilder",
] as const;

export type BuildStage = (typeof BUILD_STAGES)[number];

export interface BuildJobData {
  request: NormalizedRequest;
  /** The profile id after supported_devices mapping. */
  profile: string;
  /** Milliseconds since the epoch; echoed as `enqueued_at` (seconds) to clients. */
  enqueued_at: number;
  /** Seconds to keep a successful result (pinned, unversioned or defaults TTL). */
  result_ttl: number;
  /**
   * A snapshot request without version_code: the revision upstream's profiles.json named when
   * it was queued (request/snapshot-pin.ts). Part of the job id; the worker builds exactly it.
   */
  snapshot_revision?: string;
}

export interface StoredResult {
  status: number;
  /** The JSON body exactly as it is sent to clients. */
  body: string;
}
