import { mkdtemp, mkdir, readdir, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { LocalStore } from "./local-store.js";
import { collectStoreGarbage } from "./store-gc.js";

const hash = (c: string) => c.repeat(64);

async function makeStore(entries: { h: string; bytes: number; ageMin: number }[]): Promise<LocalStore> {
  const dir = await mkdtemp(path.join(tmpdir(), "asu-store-"));
  const store = new LocalStore(dir);
  await store.init();
  for (const e of entries) {
    const folder = path.join(store.root, e.h);
    await mkdir(folder);
    const file = path.join(folder, "image.bin");
    await writeFile(file, Buffer.alloc(e.bytes));
    const t = new Date(Date.now() - e.ageMin * 60_000);
    await utimes(file, t, t);
  }
  return store;
}

describe("collectStoreGarbage", () => {
  it("removes expired builds but keeps live ones and those still being written", async () => {
    const store = await makeStore([
      { h: hash("a"), bytes: 10, ageMin: 60 }, // expired
      { h: hash("b"), bytes: 20, ageMin: 60 }, // live
      { h: hash("c"), bytes: 30, ageMin: 1 }, // no result yet: within grace
    ]);
    const forgotten: string[] = [];
    const report = await collectStoreGarbage({
      store,
      liveHashes: async () => new Set([hash("b")]),
      forget: async (h) => void forgotten.push(h),
      maxBytes: 0,
    });
    expect(report).toEqual({ removedExpired: 1, removedForSpace: 0, freedBytes: 10, keptBytes: 50 });
    expect((await readdir(store.root)).sort()).toEqual([hash("b"), hash("c")]);
    expect(forgotten).toEqual([]);
  });

  it("evicts the oldest live builds when over the disk budget and forgets their results", async () => {
    const store = await makeStore([
      { h: hash("a"), bytes: 100, ageMin: 300 },
      { h: hash("b"), bytes: 100, ageMin: 200 },
      { h: hash("c"), bytes: 100, ageMin: 100 },
    ]);
    const forgotten: string[] = [];
    const report = await collectStoreGarbage({
      store,
      liveHashes: async () => new Set([hash("a"), hash("b"), hash("c")]),
      forget: async (h) => void forgotten.push(h),
      maxBytes: 150,
    });
    expect(report.removedForSpace).toBe(2);
    expect(report.keptBytes).toBe(100);
    expect(forgotten).toEqual([hash("a"), hash("b")]);
    expect(await readdir(store.root)).toEqual([hash("c")]);
  });
});

describe("LocalStore.open", () => {
  it("serves regular files only, never paths outside the store", async () => {
    const store = await makeStore([{ h: hash("d"), bytes: 5, ageMin: 0 }]);
    const file = await store.open(hash("d"), "image.bin");
    expect(file?.size).toBe(5);
    file?.stream.destroy();
    expect(await store.open(hash("d"), "../../etc/passwd")).toBeUndefined();
    expect(await store.open("..", "passwd")).toBeUndefined();
    expect(await store.open(hash("d"), "missing.bin")).toBeUndefined();
    await symlink("/etc/passwd", path.join(store.root, hash("d"), "link.bin"));
    expect(await store.open(hash("d"), "link.bin")).toBeUndefined();
  });
});

describe("LocalStore behind the Store interface", () => {
  it("locates files as streams with their size, refuses traversal, and sums its usage", async () => {
    const store = await makeStore([
      { h: hash("e"), bytes: 7, ageMin: 0 },
      { h: hash("f"), bytes: 9, ageMin: 0 },
    ]);
    const found = await store.locate(hash("e"), "image.bin");
    expect(found?.kind).toBe("stream");
    if (found?.kind === "stream") {
      expect(found.size).toBe(7);
      found.stream.destroy();
    }
    expect(await store.locate(hash("e"), "../../../etc/passwd")).toBeUndefined();
    expect(await store.usage()).toBe(16);
  });
});
