/** One bad field of a request (a 422 names each). */
export interface FieldError {
  field: string;
  reason: string;
}

/** Base class of every error this package throws. */
export class TechBossError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TechBossError";
  }
}

/**
 * The API answered with an error: `{"error": {"code", "message", "request_id", "fields"?}}`.
 * `status` is the HTTP status (0 for an `error` event inside a stream), `code` the API's error
 * code (`invalid`, `not_found`, `conflict`, ...), `fields` the bad fields of a 422.
 */
export class APIError extends TechBossError {
  readonly status: number;
  readonly code: string;
  readonly requestId: string;
  readonly fields: FieldError[];
  /** Seconds to wait before retrying (429, 503), when the server said. */
  readonly retryAfter?: number;

  constructor(status: number, code: string, message: string, requestId = "", fields: FieldError[] = [], retryAfter?: number) {
    super(status ? `${status} ${code}: ${message}` : `${code}: ${message}`);
    this.name = "APIError";
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.fields = fields;
    this.retryAfter = retryAfter;
  }

  /** The names of the bad fields, in the order the API gave them. */
  get fieldNames(): string[] {
    return this.fields.map((f) => f.field);
  }

  /** The message the API gave, without the status and code. */
  get apiMessage(): string {
    const m = this.message;
    const i = m.indexOf(": ");
    return i >= 0 ? m.slice(i + 2) : m;
  }
}

/** A stream ended and could not be resumed (`cause` is the last failure). */
export class StreamError extends TechBossError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StreamError";
  }
}

/** Builds the APIError of an error answer (body: parsed JSON or text). */
export function errorFromBody(status: number, body: unknown, retryAfter?: string | null): APIError {
  let err: Record<string, unknown> = {};
  if (body && typeof body === "object") {
    const b = body as Record<string, unknown>;
    err = b.error && typeof b.error === "object" ? (b.error as Record<string, unknown>) : b;
  }
  const code = typeof err.code === "string" && err.code ? err.code : `http_${status}`;
  const message =
    typeof err.message === "string" && err.message ? err.message : typeof body === "string" && body ? body : `HTTP ${status}`;
  const fields: FieldError[] = Array.isArray(err.fields)
    ? err.fields
        .filter((f): f is Record<string, unknown> => !!f && typeof f === "object")
        .map((f) => ({ field: String(f.field ?? ""), reason: String(f.reason ?? "") }))
    : [];
  const ra = retryAfter ? Number(retryAfter) : undefined;
  return new APIError(status, code, message, typeof err.request_id === "string" ? err.request_id : "", fields, Number.isFinite(ra) ? ra : undefined);
}
