// One line per task event, for logs and examples.
import { LogLevel, TaskState, type TaskEvent } from "./gen/spark/v1/task_pb.js";

/** e.g. `#3 state QUEUED -> RUNNING (attempt 1)`, `#5 output "Hello, "`. */
export function describeEvent(event: TaskEvent): string {
  const head = `#${event.sequence}`;
  const kind = event.kind;
  switch (kind.case) {
    case "stateChange": {
      const { fromState, toState, attempt, error } = kind.value;
      const from = fromState === TaskState.UNSPECIFIED ? "" : `${TaskState[fromState]} `;
      const why = error ? ` [${error.kind}: ${error.message}]` : "";
      return `${head} state ${from}-> ${TaskState[toState]}${attempt ? ` (attempt ${attempt})` : ""}${why}`;
    }
    case "progress":
      return `${head} progress ${kind.value.fraction >= 0 ? kind.value.fraction.toFixed(2) : "?"} ${kind.value.message}`;
    case "log":
      return `${head} log ${LogLevel[kind.value.level]} ${kind.value.message}`;
    case "outputChunk":
      return `${head} output ${JSON.stringify(kind.value.text)}`;
    default:
      return `${head} (unknown event)`;
  }
}

/** Whether a state is terminal: SUCCEEDED, FAILED, CANCELLED or TIMED_OUT. */
export function isTerminal(state: TaskState): boolean {
  return [TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT].includes(state);
}
