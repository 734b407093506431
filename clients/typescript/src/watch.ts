// Following a task, or every task, across dropped connections and server restarts. The
// server's streams never lose or repeat an event; these loops reconnect from the last
// sequence (WatchTask) or cursor (WatchTasks) so the caller's view does not either.
import { Code, ConnectError } from "@connectrpc/connect";
import type { TaskEvent } from "./gen/spark/v1/task_pb.js";
import type { TaskChange, TaskFilter } from "./gen/spark/v1/task_service_pb.js";
import type { SparkClient } from "./client.js";
import { backoffMs, sleep, type RetryOptions } from "./retry.js";

/** Codes a stream ends with when its connection, not the request, failed: the server
 * shutting down (UNAVAILABLE), a reset connection (connect-node reports ABORTED) or an
 * HTTP/2 stream torn down mid-message (INTERNAL). Resuming a watch is always safe. */
const RESUMABLE = new Set([Code.Unavailable, Code.Aborted, Code.Internal]);

export interface ResumeOptions {
  /** Stop the watch (the promise rejects with the signal's reason). */
  signal?: AbortSignal;
  /** Reconnections in a row without receiving anything before giving up (default 10). */
  maxReconnects?: number;
  /** Backoff between reconnections (default 100 ms doubling to 2 s, with jitter). */
  backoff?: RetryOptions;
  /** Called before each reconnection, with the error that ended the previous stream. */
  onReconnect?: (err: ConnectError, attempt: number) => void;
}

export interface WatchTaskOptions extends ResumeOptions {
  /** Only events after this sequence (0, the default, replays the whole history). */
  afterSequence?: bigint | number;
  /** Called for every event, in sequence order, once each. */
  onEvent?: (event: TaskEvent) => void | Promise<void>;
}

export interface WatchTaskResult {
  /** The last event: the one that put the task in its terminal state. */
  lastEvent?: TaskEvent;
  /** Its sequence (or afterSequence when nothing came). */
  lastSequence: bigint;
  /** How many times the stream was reopened. */
  reconnects: number;
}

/** Runs `open` until it returns; reopens it after a resumable error, with backoff. */
async function resumeLoop(
  options: ResumeOptions,
  open: (progress: () => void) => Promise<void>,
): Promise<number> {
  const maxReconnects = options.maxReconnects ?? 10;
  let failures = 0;
  let reconnects = 0;
  for (;;) {
    try {
      await open(() => (failures = 0));
      return reconnects;
    } catch (err) {
      const ce = ConnectError.from(err);
      if (options.signal?.aborted || !RESUMABLE.has(ce.code) || failures >= maxReconnects) throw ce;
      reconnects++; // not inside the optional call: `?.` would skip evaluating it
      options.onReconnect?.(ce, reconnects);
      await sleep(backoffMs(failures++, options.backoff), options.signal);
    }
  }
}

/**
 * Streams a task's events to `onEvent` until its terminal event (the server then ends
 * the stream OK), resuming with `after_sequence` = the last sequence received whenever
 * the connection drops. The stream has no deadline; stop it with `signal`.
 */
export async function watchTask(
  client: Pick<SparkClient, "tasks">,
  taskId: string,
  options: WatchTaskOptions = {},
): Promise<WatchTaskResult> {
  let lastSequence = BigInt(options.afterSequence ?? 0);
  let lastEvent: TaskEvent | undefined;
  const reconnects = await resumeLoop(options, async (progress) => {
    const stream = client.tasks.watchTask(
      { taskId, afterSequence: lastSequence },
      { signal: options.signal, timeoutMs: 0 },
    );
    for await (const res of stream) {
      progress();
      if (res.kind.case !== "event") continue; // a heartbeat
      // The server never repeats an event; this guards the caller against a replay all the same.
      if (res.kind.value.sequence <= lastSequence) continue;
      lastEvent = res.kind.value;
      lastSequence = lastEvent.sequence;
      await options.onEvent?.(lastEvent);
    }
  });
  return { lastEvent, lastSequence, reconnects };
}

export interface WatchTasksOptions extends ResumeOptions {
  /** Which tasks to follow (every set field must match). */
  filter?: Partial<Pick<TaskFilter, "workflowId" | "scheduleId" | "states">>;
  /** Resume after this cursor; empty to start at the current end of the feed. */
  cursor?: string;
  /** Called for every state change, once each, with the cursor after it. */
  onChange: (change: TaskChange, cursor: string) => void | Promise<void>;
}

/**
 * Follows the state changes of every task matching `filter`, resuming from the last
 * cursor after a dropped connection. Runs until `signal` aborts (the promise then
 * rejects with its reason) or the server ends the stream; resolves with the last cursor.
 */
export async function watchTasks(client: Pick<SparkClient, "tasks">, options: WatchTasksOptions): Promise<string> {
  let cursor = options.cursor ?? "";
  await resumeLoop(options, async (progress) => {
    const stream = client.tasks.watchTasks(
      { filter: options.filter ?? {}, cursor },
      { signal: options.signal, timeoutMs: 0 },
    );
    for await (const res of stream) {
      progress();
      if (res.cursor) cursor = res.cursor; // heartbeats carry the cursor too
      if (res.kind.case === "change") await options.onChange(res.kind.value, cursor);
    }
  });
  return cursor;
}
