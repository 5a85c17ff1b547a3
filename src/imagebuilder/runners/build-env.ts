/** PATH inside a build, sandboxed or not. */
export const BUILD_PATH = "/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Runs argv with umask 022, whatever the server's own umask: OpenWrt's prerequisite check
 * refuses any other ("Please build with umask 022 - other values produce broken packages"),
 * and files in images must not come out group- or world-writable.
 */
export function withBuildUmask(args: string[]): string[] {
  return ["/bin/sh", "-c", 'umask 022 && exec "$0" "$@"', ...args];
}
