import { Value } from "typebox/value";
import type { AsuConfig } from "../config/config.js";
import type { BuildJobData } from "../queue/build-job.js";
import { makeBuildRequestSchema, STRING_PATTERN } from "../request/build-request-schema.js";
import { normalizeRequest, type NormalizedRequest } from "../request/normalize-request.js";
import { isRepositoryAllowed } from "../request/repository-allow-list.js";
import { requestHash } from "../request/request-hash.js";
import { isPinnedRevision } from "../request/snapshot-pin.js";

/**
 * A worker trusts nothing it takes from Redis (issue #9): anyone who can write to the queue
 * could hand it a job. Before building, the job is checked as the API checks a request: the
 * same schema and limits, the server's policy (allow list, defaults), and the job id must be
 * the sha256 of the request, so a result can only ever land under the hash of what was built.
 * Returns the reason when the job must be refused.
 */
export function checkJob(
  id: string,
  data: unknown,
  config: Pick<
    AsuConfig,
    "max_defaults_length" | "max_custom_rootfs_size_mb" | "allow_defaults" | "repository_allow_list"
  >,
): string | undefined {
  if (!/^[0-9a-f]{64}$/.test(id)) return "the job id is not a request hash";
  if (typeof data !== "object" || data === null) return "the job has no data";
  const job = data as Partial<BuildJobData>;
  if (
    typeof job.profile !== "string" ||
    job.profile.length > 128 ||
    !new RegExp(STRING_PATTERN).test(job.profile)
  ) {
    return "the job's profile is not a profile name";
  }
  if (typeof job.enqueued_at !== "number" || !Number.isFinite(job.enqueued_at))
    return "the job has no enqueue time";
  if (typeof job.result_ttl !== "number" || !(job.result_ttl > 0 && job.result_ttl <= 366 * 86400)) {
    return "the job's result lifetime is out of range";
  }
  const schema = makeBuildRequestSchema(config);
  if (!Value.Check(schema, job.request)) return "the job's request does not match the request schema";
  let again: NormalizedRequest;
  try {
    again = normalizeRequest(job.request as never);
  } catch {
    return "the job's request cannot be normalised";
  }
  const pin = job.snapshot_revision;
  if (pin !== undefined && (!isPinnedRevision(pin) || again.version_code !== "")) {
    return "the job's snapshot revision is not one the API could have pinned";
  }
  if (requestHash(again, pin) !== id) return "the job id is not the hash of its request";
  if (again.defaults !== null && !config.allow_defaults)
    return "the job carries defaults, which this server refuses";
  for (const url of Object.values(again.repositories)) {
    if (!isRepositoryAllowed(url, config.repository_allow_list))
      return `the repository ${url} is not allowed`;
  }
  return undefined;
}
