import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    // Builds the real OpenWrt package tools once per run; tests get them via inject("realToolsDir").
    globalSetup: ["test/support/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration files share one machine with 2 cores; each uses its own Redis prefix.
    fileParallelism: true,
    maxWorkers: 2,
  },
});
