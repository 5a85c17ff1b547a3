import { existsSync } from "node:fs";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { REPOSITORY_NAME_PATTERN } from "../request/build-request-schema.js";
import { canonicalRepositoryUrl } from "../request/repository-url.js";
import { BuildError } from "../shared/errors.js";
import { parsePublicKey } from "../shared/usign.js";

export interface CustomRepositories {
  repositories: Record<string, string>;
  repository_keys: string[];
  repositories_mode: "append" | "replace";
}

/** Writes a file by rename, so a file hardlinked with the shared ImageBuilder tree is never changed in place. */
async function replaceFile(file: string, content: string): Promise<void> {
  const tmp = `${file}.asu-tmp`;
  await writeFile(tmp, content);
  await rename(tmp, file);
}

const NAME = new RegExp(REPOSITORY_NAME_PATTERN);

/**
 * The URL as the feed file gets it: only the server's own serialisation, which the request
 * was hashed and allow-listed with (normalizeRequest). A job whose URL is not in that form
 * (queued by an older server) fails rather than write text wget or opkg read differently.
 */
function feedUrl(name: string, url: string): string {
  const canonical = canonicalRepositoryUrl(url);
  if (!NAME.test(name) || !canonical.ok || canonical.url !== url) {
    throw new BuildError(
      `Error: repository ${JSON.stringify(name)} has a name or URL this server does not accept${canonical.ok ? "" : ` (the URL ${canonical.problem})`}. Send the build request again.`,
      { userFault: true },
    );
  }
  return canonical.url;
}

/**
 * Adds the request's repositories (already checked against `repository_allow_list`) to the
 * workspace's feed list, `repositories.conf` for opkg or `repositories` for apk, and its
 * keys to `keys/`. `replace` drops the upstream feeds but keeps the ImageBuilder's local one.
 */
export async function applyCustomRepositories(workspaceDir: string, req: CustomRepositories): Promise<void> {
  const names = Object.keys(req.repositories);
  if (names.length === 0 && req.repository_keys.length === 0) return;
  const opkgConf = path.join(workspaceDir, "repositories.conf");
  const apkConf = path.join(workspaceDir, "repositories");
  const isOpkg = existsSync(opkgConf);
  const conf = isOpkg ? opkgConf : apkConf;
  const lines = existsSync(conf) ? (await readFile(conf, "utf8")).split("\n") : [];

  const kept =
    req.repositories_mode === "replace"
      ? lines.filter((l) => (isOpkg ? !/^src\/gz /.test(l) : !/^https?:\/\//.test(l.trim())))
      : lines;
  const added = names.map((name) => {
    const url = feedUrl(name, req.repositories[name] as string);
    return isOpkg ? `src/gz ${name} ${url}` : url;
  });
  // Custom feeds go first so the local ImageBuilder feed and options stay at the end.
  await replaceFile(conf, [...added, ...kept].join("\n"));

  const keysDir = path.join(workspaceDir, "keys");
  await mkdir(keysDir, { recursive: true });
  for (const [i, key] of req.repository_keys.entries()) {
    if (isOpkg) {
      let keyId: string;
      try {
        keyId = parsePublicKey(key).keyId.toString("hex");
      } catch {
        throw new BuildError(
          `Error: repository_keys[${i}] is not a usign public key. Give the base64 line of the feed's .pub file.`,
          { userFault: true },
        );
      }
      await replaceFile(
        path.join(keysDir, keyId),
        `untrusted comment: custom repository key\n${key.trim()}\n`,
      );
    } else {
      await replaceFile(path.join(keysDir, `asu-custom-${i}.pem`), `${key.trim()}\n`);
    }
  }
}
