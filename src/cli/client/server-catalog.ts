import type { AsuHttp } from "./asu-http.js";
import { HttpStatusError, ServerUnavailableError, UsageError } from "./client-errors.js";

/** A version and target resolved against the server's overview.json. */
export interface ResolvedTarget {
  version: string;
  target: string;
  /** The branch path with the version filled in: `releases/24.10.4`, `snapshots`. */
  path: string;
  /** The target's package architecture (`mips_24kc`). */
  arch: string;
  /** Where the server's images and profiles come from (overview.json `upstream_url`). */
  upstreamUrl: string;
}

interface BranchEntry {
  name?: unknown;
  enabled?: unknown;
  path?: unknown;
  versions?: unknown;
  targets?: unknown;
}

/** The branch a version belongs to: `SNAPSHOT`, or the `major.minor` prefix (as the server's catalog). */
function branchNameOf(version: string): string | undefined {
  if (version === "SNAPSHOT") return "SNAPSHOT";
  return /^(\d+\.\d+)(?:[.-]|$)/.exec(version)?.[1];
}

/**
 * Reads `/json/v1/overview.json` (the document owut reads) and finds the version's branch
 * path and the target's architecture, with messages that list what the server does offer.
 */
export async function resolveTarget(http: AsuHttp, version: string, target: string): Promise<ResolvedTarget> {
  const overview = await http.getJson("/json/v1/overview.json").catch((err: unknown) => {
    if (err instanceof HttpStatusError) {
      throw new ServerUnavailableError(
        `${http.base} does not look like an asu server: /json/v1/overview.json answered HTTP ${err.status}. Check --server.`,
      );
    }
    throw err;
  });
  const branches = (
    typeof overview.branches === "object" && overview.branches !== null
      ? Object.values(overview.branches)
      : []
  ) as BranchEntry[];
  const enabled = branches.filter((b) => b.enabled !== false && typeof b.path === "string");
  const listed = (b: BranchEntry) => (Array.isArray(b.versions) ? (b.versions as unknown[]) : []);
  const branch =
    enabled.find((b) => listed(b).includes(version)) ?? enabled.find((b) => b.name === branchNameOf(version));
  if (!branch) {
    const versions = enabled.flatMap((b) => listed(b)).filter((v) => typeof v === "string");
    throw new UsageError(
      `Unknown version: ${version}. This server builds ${versions.length > 0 ? versions.join(", ") : "no versions"}.`,
    );
  }
  const targets = (
    typeof branch.targets === "object" && branch.targets !== null ? branch.targets : {}
  ) as Record<string, unknown>;
  const arch = Object.hasOwn(targets, target) ? targets[target] : undefined;
  if (typeof arch !== "string") {
    const known = Object.keys(targets).sort();
    throw new UsageError(
      `Unknown target: ${target}. ${version} has ${known.length} targets${known.length > 0 ? `, for example ${known.slice(0, 8).join(", ")}` : ""}. Targets are written target/subtarget, as in "ath79/generic".`,
    );
  }
  const upstreamUrl =
    typeof overview.upstream_url === "string" ? overview.upstream_url.replace(/\/+$/, "") : "";
  return { version, target, path: String(branch.path).replaceAll("{version}", version), arch, upstreamUrl };
}
