import { APIError, StreamError, errorFromBody } from "./errors.js";
import { readSSE, type SSE } from "./sse.js";
import type {
  ClaudeOptions,
  CreatedSandbox,
  ExecEvent,
  ExecRequest,
  ExecResult,
  FileEntry,
  FileList,
  Restored,
  Run,
  RunEvent,
  Sandbox,
  SandboxPage,
  SandboxSpec,
  Snapshot,
  SnapshotDetail,
  SnapshotDiff,
  SnapshotTaken,
} from "./types.js";

/** Options of a TechBoss client. */
export interface ClientOptions {
  /** The server; default `$TECHBOSS_URL` (Node), the page's origin (browsers), else http://localhost:8080. */
  baseUrl?: string;
  /** An API token; default `$TECHBOSS_TOKEN` (Node). In a browser logged in to the server, the session cookie works too. */
  token?: string;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /** Reconnections in a row without a new event before a run stream gives up (default 10). */
  maxReconnects?: number;
  /** Headers sent with every request. */
  headers?: Record<string, string>;
}

const RETRY_STATUS = [429, 502, 503, 504];

function env(name: string): string | undefined {
  const p = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  return p?.env?.[name] || undefined;
}

function defaultBaseUrl(): string {
  const fromEnv = env("TECHBOSS_URL");
  if (fromEnv) return fromEnv;
  const loc = (globalThis as { location?: { origin?: string } }).location;
  if (loc?.origin && loc.origin.startsWith("http")) return loc.origin;
  return "http://localhost:8080";
}

const seg = encodeURIComponent;

/** /sandbox/{id}/files/{path}: relative paths are under /workspace. */
function filesPath(sandboxId: string, path: string): string {
  return `/sandbox/${seg(sandboxId)}/files/${path.split("/").map(seg).join("/")}`;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      reject(signal.reason);
    }, { once: true });
  });
}

function backoff(attempt: number): number {
  return Math.min(200 * 2 ** (attempt - 1), 5000);
}

function b64decode(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function b64encode(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return btoa(s);
}

function runEvent(sse: SSE, runId: string): RunEvent {
  let data: unknown = undefined;
  if (sse.data) {
    try {
      data = JSON.parse(sse.data);
    } catch {
      data = sse.data;
    }
  }
  const seq = sse.id !== undefined && /^\d+$/.test(sse.id) ? Number(sse.id) : undefined;
  const type = sse.event;
  const text =
    (type === "text_delta" || type === "text") && data && typeof data === "object"
      ? String((data as { text?: unknown }).text ?? "")
      : "";
  return { runId, seq, type, data, text };
}

/** A request that may be retried or resumed. */
interface Req {
  method: string;
  path: string;
  query?: Record<string, string | undefined>;
  headers?: Record<string, string>;
  json?: unknown;
  body?: BodyInit;
  signal?: AbortSignal;
}

/**
 * A client of the TechBoss AI API: `sandboxes`, `exec`, `files`, `runs`,
 * `snapshots`, and `claude()` for a streamed run.
 */
export class TechBoss {
  readonly baseUrl: string;
  readonly maxReconnects: number;
  readonly sandboxes: Sandboxes;
  readonly exec: Exec;
  readonly files: Files;
  readonly runs: Runs;
  readonly snapshots: Snapshots;
  private readonly token?: string;
  private readonly fetchFn: typeof fetch;
  private readonly headers: Record<string, string>;

  constructor(options: ClientOptions = {}) {
    this.baseUrl = (options.baseUrl ?? defaultBaseUrl()).replace(/\/+$/, "");
    this.token = options.token ?? env("TECHBOSS_TOKEN");
    this.fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.maxReconnects = options.maxReconnects ?? 10;
    this.headers = { ...(options.headers ?? {}) };
    this.sandboxes = new Sandboxes(this);
    this.exec = new Exec(this);
    this.files = new Files(this);
    this.runs = new Runs(this);
    this.snapshots = new Snapshots(this);
  }

  /**
   * Starts a Claude Code run in the sandbox and returns its event stream:
   * `for await (const ev of tb.claude(id, "prompt"))` up to the `done`
   * event. The run starts when iteration begins; a dropped connection is
   * resumed from the last event seen.
   */
  claude(sandboxId: string, prompt: string, options: ClaudeOptions = {} as ClaudeOptions): RunStream {
    const body = { ...options, prompt };
    return new RunStream(this, undefined, {
      start: (signal) =>
        this.open({
          method: "POST",
          path: `/sandbox/${seg(sandboxId)}/claude`,
          query: { format: "events" },
          json: body,
          headers: { Accept: "text/event-stream" },
          signal,
        }),
    });
  }

  /** Sends a request; an error answer throws APIError. */
  async request(req: Req): Promise<Response> {
    const url = new URL(this.baseUrl + req.path);
    for (const [k, v] of Object.entries(req.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const headers: Record<string, string> = { Accept: "application/json", ...this.headers, ...(req.headers ?? {}) };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let body = req.body;
    if (req.json !== undefined) {
      body = JSON.stringify(req.json);
      headers["Content-Type"] = "application/json";
    }
    const res = await this.fetchFn(url, {
      method: req.method,
      headers,
      body,
      signal: req.signal,
      credentials: this.token ? "omit" : "include",
    });
    if (res.status >= 400) {
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // not JSON: keep the text
      }
      throw errorFromBody(res.status, parsed, res.headers.get("Retry-After"));
    }
    return res;
  }

  /** The `data` of a JSON answer. */
  async data<T>(req: Req): Promise<T> {
    const res = await this.request(req);
    const body = (await res.json()) as { data?: T };
    return (body && typeof body === "object" && "data" in body ? body.data : body) as T;
  }

  /** @internal opens a streaming answer. */
  async open(req: Req): Promise<Response> {
    const res = await this.request(req);
    if (!res.body) throw new StreamError(`${req.method} ${req.path}: the answer has no body`);
    return res;
  }
}

/**
 * The events of one run, from the start (or after `after`) to `done`. Async
 * iteration yields RunEvent; when the connection drops, or the server
 * announces a restart, it reconnects to `GET /runs/{id}/events` with
 * `Last-Event-ID` set to the last event it yielded: no event lost or seen twice.
 */
export class RunStream implements AsyncIterable<RunEvent> {
  /** The run's id, known once the run has started. */
  runId?: string;
  /** The id (seq) of the last event yielded. */
  lastEventId?: number;
  /** How many times the stream reconnected. */
  reconnects = 0;
  /** The `done` event's data (`status`, `exit_code`) once seen. */
  result?: { status: string; exit_code?: number; [k: string]: unknown };
  private texts: string[] = [];
  private start?: (signal: AbortSignal) => Promise<Response>;
  private abort = new AbortController();

  constructor(
    private readonly client: TechBoss,
    runId: string | undefined,
    opts: { after?: number; start?: (signal: AbortSignal) => Promise<Response> } = {},
  ) {
    this.runId = runId;
    this.lastEventId = opts.after;
    this.start = opts.start;
  }

  /** The assistant's text so far (its `text` events, joined by newlines). */
  get text(): string {
    return this.texts.join("\n");
  }

  /** Stops reading (the run goes on; `runs.cancel` stops it). */
  close(): void {
    this.abort.abort(new StreamError("closed"));
  }

  /** Reads the stream to its end and returns it (text and result are then complete). */
  async untilDone(): Promise<this> {
    for await (const _ of this) {
      // drain
    }
    return this;
  }

  private async openNext(): Promise<Response> {
    const signal = this.abort.signal;
    if (this.start) {
      const start = this.start;
      this.start = undefined;
      const res = await start(signal);
      this.runId = res.headers.get("X-Run-ID") ?? this.runId;
      return res;
    }
    if (!this.runId) throw new StreamError("the run's id is unknown: the stream cannot be resumed");
    const headers: Record<string, string> = { Accept: "text/event-stream" };
    if (this.lastEventId !== undefined) headers["Last-Event-ID"] = String(this.lastEventId);
    return this.client.open({ method: "GET", path: `/runs/${seg(this.runId)}/events`, headers, signal });
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<RunEvent> {
    let failures = 0;
    let first = true;
    for (;;) {
      let err: unknown;
      try {
        const res = await this.openNext();
        if (!first) this.reconnects++;
        first = false;
        for await (const sse of readSSE(res.body!)) {
          if (sse.event === "restarting") break; // the server stops: resume on another start
          if (sse.event === "error" && sse.id === undefined) throw errorFromBody(0, JSON.parse(sse.data || "{}"));
          const ev = runEvent(sse, this.runId ?? "");
          if (ev.seq !== undefined) {
            if (this.lastEventId !== undefined && ev.seq <= this.lastEventId) {
              throw new StreamError(`run ${this.runId}: event ${ev.seq} came again after ${this.lastEventId}`);
            }
            this.lastEventId = ev.seq;
          }
          failures = 0;
          if (ev.type === "text") this.texts.push(ev.text);
          if (ev.type === "done") this.result = ev.data;
          yield ev;
          if (ev.type === "done") return;
        }
      } catch (e) {
        if (this.abort.signal.aborted) return;
        if (e instanceof APIError) {
          if (first || !RETRY_STATUS.includes(e.status)) throw e;
        } else if (e instanceof StreamError || this.runId === undefined) {
          throw e;
        }
        err = e; // the connection broke: resume
      }
      failures++;
      if (failures > this.client.maxReconnects) {
        throw new StreamError(`run ${this.runId}: the stream broke ${failures} times after event ${this.lastEventId}`, { cause: err });
      }
      try {
        await sleep(backoff(failures), this.abort.signal);
      } catch {
        return;
      }
    }
  }
}

/** `tb.sandboxes`: create, list, get, terminate, logs. */
export class Sandboxes {
  constructor(private readonly c: TechBoss) {}

  /** Creates a sandbox and returns it once it runs (`image_base` defaults to "host"). */
  create(spec: Partial<SandboxSpec> = {}): Promise<CreatedSandbox> {
    return this.c.data({ method: "POST", path: "/sandbox", json: { image_base: "host", ...spec } });
  }

  /** One page of your sandboxes, newest first; pass `next_cursor` as `cursor` for the next. */
  list(opts: { state?: string; label?: Record<string, string>; limit?: number; cursor?: string } = {}): Promise<SandboxPage> {
    const q = new URLSearchParams();
    if (opts.state) q.set("state", opts.state);
    for (const [k, v] of Object.entries(opts.label ?? {})) q.append("label", `${k}=${v}`);
    if (opts.limit) q.set("limit", String(opts.limit));
    if (opts.cursor) q.set("cursor", opts.cursor);
    const qs = q.toString();
    return this.c.data({ method: "GET", path: "/sandbox" + (qs ? "?" + qs : "") });
  }

  get(sandboxId: string): Promise<Sandbox> {
    return this.c.data({ method: "GET", path: `/sandbox/${seg(sandboxId)}` });
  }

  /** Terminates the sandbox (idempotent); the record stays. */
  terminate(sandboxId: string): Promise<Partial<Sandbox> & { sandbox_id: string; status: string }> {
    return this.c.data({ method: "DELETE", path: `/sandbox/${seg(sandboxId)}` });
  }

  /** The sandbox's build and start log. */
  async logs(sandboxId: string): Promise<string> {
    return (await this.c.request({ method: "GET", path: `/sandbox/${seg(sandboxId)}/logs`, headers: { Accept: "text/plain" } })).text();
  }
}

/** Options of a command; `stdin` as text or bytes. */
export type ExecOptions = Omit<Partial<ExecRequest>, "command" | "stdin" | "stdin_b64"> & { stdin?: string | Uint8Array };

function execBody(command: string[], opts: ExecOptions): ExecRequest {
  if (!Array.isArray(command)) throw new TypeError("command is an argv array, e.g. ['sh', '-c', 'echo hi']");
  const { stdin, ...rest } = opts;
  const body: Record<string, unknown> = { ...rest, command };
  if (typeof stdin === "string") body.stdin = stdin;
  else if (stdin) body.stdin_b64 = b64encode(stdin);
  return body as ExecRequest;
}

/** `tb.exec`: run a command and wait, or stream its output. */
export class Exec {
  constructor(private readonly c: TechBoss) {}

  /** Runs `command` (an argv) and resolves once it exits; a non-zero exit is not an error: read `exit_code`. */
  run(sandboxId: string, command: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.c.data({ method: "POST", path: `/sandbox/${seg(sandboxId)}/exec`, query: { wait: "true" }, json: execBody(command, opts) });
  }

  /** Runs `command` and yields `stdout`/`stderr` events as output comes, then one `exit` event with `exitCode`. */
  async *stream(sandboxId: string, command: string[], opts: ExecOptions & { signal?: AbortSignal } = {}): AsyncGenerator<ExecEvent> {
    const { signal, ...rest } = opts;
    const res = await this.c.open({
      method: "POST",
      path: `/sandbox/${seg(sandboxId)}/exec`,
      json: execBody(command, rest),
      headers: { Accept: "text/event-stream" },
      signal,
    });
    const dec = new TextDecoder();
    for await (const sse of readSSE(res.body!)) {
      const payload = (sse.data ? JSON.parse(sse.data) : {}) as Record<string, unknown>;
      if (sse.event === "error") throw errorFromBody(0, { error: payload });
      if (sse.event === "stdout" || sse.event === "stderr") {
        const data = typeof payload.data_b64 === "string" ? b64decode(payload.data_b64) : new TextEncoder().encode(String(payload.data ?? ""));
        yield { type: sse.event, data, text: dec.decode(data), raw: payload };
      } else if (sse.event === "exit") {
        yield { type: "exit", data: new Uint8Array(), text: "", exitCode: Number(payload.exit_code), raw: payload };
        return;
      }
    }
    throw new StreamError("exec stream ended without an exit event");
  }
}

/** `tb.files`: paths are relative to /workspace, or absolute. */
export class Files {
  constructor(private readonly c: TechBoss) {}

  async read(sandboxId: string, path: string): Promise<Uint8Array> {
    const res = await this.c.request({ method: "GET", path: filesPath(sandboxId, path), headers: { Accept: "*/*" } });
    return new Uint8Array(await res.arrayBuffer());
  }

  async readText(sandboxId: string, path: string): Promise<string> {
    return new TextDecoder().decode(await this.read(sandboxId, path));
  }

  /** Writes a file (parents are made) and returns its size; `mode` e.g. 0o755. */
  async write(sandboxId: string, path: string, content: string | Uint8Array | Blob, opts: { mode?: number } = {}): Promise<number> {
    const body = typeof content === "string" ? new TextEncoder().encode(content) : content;
    const d = await this.c.data<{ size?: number }>({
      method: "PUT",
      path: filesPath(sandboxId, path),
      query: { mode: opts.mode !== undefined ? opts.mode.toString(8) : undefined },
      headers: { "Content-Type": "application/octet-stream" },
      body: body as BodyInit,
    });
    return d.size ?? 0;
  }

  async list(sandboxId: string, dir = "."): Promise<FileEntry[]> {
    const d = await this.c.data<FileList>({ method: "GET", path: `/sandbox/${seg(sandboxId)}/files`, query: { dir } });
    return d.entries ?? [];
  }

  async remove(sandboxId: string, path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    await this.c.request({ method: "DELETE", path: filesPath(sandboxId, path), query: { recursive: opts.recursive ? "true" : undefined } });
  }
}

/** `tb.runs`: list, get, follow and cancel Claude Code runs. */
export class Runs {
  constructor(private readonly c: TechBoss) {}

  /** The sandbox's runs, newest first. */
  list(sandboxId: string): Promise<Run[]> {
    return this.c.data({ method: "GET", path: `/sandbox/${seg(sandboxId)}/runs` });
  }

  get(runId: string): Promise<Run> {
    return this.c.data({ method: "GET", path: `/runs/${seg(runId)}` });
  }

  /** The run's events after `after` (from the start when undefined), replayed and then followed until `done`. */
  stream(runId: string, opts: { after?: number } = {}): RunStream {
    return new RunStream(this.c, runId, { after: opts.after });
  }

  cancel(runId: string): Promise<Run> {
    return this.c.data({ method: "POST", path: `/runs/${seg(runId)}/cancel` });
  }

  /** Answers a `permission_request` event. */
  answerPermission(
    runId: string,
    requestId: string,
    answer: { behavior: "allow" | "deny"; message?: string; updated_input?: Record<string, unknown>; remember?: "run" },
  ): Promise<unknown> {
    return this.c.data({ method: "POST", path: `/runs/${seg(runId)}/permissions/${seg(requestId)}`, json: answer });
  }
}

/** `tb.snapshots`: versions of a sandbox's /workspace. */
export class Snapshots {
  constructor(private readonly c: TechBoss) {}

  create(sandboxId: string): Promise<SnapshotTaken> {
    return this.c.data({ method: "POST", path: `/sandbox/${seg(sandboxId)}/snapshots` });
  }

  /** The sandbox's snapshots, newest first. */
  async list(sandboxId: string, opts: { limit?: number } = {}): Promise<Snapshot[]> {
    const d = await this.c.data<{ snapshots?: Snapshot[] }>({
      method: "GET",
      path: `/sandbox/${seg(sandboxId)}/snapshots`,
      query: { limit: opts.limit ? String(opts.limit) : undefined },
    });
    return d.snapshots ?? [];
  }

  get(snapshotId: string): Promise<SnapshotDetail> {
    return this.c.data({ method: "GET", path: `/snapshots/${seg(snapshotId)}` });
  }

  diff(fromSnapshot: string, toSnapshot: string): Promise<SnapshotDiff> {
    return this.c.data({ method: "GET", path: `/snapshots/${seg(fromSnapshot)}/diff/${seg(toSnapshot)}` });
  }

  /** Makes the sandbox's workspace exactly the snapshot again. */
  restore(sandboxId: string, snapshotId: string): Promise<Restored> {
    return this.c.data({ method: "POST", path: `/sandbox/${seg(sandboxId)}/restore`, json: { snapshot_id: snapshotId } });
  }
}
