// Against a live server: only when SPARK_ADDRESS is set (tests/e2e/test_client_typescript.py
// sets it; or `make run` and SPARK_ADDRESS=http://127.0.0.1:50051 npm test).
//   SPARK_ADDRESS, SPARK_API_KEY, SPARK_TLS_CA ...   the server under test (see src/env.ts)
//   SPARK_DEMO_SOURCE_URL                            its demo LangFlow (default :7860/langflow)
//   SPARK_SECURED_ADDRESS, SPARK_SECURED_API_KEY     a server with SPARK_AUTH_MODE=required
//   SPARK_SECURED_TLS_CA (optional)                  and a key of it (UNAUTHENTICATED test);
//                                                    the CA file when it serves TLS
import { equals } from "@bufbuild/protobuf";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { addSource, importWorkflow } from "../examples/quickstart.js";
import {
  Code,
  ConnectError,
  TaskEventSchema,
  TaskState,
  createSparkClient,
  errorInfo,
  fieldViolationMap,
  optionsFromEnv,
  runWorkflowIdempotent,
  watchTask,
  watchTasks,
  type SparkClient,
  type TaskEvent,
} from "../src/index.js";

const live = Boolean(process.env.SPARK_ADDRESS);
const skip = live ? false : "SPARK_ADDRESS is not set (no live server)";
const sourceUrl = process.env.SPARK_DEMO_SOURCE_URL || "http://127.0.0.1:7860/langflow";
const DOMAIN = "spark.automagik.dev";

let client: SparkClient;
let workflowId = "";

/** Changes how the demo / fake source behaves (delay_s, reset...); false if it cannot. */
async function fakeConfig(body: Record<string, unknown>): Promise<boolean> {
  try {
    const res = await fetch(`${sourceUrl}/_fake/config`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return res.ok;
  } catch {
    return false;
  }
}

async function expectCode(promise: Promise<unknown>, code: Code): Promise<ConnectError> {
  try {
    await promise;
  } catch (err) {
    const ce = ConnectError.from(err);
    assert.equal(Code[ce.code], Code[code], ce.message);
    return ce;
  }
  assert.fail(`expected ${Code[code]}, the call succeeded`);
}

async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream) void _;
}

async function allEvents(taskId: string): Promise<TaskEvent[]> {
  const events: TaskEvent[] = [];
  let pageToken = "";
  do {
    const page = await client.tasks.listTaskEvents({ taskId, pageToken, pageSize: 1000 });
    events.push(...page.events);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return events;
}

function assertSameEvents(got: TaskEvent[], stored: TaskEvent[]): void {
  assert.deepEqual(got.map((e) => e.sequence), stored.map((e) => e.sequence));
  got.forEach((e, i) => assert.ok(equals(TaskEventSchema, e, stored[i]!), `event #${e.sequence} differs`));
}

before(async () => {
  if (!live) return;
  client = createSparkClient(optionsFromEnv());
  const source = await addSource(client, sourceUrl);
  workflowId = (await importWorkflow(client, source.id)).id;
});

after(() => client?.close());

test("the quickstart flow: run with a request_id, watch to SUCCEEDED", { skip }, async () => {
  const requestId = randomUUID();
  const task = await runWorkflowIdempotent(client, { workflowId, inputValue: "Hello from node:test", requestId });
  const again = await runWorkflowIdempotent(client, { workflowId, inputValue: "Hello from node:test", requestId });
  assert.equal(again.id, task.id, "the same request_id returns the same task");

  const events: TaskEvent[] = [];
  const result = await watchTask(client, task.id, { onEvent: (e) => void events.push(e) });
  assert.equal(result.lastEvent?.kind.case, "stateChange");
  assert.equal(result.lastEvent?.kind.value.toState, TaskState.SUCCEEDED);
  assert.deepEqual(events.map((e) => Number(e.sequence)), events.map((_, i) => i + 1), "1, 2, 3 ... without gaps");
  assertSameEvents(events, await allEvents(task.id));
  const done = (await client.tasks.getTask({ id: task.id })).task!;
  assert.equal(done.state, TaskState.SUCCEEDED);
  assert.equal(done.outputText, "Hello from node:test");
});

test("NOT_FOUND carries an ErrorInfo", { skip }, async () => {
  const err = await expectCode(client.workflows.getWorkflow({ id: randomUUID() }), Code.NotFound);
  assert.equal(errorInfo(err)?.reason, "WORKFLOW_NOT_FOUND");
  assert.equal(errorInfo(err)?.domain, DOMAIN);
  await expectCode(drain(client.tasks.watchTask({ taskId: randomUUID() })), Code.NotFound);
});

test("INVALID_ARGUMENT names the bad fields in BadRequest details", { skip }, async () => {
  const err = await expectCode(client.workflows.getWorkflow({ id: "not-a-uuid" }), Code.InvalidArgument);
  assert.match(fieldViolationMap(err)["id"] ?? "", /UUID/);
  assert.equal(errorInfo(err)?.reason, "INVALID_ARGUMENT");

  const bad = await expectCode(
    client.workflows.runWorkflow({ workflowId: "nope", timeout: { seconds: -1n }, requestId: randomUUID() }),
    Code.InvalidArgument,
  );
  assert.ok(Object.keys(fieldViolationMap(bad)).length >= 1, JSON.stringify(fieldViolationMap(bad)));
});

test("UNAUTHENTICATED without a valid API key on a secured server", {
  skip: process.env.SPARK_SECURED_ADDRESS ? false : "SPARK_SECURED_ADDRESS is not set",
}, async () => {
  const env = {
    SPARK_ADDRESS: process.env.SPARK_SECURED_ADDRESS,
    SPARK_TLS_CA: process.env.SPARK_SECURED_TLS_CA,
  };
  for (const apiKey of [undefined, "spk_nope_nope", "not-a-key"]) {
    const anonymous = createSparkClient({ ...optionsFromEnv(env), apiKey, retry: false });
    try {
      const err = await expectCode(anonymous.sources.listSources({}), Code.Unauthenticated);
      if (!apiKey) assert.match(err.rawMessage, /authorization: Bearer/);
      assert.equal(errorInfo(err)?.domain, DOMAIN);
    } finally {
      anonymous.close();
    }
  }
  const keyed = createSparkClient({ ...optionsFromEnv(env), apiKey: process.env.SPARK_SECURED_API_KEY });
  try {
    await keyed.sources.listSources({});
  } finally {
    keyed.close();
  }
});

test("DEADLINE_EXCEEDED when a call outlives its timeout", { skip }, async () => {
  // A stream that never ends by itself, with a deadline.
  const stream = client.tasks.watchTasks({ filter: { workflowId } }, { timeoutMs: 300 });
  await expectCode(drain(stream), Code.DeadlineExceeded);
  // A unary call to a slow source (the demo / fake source can be told to be slow): the
  // server cuts its source call to the propagated deadline (grpc-timeout).
  if (await fakeConfig({ delay_s: 2 })) {
    try {
      const { sources } = await client.sources.listSources({});
      const source = sources.find((s) => s.url.replace(/\/+$/, "") === sourceUrl.replace(/\/+$/, ""))!;
      const err = await expectCode(
        client.sources.listRemoteFlows({ sourceId: source.id }, { timeoutMs: 500 }),
        Code.DeadlineExceeded,
      );
      assert.match(err.rawMessage, /within|timed out/);
    } finally {
      await fakeConfig({ reset: true });
    }
  }
});

test("a stream cut mid-run resumes from the last sequence: nothing lost, nothing twice", { skip }, async () => {
  const slow = await fakeConfig({ delay_s: 1.5 }); // keeps the task RUNNING while we cut
  try {
    // 1. By hand: abort the connection under a raw WatchTask, resume with after_sequence.
    const task = await runWorkflowIdempotent(client, { workflowId, inputValue: "one two three four five six" });
    const got: TaskEvent[] = [];
    const cutter = createSparkClient(optionsFromEnv());
    try {
      for await (const res of cutter.tasks.watchTask({ taskId: task.id }, { timeoutMs: 0 })) {
        if (res.kind.case === "event") got.push(res.kind.value);
        if (got.length === 3) cutter.close(); // the connection goes away mid-stream
      }
      assert.fail("the stream should have failed");
    } catch (err) {
      assert.equal(ConnectError.from(err).code, Code.Canceled, String(err));
    }
    assert.equal(got.length, 3);
    await watchTask(client, task.id, { afterSequence: got.at(-1)!.sequence, onEvent: (e) => void got.push(e) });
    assertSameEvents(got, await allEvents(task.id));
    if (slow) assert.ok(got.length > 4, "events arrived after the cut");

    // 2. watchTask itself: the connection drops (UNAVAILABLE) and the helper resumes.
    const task2 = await runWorkflowIdempotent(client, { workflowId, inputValue: "seven eight nine" });
    const own = createSparkClient(optionsFromEnv());
    const got2: TaskEvent[] = [];
    try {
      const result = await watchTask(own, task2.id, {
        onEvent: (e) => {
          got2.push(e);
          if (got2.length === 2) own.sessionManager.abort(new ConnectError("connection lost", Code.Unavailable));
        },
      });
      assert.equal(result.reconnects, 1, `events ${got2.map((e) => e.sequence).join(",")}`);
      assert.equal(result.lastEvent?.kind.value?.$typeName, "spark.v1.TaskStateChange");
    } finally {
      own.close();
    }
    assertSameEvents(got2, await allEvents(task2.id));
  } finally {
    if (slow) await fakeConfig({ reset: true });
  }
});

test("watchTasks follows state changes with a cursor and resumes after a cut", { skip }, async () => {
  const own = createSparkClient(optionsFromEnv());
  const controller = new AbortController();
  const states = new Map<string, string[]>(); // task id -> the states the feed showed
  let taskId = "";
  let reconnects = 0;
  const feed = watchTasks(own, {
    filter: { workflowId },
    signal: controller.signal,
    backoff: { initialBackoffMs: 50 },
    onReconnect: () => void reconnects++,
    onChange: (change) => {
      const e = change.event!;
      if (e.kind.case !== "stateChange") return;
      const seen = states.get(e.taskId) ?? [];
      states.set(e.taskId, [...seen, TaskState[e.kind.value.toState]]);
      // Cut the connection after the first change: the rest must come after the resume.
      if (reconnects === 0) own.sessionManager.abort(new ConnectError("connection lost", Code.Unavailable));
      if (e.taskId === taskId && e.kind.value.toState === TaskState.SUCCEEDED) controller.abort();
    },
  }).catch((err: unknown) => err);
  await new Promise((r) => setTimeout(r, 300)); // the feed starts at its current end
  taskId = (await runWorkflowIdempotent(client, { workflowId, inputValue: "feed" })).id;
  const timer = setTimeout(() => controller.abort(new Error("no SUCCEEDED within 20 s")), 20_000);
  const outcome = await feed;
  clearTimeout(timer);
  own.close();
  assert.equal(ConnectError.from(outcome).code, Code.Canceled, String(outcome));
  assert.ok(reconnects >= 1, "the feed was cut and resumed");
  // Exactly the task's stored state changes (PENDING, usually QUEUED, RUNNING, SUCCEEDED:
  // a worker may start the task before it is marked QUEUED), none lost or repeated.
  const stored = (await allEvents(taskId)).flatMap((e) =>
    e.kind.case === "stateChange" ? [TaskState[e.kind.value.toState]] : [],
  );
  assert.deepEqual(states.get(taskId), stored);
  assert.equal(stored.at(-1), "SUCCEEDED");
});
