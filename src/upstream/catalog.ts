import type { AsuConfig, BranchConfig } from "../config/config.js";
import type { PackageChange } from "../config/package-changes.js";
import { ValidationError } from "../shared/errors.js";
import type { TargetsJson } from "./upstream-documents.js";
import type { UpstreamClient } from "./upstream-client.js";

/** A requested version placed in the branch table, with the download paths filled in. */
export interface ResolvedVersion {
  version: string;
  branch: BranchConfig;
  /** `branch.path` with the version filled in: `releases/24.10.4`, `releases/24.10-SNAPSHOT`, `snapshots`. */
  path: string;
  /** `branch.path_packages` filled in the same way: `releases/24.10.4/packages`, `snapshots/packages`. */
  pathPackages: string;
  /** True for `SNAPSHOT` and `<branch>-SNAPSHOT`, which are not listed in `.versions.json`. */
  snapshot: boolean;
}

/** One branch as owut, LuCI and auc read it from overview.json / branches.json. */
export interface BranchOverview {
  name: string;
  enabled: boolean;
  snapshot: boolean;
  /** Still contains `{version}`: owut fills it in itself. */
  path: string;
  path_packages: string;
  versions: string[];
  targets: Record<string, string>;
  package_changes: PackageChange[];
  branch_off_rev?: number;
}

export interface BranchesOverview {
  branches: Record<string, BranchOverview>;
  /** The newest release of each enabled branch, newest first (LuCI offers these as upgrades). */
  latest: string[];
}

/**
 * The branch a version belongs to: `SNAPSHOT` for main-branch snapshots, otherwise the
 * `major.minor` prefix (`24.10.4`, `24.10-SNAPSHOT` and `25.12.0-rc1` → `24.10`, `24.10`, `25.12`).
 */
export function branchNameOf(version: string): string | undefined {
  if (version === "SNAPSHOT") return "SNAPSHOT";
  return /^(\d+\.\d+)(?:[.-]|$)/.exec(version)?.[1];
}

/** `SNAPSHOT` or `<major.minor>-SNAPSHOT`. */
export function isSnapshotVersion(version: string): boolean {
  return version === "SNAPSHOT" || /^\d+\.\d+-SNAPSHOT$/.test(version);
}

/** Fills `{version}` and `{branch}` (older configs use `releases/packages-{branch}`). */
export function fillBranchPath(template: string, version: string, branchName: string): string {
  return template.replaceAll("{version}", version).replaceAll("{branch}", branchName);
}

/**
 * Orders OpenWrt versions newest first: numeric parts compared as numbers, and a
 * pre-release (`25.12.0-rc1`) before its final release.
 */
export function compareVersionsDesc(a: string, b: string): number {
  const parse = (v: string) => {
    const [main = "", pre] = v.split("-", 2);
    return { parts: main.split(".").map((p) => Number.parseInt(p, 10) || 0), pre };
  };
  const x = parse(a);
  const y = parse(b);
  for (let i = 0; i < Math.max(x.parts.length, y.parts.length); i++) {
    const d = (y.parts[i] ?? 0) - (x.parts[i] ?? 0);
    if (d !== 0) return d;
  }
  if (x.pre === y.pre) return 0;
  if (x.pre === undefined) return -1;
  if (y.pre === undefined) return 1;
  return y.pre.localeCompare(x.pre, "en", { numeric: true });
}

/**
 * What this server can build: the configured branch table checked against what the
 * download server lists. Everything comes through the UpstreamClient's cache, so a new
 * release shows up after the cache revalidates (or at once, on a miss).
 */
export class Catalog {
  constructor(
    private readonly config: AsuConfig,
    private readonly upstream: UpstreamClient,
  ) {}

  /** Enabled branches, snapshots first, then newest release branch first. */
  enabledBranches(): BranchConfig[] {
    return Object.values(this.config.branches)
      .filter((b) => b.enabled)
      .sort((a, b) =>
        a.snapshot === b.snapshot ? compareVersionsDesc(a.name, b.name) : a.snapshot ? -1 : 1,
      );
  }

  /**
   * Places `version` in the branch table and checks that the download server has it.
   * An unlisted version first forces one reload of `.versions.json` (a release published
   * a minute ago must work without a restart). Throws ValidationError (400) otherwise.
   */
  async resolve(version: string): Promise<ResolvedVersion> {
    const branchName = branchNameOf(version);
    const supported = this.enabledBranches().map((b) => b.name);
    const supportedText = supported.length > 0 ? supported.join(", ") : "none";
    if (branchName === undefined) {
      throw new ValidationError(
        `Unsupported version: ${version}. Versions look like 24.10.4, 24.10-SNAPSHOT or SNAPSHOT; this server builds branches ${supportedText}.`,
      );
    }
    const branch = this.config.branches[branchName];
    // "Unsupported branch: <what the client sent>" as upstream ASU; then our help text.
    if (!branch) {
      throw new ValidationError(
        `Unsupported branch: ${version}. Branch ${branchName} is not built here; this server builds branches ${supportedText}; choose a version from one of them.`,
      );
    }
    if (!branch.enabled) {
      throw new ValidationError(
        `Unsupported branch: ${version}. Branch ${branchName} is disabled on this server; choose a version from ${supportedText}.`,
      );
    }
    const snapshot = isSnapshotVersion(version);
    if (snapshot) {
      // Main-branch snapshots live only in the SNAPSHOT branch, and "24.10-SNAPSHOT" only in 24.10.
      if ((version === "SNAPSHOT") !== branch.snapshot) {
        throw new ValidationError(
          `Unsupported version: ${version}. Branch ${branchName} does not publish it; choose a version from ${supportedText}.`,
        );
      }
    } else {
      let listed = (await this.upstream.getVersions()).versions_list;
      if (!listed.includes(version)) {
        listed = (await this.upstream.getVersions({ reload: true })).versions_list;
      }
      if (!listed.includes(version)) {
        const ofBranch = listed.filter((v) => branchNameOf(v) === branchName).sort(compareVersionsDesc);
        const hint =
          ofBranch.length > 0
            ? `Versions of ${branchName} on the download server: ${ofBranch.join(", ")}. Choose one of them.`
            : `The download server lists no release of ${branchName}. Choose a version of another branch: ${supported.filter((b) => b !== branchName).join(", ") || "none"}.`;
        throw new ValidationError(`Unsupported version: ${version}. ${hint}`);
      }
    }
    return {
      version,
      branch,
      path: fillBranchPath(branch.path, version, branchName),
      pathPackages: fillBranchPath(branch.path_packages, version, branchName),
      snapshot,
    };
  }

  /** The download paths of a version without checking upstream (the version must map to a branch). */
  pathsFor(version: string): { path: string; pathPackages: string } | undefined {
    const name = branchNameOf(version);
    const branch = name === undefined ? undefined : this.config.branches[name];
    if (!branch || name === undefined) return undefined;
    return {
      path: fillBranchPath(branch.path, version, name),
      pathPackages: fillBranchPath(branch.path_packages, version, name),
    };
  }

  /**
   * Per enabled branch: its versions from `.versions.json` (newest first; `["SNAPSHOT"]` for
   * the snapshot branch) and the targets of its newest version; plus `latest`, computed like
   * upstream ASU: the newest listed version of each enabled release branch, newest first.
   */
  async branchesOverview(): Promise<BranchesOverview> {
    const listed = (await this.upstream.getVersions()).versions_list;
    const branches: Record<string, BranchOverview> = {};
    const latest: string[] = [];
    const enabled = this.enabledBranches();
    const targets = await Promise.all(
      enabled.map(async (branch) => {
        const versions = branch.snapshot
          ? ["SNAPSHOT"]
          : listed.filter((v) => branchNameOf(v) === branch.name).sort(compareVersionsDesc);
        const newest = versions[0];
        let found: TargetsJson | undefined;
        if (newest !== undefined) {
          // One unreadable branch must not take the whole overview down: it just shows no targets.
          found = await this.upstream
            .getTargets(fillBranchPath(branch.path, newest, branch.name))
            .catch(() => undefined);
        }
        return { branch, versions, targets: found ?? {} };
      }),
    );
    for (const { branch, versions, targets: t } of targets) {
      const overview: BranchOverview = {
        name: branch.name,
        enabled: branch.enabled,
        snapshot: branch.snapshot,
        path: branch.path,
        path_packages: branch.path_packages,
        versions,
        targets: { ...t },
        package_changes: branch.package_changes,
      };
      if (branch.branch_off_rev !== undefined) overview.branch_off_rev = branch.branch_off_rev;
      branches[branch.name] = overview;
      if (!branch.snapshot && versions[0] !== undefined) latest.push(versions[0]);
    }
    latest.sort(compareVersionsDesc);
    return { branches, latest };
  }
}
