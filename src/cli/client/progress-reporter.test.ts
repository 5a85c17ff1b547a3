import { describe, expect, it } from "vitest";
import { createReporter } from "./progress-reporter.js";

/** A non-terminal stream that keeps what is written. */
function sink(): NodeJS.WriteStream & { text: string } {
  const stream = {
    text: "",
    isTTY: false,
    write(chunk: string) {
      stream.text += chunk;
      return true;
    },
  };
  return stream as unknown as NodeJS.WriteStream & { text: string };
}

describe("plain progress (not a terminal)", () => {
  it("prints one timestamped line per change, the build's lines only with --verbose, and no control codes", () => {
    let now = 0;
    const stream = sink();
    const reporter = createReporter({ verbose: true, stream, now: () => now });
    reporter.info("requesting generic (x86/64, 24.10.4)");
    reporter.build({ kind: "queued", position: 2 });
    reporter.build({ kind: "queued", position: 2 }); // unchanged: no new line
    now = 61_000;
    reporter.build({ kind: "stage", stage: "building_image" });
    reporter.build({ kind: "log", stream: "stderr", line: "\u001b[31mred\u001b[0m warning\r" });
    reporter.buildEnd("built generic");
    reporter.downloadStart("a.img.gz", "squashfs-combined", 3 * 1024 * 1024);
    reporter.downloadData("a.img.gz", 1024);
    reporter.downloadEnd("a.img.gz", "a.img.gz: 3.0 MiB, sha256 verified");
    reporter.stop();
    expect(stream.text).toBe(
      [
        "[0:00] requesting generic (x86/64, 24.10.4)",
        "[0:00] queued, position 2",
        "[1:01] building: building image",
        "  ! [31mred[0m warning",
        "[1:01] built generic",
        "[1:01] downloading a.img.gz (3.0 MiB)",
        "[1:01] a.img.gz: 3.0 MiB, sha256 verified",
        "",
      ].join("\n"),
    );
  });

  it("leaves the build's output lines out without --verbose", () => {
    const stream = sink();
    const reporter = createReporter({ verbose: false, stream });
    reporter.build({ kind: "log", stream: "stdout", line: "make image" });
    expect(stream.text).toBe("");
  });
});
