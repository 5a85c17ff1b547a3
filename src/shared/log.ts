/**
 * What the parts of the server need of the process's one pino logger (src/app.ts): a message
 * with its structured fields, which stay fields in the JSON line. pino's Logger fits it as it
 * is; tests pass small fakes.
 */
export interface Log {
  // Properties, not methods, so that a fake taking only a message string does not type-check.
  info: (fields: Record<string, unknown>, msg: string) => void;
  warn: (fields: Record<string, unknown>, msg: string) => void;
}
