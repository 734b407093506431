// RunWorkflow, safely repeatable: never without a request_id.
import { create } from "@bufbuild/protobuf";
import type { CallOptions } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import type { Task } from "./gen/spark/v1/task_pb.js";
import { RunWorkflowRequestSchema, type RunWorkflowRequest } from "./gen/spark/v1/workflow_service_pb.js";
import type { SparkClient } from "./client.js";
import { retryUnavailable, type RetryOptions } from "./retry.js";

/**
 * Runs a workflow with a request_id (a new UUID unless the request has one), retrying
 * UNAVAILABLE with that same id: the server answers a repeat with the task of the first
 * call, so a retry never runs the workflow twice. Keep the id to retry later yourself.
 */
export async function runWorkflowIdempotent(
  client: Pick<SparkClient, "workflows">,
  request: Partial<Omit<RunWorkflowRequest, "$typeName" | "$unknown">> & { workflowId: string },
  options: CallOptions & { retry?: RetryOptions } = {},
): Promise<Task> {
  const message = create(RunWorkflowRequestSchema, { ...request, requestId: request.requestId || randomUUID() });
  const { retry, ...callOptions } = options;
  const res = await retryUnavailable(() => client.workflows.runWorkflow(message, callOptions), {
    ...retry,
    signal: callOptions.signal,
  });
  if (!res.task) throw new Error("RunWorkflow answered without a task");
  return res.task;
}
