import { readFile, writeFile } from "node:fs/promises";
import { signMessage } from "../shared/usign.js";
import type { ImageSigner } from "./build-pipeline.js";

/**
 * Signs images outside the build sandbox with the server's usign key, writing
 * `<image>.sig` beside each image (a detached signature: the image bytes, and so their
 * sha256 in `images[]`, stay exactly as built). Ed25519 needs the whole message, so each
 * image is read into memory once; images are tens of MB at most.
 */
export class UsignImageSigner implements ImageSigner {
  constructor(private readonly secretKeyFile: string) {}

  async sign(files: string[]): Promise<string[]> {
    const secret = await readFile(this.secretKeyFile, "utf8");
    const written: string[] = [];
    for (const file of files) {
      const signature = signMessage(await readFile(file), secret);
      await writeFile(`${file}.sig`, signature);
      written.push(`${file}.sig`);
    }
    return written;
  }
}
