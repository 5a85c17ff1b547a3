import { readFileSync } from "node:fs";

// Both src/shared and dist/shared sit two folders below package.json.
const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
  version: string;
};

/** The server version, shown in overview.json and the HTML page. */
export const VERSION: string = pkg.version;
