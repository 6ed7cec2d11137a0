// TechBoss AI: a fetch-based client (Node 18+ and browsers, no runtime
// dependencies) for sandboxes, exec, files, Claude Code runs (streamed,
// resumed with Last-Event-ID) and snapshots.
export { TechBoss, RunStream, Sandboxes, Exec, Files, Runs, Snapshots } from "./client.js";
export type { ClientOptions, ExecOptions } from "./client.js";
export { APIError, StreamError, TechBossError, errorFromBody } from "./errors.js";
export type { FieldError } from "./errors.js";
export { SSEParser, readSSE } from "./sse.js";
export type { SSE } from "./sse.js";
export type * from "./types.js";
