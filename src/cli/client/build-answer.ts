/** What a build answer (POST or GET /api/v1/build, or the event stream's `result`) means for the client. */
export type AnswerKind = "done" | "pending" | "failed" | "bad_request" | "unavailable";

/** A step of a build as the server reports it. */
export type BuildProgress =
  | { kind: "queued"; position: number }
  | { kind: "stage"; stage: string }
  | { kind: "log"; stream: "stdout" | "stderr"; line: string };

/**
 * owut decides by the body's `status`, so does this client; the HTTP status is the fallback
 * for bodies without one (a proxy's error page). A 500 is a failed build only when it says
 * so (`imagebuilder_status: "failed"`); any other 5xx is the server's trouble.
 */
export function classifyAnswer(httpStatus: number, body: Record<string, unknown>): AnswerKind {
  const status = typeof body.status === "number" ? body.status : httpStatus;
  if (status === 200) return "done";
  if (status === 202) return "pending";
  if (status === 500 && body.imagebuilder_status === "failed") return "failed";
  if (status === 408 || status === 429 || status >= 500) return "unavailable";
  if (status >= 400) return "bad_request";
  return "unavailable";
}

/** The progress a 202 answer describes: its queue position while queued, else its stage. */
export function progressOf(body: Record<string, unknown>): BuildProgress | undefined {
  if (typeof body.queue_position === "number") return { kind: "queued", position: body.queue_position };
  if (typeof body.imagebuilder_status === "string") return { kind: "stage", stage: body.imagebuilder_status };
  return undefined;
}

/** The stages a build goes through, in order (client-contract.md), for a progress bar. */
export const BUILD_STAGES = [
  "queued",
  "init",
  "download_imagebuilder",
  "unpack_imagebuilder",
  "validate_revision",
  "validate_manifest",
  "calculate_packages_hash",
  "building_image",
  "signing_images",
  "done",
] as const;

/** Position of a stage in BUILD_STAGES (unknown stages keep the bar where it is). */
export function stageIndex(stage: string): number | undefined {
  const i = (BUILD_STAGES as readonly string[]).indexOf(stage);
  return i >= 0 ? i : undefined;
}

/** `building_image` → `building image`. */
export function stageText(stage: string): string {
  return stage.replaceAll("_", " ");
}
