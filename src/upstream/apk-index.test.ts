import { describe, expect, it } from "vitest";
import { parseApkIndex } from "./apk-index.js";

describe("parseApkIndex", () => {
  const doc = {
    version: 2,
    architecture: "x86_64",
    packages: {
      "base-files": "1700-r30000",
      "kmod-e1000": "6.6.86-r1",
      "luci-app-package-manager": "25.0.1-r1",
    },
  };

  it("reads a version 2 index from text or a parsed value", () => {
    const fromText = parseApkIndex(JSON.stringify(doc));
    expect(fromText.architecture).toBe("x86_64");
    expect({ ...fromText.packages }).toEqual(doc.packages);
    expect({ ...parseApkIndex(doc).packages }).toEqual(doc.packages);
  });

  it("rejects other versions and malformed documents with a reason", () => {
    expect(() => parseApkIndex({ ...doc, version: 1 })).toThrow("only version 2 is understood");
    expect(() => parseApkIndex({ version: 2 })).toThrow("no packages object");
    expect(() => parseApkIndex({ version: 2, packages: { a: 1 } })).toThrow("version of a is not a string");
    expect(() => parseApkIndex("[]")).toThrow("not a JSON object");
    expect(() => parseApkIndex("<html>")).toThrow();
  });

  it("tolerates a missing architecture", () => {
    expect(parseApkIndex({ version: 2, packages: {} }).architecture).toBe("");
  });
});
