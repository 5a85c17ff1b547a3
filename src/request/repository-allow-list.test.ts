import { describe, expect, it } from "vitest";
import { isRepositoryAllowed } from "./repository-allow-list.js";

const list = [
  "https://downloads.openwrt.org/releases",
  "https://feed.example.org:8443/openwrt/",
  "http://10.0.0.1/repo",
];

describe("isRepositoryAllowed", () => {
  it("allows URLs under an entry", () => {
    for (const url of [
      "https://downloads.openwrt.org/releases",
      "https://downloads.openwrt.org/releases/24.10.4/packages/x86_64/base",
      "https://DOWNLOADS.openwrt.org:443/releases/24.10.4/",
      "https://feed.example.org:8443/openwrt/x86_64/packages.adb",
      "http://10.0.0.1/repo/all",
    ]) {
      expect(isRepositoryAllowed(url, list), url).toBe(true);
    }
  });

  it("refuses look-alikes that string comparison would let through", () => {
    for (const url of [
      "https://downloads.openwrt.org.evil.com/releases/x",
      "https://downloads.openwrt.org@evil.com/releases/x",
      "https://user@downloads.openwrt.org/releases/x",
      "https://user:pw@downloads.openwrt.org/releases/x",
      "https://downloads.openwrt.org/releasesX/x",
      "https://downloads.openwrt.org/releases/../snapshots/x",
      "https://downloads.openwrt.org/releases/%2e%2e/snapshots/x",
      "http://downloads.openwrt.org/releases/x",
      "https://downloads.openwrt.org:8443/releases/x",
      "https://feed.example.org/openwrt/x",
      "https://feed.example.org:8443/openwrtx/x",
      "https://feed.example.org:8443/openwrt",
      "ftp://downloads.openwrt.org/releases/x",
      "not a url",
    ]) {
      expect(isRepositoryAllowed(url, list), url).toBe(false);
    }
  });

  it("allows nothing with an empty list, and ignores broken entries", () => {
    expect(isRepositoryAllowed("https://downloads.openwrt.org/releases/x", [])).toBe(false);
    expect(isRepositoryAllowed("https://downloads.openwrt.org/releases/x", ["::", "file:///releases"])).toBe(
      false,
    );
  });

  it("treats a host-only entry as the whole host", () => {
    expect(isRepositoryAllowed("https://example.org/any/path", ["https://example.org"])).toBe(true);
    expect(isRepositoryAllowed("https://example.org.evil/any", ["https://example.org"])).toBe(false);
  });

  it("matches userinfo only when the entry has the same", () => {
    expect(isRepositoryAllowed("https://u:p@example.org/x", ["https://u:p@example.org/"])).toBe(true);
    expect(isRepositoryAllowed("https://example.org/x", ["https://u:p@example.org/"])).toBe(false);
  });
});
