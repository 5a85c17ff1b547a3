import { readFile } from "node:fs/promises";
import { signMessage } from "../shared/usign.js";
import type { ImageSigner } from "./build-pipeline.js";

/**
 * Signs images outside the build sandbox with the server's usign key (a detached signature:
 * the image bytes, and so their sha256 in `images[]`, stay exactly as built). The pipeline
 * hands over bytes it read through a checked descriptor and stores the signature itself, so
 * nothing here ever opens a path inside a build's workspace (issue #9).
 */
export class UsignImageSigner implements ImageSigner {
  constructor(private readonly secretKeyFile: string) {}

  async sign(image: Buffer): Promise<string> {
    return signMessage(image, await readFile(this.secretKeyFile, "utf8"));
  }
}
