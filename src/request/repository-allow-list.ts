/**
 * Whether a repository URL from a build request is covered by an entry of the server's
 * `repository_allow_list`. Both are parsed with the WHATWG URL parser and compared by part,
 * never as strings, so none of these pass for `https://downloads.openwrt.org/releases`:
 *   - `https://downloads.openwrt.org.evil.com/...`  (another host)
 *   - `https://downloads.openwrt.org@evil.com/...`  (userinfo; the host is evil.com)
 *   - `https://user@downloads.openwrt.org/...`      (userinfo the entry does not have)
 *   - `https://downloads.openwrt.org/releasesX/...` (the path prefix ends at a `/`)
 *   - `https://downloads.openwrt.org/releases/../x` (the parser resolves `..` first)
 *   - `http://downloads.openwrt.org/releases/...`   (another scheme)
 * Requests pass the parsed canonical URL (repository-url.ts), so what is checked here is what
 * the feed file gets; spellings other parsers read differently never reach this function.
 */
export function isRepositoryAllowed(url: string | URL, allowList: readonly string[]): boolean {
  const candidate = typeof url === "string" ? parseHttpUrl(url) : parseHttpUrl(url.href);
  if (!candidate) return false;
  return allowList.some((entry) => {
    const allowed = parseHttpUrl(entry);
    if (!allowed) return false;
    return (
      candidate.protocol === allowed.protocol &&
      candidate.username === allowed.username &&
      candidate.password === allowed.password &&
      // `host` includes a non-default port; the parser lower-cases it and drops default ports.
      candidate.host === allowed.host &&
      pathWithin(candidate.pathname, allowed.pathname)
    );
  });
}

function pathWithin(path: string, prefix: string): boolean {
  if (prefix === "" || prefix === "/") return true;
  if (prefix.endsWith("/")) return path.startsWith(prefix);
  return path === prefix || path.startsWith(`${prefix}/`);
}

function parseHttpUrl(text: string): URL | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return undefined;
  }
  return url.protocol === "http:" || url.protocol === "https:" ? url : undefined;
}
