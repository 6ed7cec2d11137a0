// The SDK's types, taken from the API's OpenAPI document: src/openapi.ts is
// generated from it at build time (`npm run gen`, openapi-typescript), from
// openapi.json here or the document a server serves (TECHBOSS_OPENAPI).
// A field the SDK relies on that the document no longer has fails the
// build (the Has<> checks below).
import type { components, paths } from "./openapi.js";

type SuccessOf<R> = R[Extract<keyof R, "2XX" | "200" | "201" | 200 | 201>];
type JSONOf<X> = X extends { content: { "application/json": infer C } } ? C : never;
type DataOf<C> = C extends { data?: infer D } ? NonNullable<D> : never;

/** The `data` of an operation's JSON answer. */
export type ResponseData<O> = O extends { responses: infer R } ? DataOf<JSONOf<SuccessOf<R>>> : never;
/** An operation's JSON request body. */
export type RequestBody<O> = O extends { requestBody?: infer B } ? JSONOf<NonNullable<B>> : never;

/** A sandbox: `status` is `creating`, `running`, `terminated`, ... */
export type Sandbox = ResponseData<paths["/sandbox/{id}"]["get"]>;
/** `POST /sandbox`'s body (image_base, name, labels, env, cpu, memory_mb, network, ...). */
export type SandboxSpec = RequestBody<paths["/sandbox"]["post"]>;
/** The answer of `POST /sandbox`. */
export type CreatedSandbox = ResponseData<paths["/sandbox"]["post"]>;
/** One page of `GET /sandbox`. */
export type SandboxPage = ResponseData<paths["/sandbox"]["get"]>;
/** `POST /sandbox/{id}/exec`'s body. */
export type ExecRequest = RequestBody<paths["/sandbox/{id}/exec"]["post"]>;
/** A directory listing. */
export type FileList = ResponseData<paths["/sandbox/{id}/files"]["get"]>;
/** One entry of a directory listing. */
export type FileEntry = FileList["entries"][number];
/** A Claude Code run. */
export type Run = ResponseData<paths["/runs/{id}"]["get"]>;
/** `POST /sandbox/{id}/claude`'s body, `prompt` aside. */
export type ClaudeOptions = Omit<RequestBody<paths["/sandbox/{id}/claude"]["post"]>, "prompt">;
/** A snapshot just taken. */
export type SnapshotTaken = ResponseData<paths["/sandbox/{id}/snapshots"]["post"]>;
/** A snapshot as listed. */
export type Snapshot = ResponseData<paths["/sandbox/{id}/snapshots"]["get"]>["snapshots"][number];
/** A snapshot's summary and a page of its file list. */
export type SnapshotDetail = ResponseData<paths["/snapshots/{id}"]["get"]>;
/** Paths added, removed and changed between two snapshots. */
export type SnapshotDiff = ResponseData<paths["/snapshots/{id}/diff/{other}"]["get"]>;
/** The answer of `POST /sandbox/{id}/restore`. */
export type Restored = ResponseData<paths["/sandbox/{id}/restore"]["post"]>;
/** The error body every route answers with. */
export type ErrorBody = components["schemas"]["Error"];

/**
 * `POST /sandbox/{id}/exec?wait=true`'s answer. The document describes the
 * route by its stream, so this one is written by hand.
 */
export interface ExecResult {
  exit_code: number;
  duration_ms: number;
  oom_killed: boolean;
  timed_out?: boolean;
  signal?: string;
  stdout: string;
  stderr: string;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
}

/** One event of an exec stream: `stdout`/`stderr` carry bytes, the last is `exit`. */
export interface ExecEvent {
  type: "stdout" | "stderr" | "exit";
  /** The output bytes (empty for `exit`). */
  data: Uint8Array;
  /** The output as text (UTF-8). */
  text: string;
  /** On the `exit` event. */
  exitCode?: number;
  raw: Record<string, unknown>;
}

/**
 * One event of a run's log: `seq` is its place in the run (1, 2, ...; the SSE
 * id), `type` one of `run.started`, `text_delta`, `text`, `tool_use`,
 * `tool_result`, `usage`, `result`, `permission_request`, `done`, ..., and
 * `data` its JSON payload.
 */
export interface RunEvent {
  runId: string;
  seq?: number;
  type: string;
  data: any;
  /** The text of a `text_delta` or `text` event ("" for others). */
  text: string;
}

// Build-time checks: the fields the SDK reads must be in the document.
type Has<T, K extends string> = K extends keyof T ? true : false;
type Check<T extends true> = T;
export type _Checks = [
  Check<Has<Sandbox, "sandbox_id" | "status" | "spec" | "capabilities">>,
  Check<Has<SandboxSpec, "image_base" | "name" | "labels">>,
  Check<Has<SandboxPage, "sandboxes" | "next_cursor">>,
  Check<Has<ExecRequest, "command" | "env" | "workdir" | "timeout_s" | "stdin" | "stdin_b64">>,
  Check<Has<FileEntry, "name" | "type" | "size" | "mode">>,
  Check<Has<Run, "run_id" | "status" | "last_seq">>,
  Check<Has<SnapshotTaken, "snapshot_id">>,
  Check<Has<Snapshot, "snapshot_id" | "created_at">>,
  Check<Has<SnapshotDiff, "added" | "removed" | "changed">>,
  Check<Has<Restored, "snapshot_id">>,
  Check<Has<ClaudeOptions, "max_turns" | "model">>,
];
