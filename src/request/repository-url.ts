/**
 * Custom repository URLs, read once and then only ever used in the server's own spelling.
 *
 * The allow-list check parses a URL with the WHATWG parser, but the feed list of the
 * ImageBuilder is read by wget, curl, opkg and apk, which parse URLs their own way:
 * `http://allowed\x@evil/` is host `allowed` for WHATWG and host `evil` for curl (issue #9,
 * item 3). So a URL is refused unless it is already written the way the parser writes it
 * (`URL.href`), and it has nothing two parsers could read differently: no backslash, no
 * userinfo, no whitespace or control characters (raw or percent-encoded), no encoded `/` or
 * `\`, no query, no fragment. The one accepted difference is trailing slashes: they are
 * removed (`.../base/` and `.../base` are one feed, and opkg and apk append `/Packages.gz`,
 * `/packages.adb` themselves), so the canonical form is `href` without trailing `/`.
 * The request hash, the allow-list check and the feed file all use that canonical form.
 */

export type RepositoryUrlResult = { ok: true; url: string } | { ok: false; problem: string };

/** Only the schemes package managers fetch feeds over. */
const SCHEMES = new Set(["http:", "https:"]);

export function canonicalRepositoryUrl(text: string): RepositoryUrlResult {
  const fail = (problem: string): RepositoryUrlResult => ({ ok: false, problem });
  if (text.includes("\\")) {
    return fail(
      "contains a backslash (\\), which other programs read as part of the host name. Write the path with forward slashes (/)",
    );
  }
  if (/[\s\x00-\x1f\x7f]/.test(text)) return fail("contains whitespace or a control character. Remove it");
  if (/%(?:[01][0-9a-f]|7f)/i.test(text)) {
    return fail("contains a percent-encoded control character (%00 to %1F or %7F). Remove it");
  }
  if (/%(?:2f|5c)/i.test(text)) {
    return fail(
      "contains an encoded slash or backslash (%2F or %5C), which some servers decode into a path outside the allowed location. Write the path with plain slashes",
    );
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return fail("is not a URL. Write it like https://downloads.example.org/path/to/feed");
  }
  if (!SCHEMES.has(url.protocol)) return fail("does not start with http:// or https://. Use one of them");
  if (url.username !== "" || url.password !== "") {
    return fail("contains a user name or password (user@host). Remove it; feeds are fetched anonymously");
  }
  if (text.includes("@"))
    return fail("contains an @, which some programs read as the end of a user name. Remove it");
  if (url.search !== "" || text.includes("?"))
    return fail("has a query (?...). Feed URLs name a folder; remove it");
  if (url.hash !== "" || text.includes("#")) return fail("has a fragment (#...). Remove it");
  const canonical = url.href.replace(/\/+$/, "");
  if (text.replace(/\/+$/, "") !== canonical) {
    return fail(`is not written the way every URL parser reads it alike. Write it as ${canonical}`);
  }
  return { ok: true, url: canonical };
}

/**
 * The folder a canonical repository URL names, as the package manager fetches from it
 * (`<url>/Packages.gz`): what the allow list is checked against.
 */
export function repositoryFolderUrl(canonical: string): URL {
  return new URL(`${canonical}/`);
}
