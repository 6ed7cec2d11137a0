// The TypeScript SDK against a real server: cmd/server's TestSDKs starts one
// and sets TECHBOSS_URL, TECHBOSS_TOKEN, TECHBOSS_FLAKY_URL (the same server
// behind a proxy that cuts run streams after two events) and
// TECHBOSS_SDK_ANSWER (what its scripted model answers).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { APIError, TechBoss, type RunEvent } from "../src/index.js";

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the suite through cmd/server's TestSDKs (make test)`);
  return v;
}

const answer = env("TECHBOSS_SDK_ANSWER");
const tb = new TechBoss({ baseUrl: env("TECHBOSS_URL"), token: env("TECHBOSS_TOKEN") });
let sid = "";

// The run's events by place. Events without one (presence, when a viewer of
// the sandbox comes or goes) are not part of the run's log: a live stream
// may carry them, a replay does not.
const inLog = (evs: RunEvent[]) => evs.filter((e) => e.seq !== undefined);
const seqs = (evs: RunEvent[]) => inLog(evs).map((e) => e.seq);
const oneToN = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

before(async () => {
  const sb = await tb.sandboxes.create({ name: "node-test", labels: { suite: "typescript" } });
  sid = sb.sandbox_id;
});

after(async () => {
  if (sid) await tb.sandboxes.terminate(sid);
});

test("sandbox lifecycle", async () => {
  const sb = await tb.sandboxes.create({ image_base: "host", name: "ts-life", labels: { suite: "ts-life" } });
  assert.match(sb.sandbox_id, /^sb_/);
  assert.equal(sb.status, "running");
  const got = await tb.sandboxes.get(sb.sandbox_id);
  assert.equal(got.spec.name, "ts-life");
  assert.ok(got.capabilities.includes("files"));
  const page = await tb.sandboxes.list({ state: "running", label: { suite: "ts-life" } });
  assert.deepEqual(page.sandboxes.map((s) => s.sandbox_id), [sb.sandbox_id]);
  assert.ok((await tb.sandboxes.logs(sb.sandbox_id)).includes(sb.sandbox_id));
  assert.equal((await tb.sandboxes.terminate(sb.sandbox_id)).status, "terminated");
  assert.equal((await tb.sandboxes.get(sb.sandbox_id)).status, "terminated");
});

test("exec with exit code", async () => {
  const res = await tb.exec.run(sid, ["sh", "-c", "cat; echo oops >&2; exit 3"], { stdin: "piped\n" });
  assert.equal(res.exit_code, 3);
  assert.equal(res.stdout, "piped\n");
  assert.equal(res.stderr, "oops\n");
  assert.equal((await tb.exec.run(sid, ["true"])).exit_code, 0);
});

test("exec stream", async () => {
  const evs = await collect(tb.exec.stream(sid, ["sh", "-c", "echo out; echo err >&2; printf '\\377'; exit 7"], { env: { X: "1" } }));
  const bytes = (t: string) => Buffer.concat(evs.filter((e) => e.type === t).map((e) => Buffer.from(e.data)));
  assert.deepEqual(bytes("stdout"), Buffer.from([...Buffer.from("out\n"), 0xff]));
  assert.equal(bytes("stderr").toString(), "err\n");
  const last = evs[evs.length - 1];
  assert.equal(last.type, "exit");
  assert.equal(last.exitCode, 7);
});

test("files: write, read, list, remove", async () => {
  assert.equal(await tb.files.write(sid, "dir/hello.txt", "hello, files\n"), 13);
  await tb.files.write(sid, "dir/run.sh", "#!/bin/sh\necho ran\n", { mode: 0o755 });
  assert.equal(await tb.files.readText(sid, "dir/hello.txt"), "hello, files\n");
  assert.equal(await tb.files.readText(sid, "/workspace/dir/hello.txt"), "hello, files\n");
  const entries = await tb.files.list(sid, "dir");
  assert.deepEqual(entries.map((e) => e.name).sort(), ["hello.txt", "run.sh"]);
  assert.equal(entries.find((e) => e.name === "run.sh")!.mode & 0o777, 0o755);
  assert.equal((await tb.exec.run(sid, ["./dir/run.sh"])).stdout, "ran\n");
  await tb.files.remove(sid, "dir", { recursive: true });
  await assert.rejects(tb.files.read(sid, "dir/hello.txt"), (e: unknown) => e instanceof APIError && e.status === 404 && e.code === "not_found");
});

test("a Claude run streamed to its end", async () => {
  const stream = tb.claude(sid, "say hello", { max_turns: 3 });
  const evs = await collect(stream);
  const types = inLog(evs).map((e) => e.type);
  assert.equal(types[0], "run.started");
  assert.ok(types.includes("text_delta"));
  assert.equal(evs.filter((e) => e.type === "text_delta").map((e) => e.text).join(""), answer);
  assert.equal(stream.text, answer);
  assert.equal(types[types.length - 1], "done");
  assert.equal(stream.result?.status, "succeeded");
  assert.deepEqual(seqs(evs), oneToN(inLog(evs).length));
  assert.match(stream.runId!, /^run_/);
  const run = await tb.runs.get(stream.runId!);
  assert.equal(run.status, "succeeded");
  assert.equal(run.last_seq, inLog(evs).length);
  assert.ok((await tb.runs.list(sid)).some((r) => r.run_id === stream.runId));
});

test("resume by hand: drop after three events, continue with the last id", async () => {
  const stream = tb.claude(sid, "say hello again");
  const first: RunEvent[] = [];
  for await (const ev of stream) {
    first.push(ev);
    if (inLog(first).length === 3) break;
  }
  assert.deepEqual(seqs(first), [1, 2, 3]);
  const rest = await collect(tb.runs.stream(stream.runId!, { after: stream.lastEventId }));
  const full = await collect(tb.runs.stream(stream.runId!));
  assert.deepEqual(seqs([...first, ...rest]), seqs(full));
  assert.deepEqual(seqs(full), oneToN(inLog(full).length));
  assert.deepEqual(inLog([...first, ...rest]).map((e) => [e.type, e.data]), inLog(full).map((e) => [e.type, e.data]));
  assert.equal(full[full.length - 1].type, "done");
});

test("resume by itself through a proxy that cuts every stream", async () => {
  const flaky = new TechBoss({ baseUrl: env("TECHBOSS_FLAKY_URL"), token: env("TECHBOSS_TOKEN") });
  const stream = flaky.claude(sid, "say hello through a bad network");
  const evs = await collect(stream);
  assert.ok(stream.reconnects >= 2, `reconnects = ${stream.reconnects}`);
  assert.deepEqual(seqs(evs), oneToN(inLog(evs).length));
  assert.equal(evs[evs.length - 1].type, "done");
  assert.equal(stream.text, answer);
  const replay = flaky.runs.stream(stream.runId!);
  const again = await collect(replay);
  assert.ok(replay.reconnects >= 2);
  assert.deepEqual(inLog(again).map((e) => [e.seq, e.type, e.data]), inLog(evs).map((e) => [e.seq, e.type, e.data]));
});

test("snapshots: create, list, diff, restore", async () => {
  await tb.files.write(sid, "notes.txt", "v1\n");
  const s1 = await tb.snapshots.create(sid);
  await tb.files.write(sid, "notes.txt", "v2\n");
  await tb.files.write(sid, "added.txt", "new\n");
  const s2 = await tb.snapshots.create(sid);
  const listed = (await tb.snapshots.list(sid)).map((s) => s.snapshot_id);
  assert.ok(listed.indexOf(s2.snapshot_id) >= 0 && listed.indexOf(s2.snapshot_id) < listed.indexOf(s1.snapshot_id));
  const diff = await tb.snapshots.diff(s1.snapshot_id, s2.snapshot_id);
  assert.ok(diff.added?.includes("added.txt"));
  assert.ok(diff.changed?.includes("notes.txt"));
  const restored = await tb.snapshots.restore(sid, s1.snapshot_id);
  assert.equal(restored.snapshot_id, s1.snapshot_id);
  assert.equal(await tb.files.readText(sid, "notes.txt"), "v1\n");
  await assert.rejects(tb.files.read(sid, "added.txt"), (e: unknown) => e instanceof APIError && e.status === 404);
});

test("a bad run option is a 422 naming it, thrown when the stream starts", async () => {
  await assert.rejects(collect(tb.claude(sid, "hi", { max_turns: -1 })), (e: unknown) => e instanceof APIError && e.status === 422 && e.fieldNames[0] === "max_turns");
});

test("errors carry the API's code, message and fields", async () => {
  await assert.rejects(tb.sandboxes.create({ image_base: "host", memory_mb: -1 }), (e: unknown) => {
    assert.ok(e instanceof APIError);
    assert.equal(e.status, 422);
    assert.equal(e.code, "invalid");
    assert.deepEqual(e.fieldNames, ["memory_mb"]);
    assert.ok(e.fields[0].reason);
    assert.ok(e.requestId);
    return true;
  });
  await assert.rejects(tb.sandboxes.create({ no_such_field: 1 } as never), (e: unknown) => e instanceof APIError && e.fieldNames[0] === "no_such_field");
  await assert.rejects(tb.sandboxes.get("sb_doesnotexist"), (e: unknown) => e instanceof APIError && e.status === 404);
  await assert.rejects(collect(tb.runs.stream("run_doesnotexist")), (e: unknown) => e instanceof APIError && e.status === 404);
  const anon = new TechBoss({ baseUrl: env("TECHBOSS_URL"), token: "" });
  await assert.rejects(anon.sandboxes.list(), (e: unknown) => e instanceof APIError && e.status === 401 && e.code === "unauthenticated");
});
