// The SSE reader on its own: line endings split across chunks, comments,
// multi-line data, events without an id.
import assert from "node:assert/strict";
import { test } from "node:test";

import { readSSE, type SSE } from "../src/index.js";

function streamOf(chunks: string[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return new ReadableStream({
    start(c) {
      for (const ch of chunks) c.enqueue(enc.encode(ch));
      c.close();
    },
  });
}

test("readSSE: chunk boundaries, CRLF, comments and multi-line data", async () => {
  const chunks = [": heartbeat\r", "\n\r\nid: 4\r", "\nevent: text\ndata: {\"text\":", "\ndata: \"hi\"}\n", "\n", "data: x\n\n", "id: 5\nevent: done\ndata: {}\n\n"];
  const got: SSE[] = [];
  for await (const ev of readSSE(streamOf(chunks))) got.push(ev);
  assert.deepEqual(
    got.map((e) => [e.event, e.id, e.data]),
    [
      ["text", "4", '{"text":\n"hi"}'],
      ["message", undefined, "x"],
      ["done", "5", "{}"],
    ],
  );
});

test("readSSE: a multi-byte character split across chunks", async () => {
  const bytes = new TextEncoder().encode("data: é\n\n");
  const s = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(bytes.slice(0, 7));
      c.enqueue(bytes.slice(7));
      c.close();
    },
  });
  const got: SSE[] = [];
  for await (const ev of readSSE(s)) got.push(ev);
  assert.equal(got[0].data, "é");
});
