/** One Server-Sent Event; `id` is undefined when the event had no id line. */
export interface SSE {
  event: string;
  data: string;
  id?: string;
}

/** Feeds lines (without their line ending); returns an event when a blank line completes one. */
export class SSEParser {
  private event = "";
  private data: string[] = [];
  private id: string | undefined;
  private has = false;

  feed(line: string): SSE | undefined {
    if (line === "") {
      if (!this.has) return undefined;
      const ev: SSE = { event: this.event || "message", data: this.data.join("\n"), id: this.id };
      this.event = "";
      this.data = [];
      this.id = undefined;
      this.has = false;
      return ev;
    }
    if (line.startsWith(":")) return undefined; // a comment: heartbeats
    const i = line.indexOf(":");
    const name = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (name) {
      case "event":
        this.event = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.id = value;
        break;
      default:
        return undefined;
    }
    this.has = true;
    return undefined;
  }
}

/** Reads a response body as Server-Sent Events. */
export async function* readSSE(body: ReadableStream<Uint8Array>): AsyncGenerator<SSE> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SSEParser();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        if (buf[nl] === "\r" && nl === buf.length - 1) break; // a \n may follow in the next chunk
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === "\r" && buf[nl + 1] === "\n" ? 2 : 1));
        const ev = parser.feed(line);
        if (ev) yield ev;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
