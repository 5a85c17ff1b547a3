import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  verify,
} from "node:crypto";

/**
 * usign/signify files, as OpenWrt uses them for sha256sums, package indexes and images.
 * Each file is an "untrusted comment:" line and one base64 line:
 * - public key: "Ed" | key id (8) | Ed25519 public key (32)
 * - secret key: "Ed" | "BK" | kdf rounds (4) | salt (16) | checksum (8) | key id (8) | seed+public (64)
 * - signature:  "Ed" | key id (8) | Ed25519 signature (64)
 */

export interface UsignPublicKey {
  keyId: Buffer;
  key: Buffer;
}

export interface UsignSecretKey {
  keyId: Buffer;
  seed: Buffer;
  publicKey: Buffer;
}

export interface UsignKeyPair {
  /** Contents of a `.pub` file. */
  publicFile: string;
  /** Contents of a secret key file (unencrypted, kdf rounds 0). */
  secretFile: string;
  /** The base64 line of the public key, as asu.toml's `pubkey` takes it. */
  publicLine: string;
  keyIdHex: string;
}

const ED = Buffer.from("Ed");

/** Returns the base64 payload of a usign file or of a bare base64 line. */
function payload(text: string): Buffer {
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("untrusted comment:"));
  const line = lines[0];
  if (line === undefined || !/^[A-Za-z0-9+/]+={0,2}$/.test(line)) {
    throw new Error("not a usign file: expected a base64 line");
  }
  return Buffer.from(line, "base64");
}

export function parsePublicKey(text: string): UsignPublicKey {
  const bytes = payload(text);
  if (bytes.length !== 42 || !bytes.subarray(0, 2).equals(ED)) throw new Error("not a usign public key");
  return { keyId: bytes.subarray(2, 10), key: bytes.subarray(10, 42) };
}

export function parseSecretKey(text: string): UsignSecretKey {
  const bytes = payload(text);
  if (bytes.length !== 104 || !bytes.subarray(0, 2).equals(ED)) throw new Error("not a usign secret key");
  if (bytes.readUInt32BE(4) !== 0)
    throw new Error("encrypted usign secret keys are not supported; use one without a password");
  const keyId = bytes.subarray(32, 40);
  const secret = bytes.subarray(40, 104);
  const checksum = createHash("sha512").update(secret).digest().subarray(0, 8);
  if (!checksum.equals(bytes.subarray(24, 32))) throw new Error("usign secret key checksum mismatch");
  return { keyId, seed: secret.subarray(0, 32), publicKey: secret.subarray(32, 64) };
}

export function generateKeyPair(comment = "asu-ts key"): UsignKeyPair {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const pubJwk = publicKey.export({ format: "jwk" });
  const privJwk = privateKey.export({ format: "jwk" });
  const pub = Buffer.from(pubJwk.x as string, "base64url");
  const seed = Buffer.from(privJwk.d as string, "base64url");
  const keyId = randomBytes(8);
  const secret = Buffer.concat([seed, pub]);
  const checksum = createHash("sha512").update(secret).digest().subarray(0, 8);
  const secretBytes = Buffer.concat([
    ED,
    Buffer.from("BK"),
    Buffer.alloc(4), // kdf rounds 0: not encrypted
    randomBytes(16),
    checksum,
    keyId,
    secret,
  ]);
  const publicLine = Buffer.concat([ED, keyId, pub]).toString("base64");
  const keyIdHex = keyId.toString("hex");
  return {
    publicFile: `untrusted comment: public key ${keyIdHex}\n${publicLine}\n`,
    secretFile: `untrusted comment: ${comment} secret key\n${secretBytes.toString("base64")}\n`,
    publicLine,
    keyIdHex,
  };
}

/** Signs `message` and returns the contents of a `.sig` file. */
export function signMessage(message: Buffer | string, secretKeyFile: string): string {
  const sk = parseSecretKey(secretKeyFile);
  const key = createPrivateKey({
    format: "jwk",
    key: {
      kty: "OKP",
      crv: "Ed25519",
      d: sk.seed.toString("base64url"),
      x: sk.publicKey.toString("base64url"),
    },
  });
  const signature = sign(null, Buffer.from(message), key);
  const line = Buffer.concat([ED, sk.keyId, signature]).toString("base64");
  return `untrusted comment: signed by key ${sk.keyId.toString("hex")}\n${line}\n`;
}

export type VerifyResult = { ok: true } | { ok: false; reason: string };

/** Checks a `.sig` file against `message` with a public key file or bare base64 line. */
export function verifyMessage(
  message: Buffer | string,
  signatureFile: string,
  publicKey: string,
): VerifyResult {
  let pk: UsignPublicKey;
  let sig: Buffer;
  try {
    pk = parsePublicKey(publicKey);
  } catch (err) {
    return { ok: false, reason: `bad public key: ${(err as Error).message}` };
  }
  try {
    sig = payload(signatureFile);
  } catch (err) {
    return { ok: false, reason: `bad signature file: ${(err as Error).message}` };
  }
  if (sig.length !== 74 || !sig.subarray(0, 2).equals(ED))
    return { ok: false, reason: "not a usign signature" };
  const keyId = sig.subarray(2, 10);
  if (!keyId.equals(pk.keyId)) {
    return {
      ok: false,
      reason: `signed by key ${keyId.toString("hex")}, but the configured key is ${pk.keyId.toString("hex")}`,
    };
  }
  const key = createPublicKey({
    format: "jwk",
    key: { kty: "OKP", crv: "Ed25519", x: pk.key.toString("base64url") },
  });
  return verify(null, Buffer.from(message), key, sig.subarray(10, 74))
    ? { ok: true }
    : { ok: false, reason: "signature does not match the signed file" };
}
