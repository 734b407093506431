// The thin layer against in-memory services (no server): retries, resumable streams,
// error details.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  TaskEventSchema,
  TaskService,
  TaskState,
  WatchTasksResponseSchema,
  WorkflowService,
  fieldViolationMap,
  errorInfo,
  isIdempotent,
  retryInterceptor,
  runWorkflowIdempotent,
  watchTask,
  watchTasks,
  type TaskEvent,
} from "../src/index.js";

const fast = { initialBackoffMs: 1, maxBackoffMs: 2 };

function event(sequence: number, toState = TaskState.RUNNING): TaskEvent {
  return create(TaskEventSchema, {
    taskId: "t",
    sequence: BigInt(sequence),
    kind: { case: "stateChange", value: { toState } },
  });
}

test("reads and calls with a request_id are idempotent; RunWorkflow without one is not", () => {
  assert.ok(isIdempotent("GetTask", {}));
  assert.ok(isIdempotent("ListTaskEvents", {}));
  assert.ok(isIdempotent("CheckSource", {}));
  assert.ok(isIdempotent("RunWorkflow", { requestId: "r-1" }));
  assert.ok(!isIdempotent("RunWorkflow", { requestId: "" }));
  assert.ok(!isIdempotent("CancelTask", {}));
  assert.ok(!isIdempotent("TriggerSchedule", {}));
});

test("UNAVAILABLE is retried on idempotent calls only, with the same request_id", async () => {
  const seen: { method: string; requestId: string }[] = [];
  const transport = createRouterTransport(
    (router) => {
      router.service(WorkflowService, {
        runWorkflow(req) {
          seen.push({ method: "run", requestId: req.requestId });
          if (seen.length < 3) throw new ConnectError("restarting", Code.Unavailable);
          return { task: { id: "task-1", state: TaskState.QUEUED } };
        },
      });
    },
    { transport: { interceptors: [retryInterceptor(fast)] } },
  );
  const workflows = createClient(WorkflowService, transport);

  const task = await runWorkflowIdempotent({ workflows }, { workflowId: "w" }, { retry: { maxAttempts: 1 } });
  assert.equal(task.id, "task-1");
  assert.equal(seen.length, 3, "the interceptor retried twice");
  assert.equal(new Set(seen.map((s) => s.requestId)).size, 1, "every attempt carries the same request_id");
  assert.notEqual(seen[0]!.requestId, "");

  seen.length = 0;
  await assert.rejects(workflows.runWorkflow({ workflowId: "w" }), (err: ConnectError) => err.code === Code.Unavailable);
  assert.equal(seen.length, 1, "RunWorkflow without a request_id is sent once");
});

test("watchTask resumes after a dropped stream from the last sequence", async () => {
  const requests: bigint[] = [];
  const transport = createRouterTransport((router) => {
    router.service(TaskService, {
      async *watchTask(req) {
        requests.push(req.afterSequence);
        if (requests.length === 1) {
          yield { kind: { case: "event", value: event(1) } };
          yield { kind: { case: "heartbeat", value: {} } };
          yield { kind: { case: "event", value: event(2) } };
          throw new ConnectError("server shutting down; resume after 2", Code.Unavailable);
        }
        for (let s = Number(req.afterSequence) + 1; s <= 4; s++) {
          yield { kind: { case: "event", value: event(s, s === 4 ? TaskState.SUCCEEDED : TaskState.RUNNING) } };
        }
      },
    });
  });
  const tasks = createClient(TaskService, transport);
  const got: bigint[] = [];
  const reconnects: Code[] = [];
  const result = await watchTask({ tasks }, "t", {
    onEvent: (e) => void got.push(e.sequence),
    onReconnect: (err) => void reconnects.push(err.code),
    backoff: fast,
  });
  assert.deepEqual(requests, [0n, 2n]);
  assert.deepEqual(got, [1n, 2n, 3n, 4n]);
  assert.deepEqual(reconnects, [Code.Unavailable]);
  assert.equal(result.lastSequence, 4n);
  assert.equal(result.reconnects, 1);
});

test("watchTask gives up on errors that are not about the connection", async () => {
  const transport = createRouterTransport((router) => {
    router.service(TaskService, {
      async *watchTask() {
        throw new ConnectError("no task has id t", Code.NotFound);
      },
    });
  });
  await assert.rejects(
    watchTask({ tasks: createClient(TaskService, transport) }, "t", { backoff: fast }),
    (err: ConnectError) => err.code === Code.NotFound,
  );
});

test("watchTasks resumes from the last cursor, heartbeats included", async () => {
  const cursors: string[] = [];
  const transport = createRouterTransport((router) => {
    router.service(TaskService, {
      async *watchTasks(req): AsyncGenerator<MessageInitShape<typeof WatchTasksResponseSchema>> {
        cursors.push(req.cursor);
        if (cursors.length === 1) {
          yield { kind: { case: "change", value: { event: event(1), workflowId: "w" } }, cursor: "c1" };
          yield { kind: { case: "heartbeat", value: {} }, cursor: "c2" };
          throw new ConnectError("connection reset", Code.Aborted);
        }
        yield { kind: { case: "change", value: { event: event(2), workflowId: "w" } }, cursor: "c3" };
      },
    });
  });
  const changes: string[] = [];
  const last = await watchTasks(
    { tasks: createClient(TaskService, transport) },
    { filter: { workflowId: "w" }, onChange: (_c, cursor) => void changes.push(cursor), backoff: fast },
  );
  assert.deepEqual(cursors, ["", "c2"]);
  assert.deepEqual(changes, ["c1", "c3"]);
  assert.equal(last, "c3");
});

test("field violations and ErrorInfo are read from the status details", async () => {
  const transport = createRouterTransport((router) => {
    router.service(TaskService, {
      getTask() {
        throw new ConnectError("invalid id", Code.InvalidArgument, undefined, [
          { desc: ErrorInfoSchema, value: { reason: "INVALID_ARGUMENT", domain: "spark.automagik.dev" } },
          { desc: BadRequestSchema, value: { fieldViolations: [{ field: "id", description: "must be a UUID" }] } },
        ]);
      },
    });
  });
  const err = await createClient(TaskService, transport).getTask({ id: "x" }).catch((e: unknown) => e);
  assert.deepEqual(fieldViolationMap(err), { id: "must be a UUID" });
  assert.equal(errorInfo(err)?.reason, "INVALID_ARGUMENT");
  assert.equal(errorInfo(err)?.domain, "spark.automagik.dev");
});

test("the API key interceptor sends authorization: Bearer", async () => {
  const { apiKeyInterceptor } = await import("../src/client.js");
  let seen = "";
  const spy: Interceptor = (next) => (req) => {
    seen = req.header.get("authorization") ?? "";
    return next(req);
  };
  const transport = createRouterTransport(
    (router) => router.service(TaskService, { getTask: () => ({}) }),
    { transport: { interceptors: [apiKeyInterceptor("sk-123"), spy] } },
  );
  await createClient(TaskService, transport).getTask({ id: "x" });
  assert.equal(seen, "Bearer sk-123");
});
