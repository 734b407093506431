// @spark-grpc/client: the generated spark.v1 messages and services, and the thin layer
// generation does not give (connection, API key, deadlines, retries, resumable streams,
// error details).
export * from "./client.js";
export * from "./env.js";
export * from "./errors.js";
export * from "./format.js";
export * from "./retry.js";
export * from "./watch.js";
export * from "./workflows.js";

export * from "./gen/spark/v1/component_pb.js";
export * from "./gen/spark/v1/schedule_pb.js";
export * from "./gen/spark/v1/schedule_service_pb.js";
export * from "./gen/spark/v1/source_pb.js";
export * from "./gen/spark/v1/source_service_pb.js";
export * from "./gen/spark/v1/task_pb.js";
export * from "./gen/spark/v1/task_service_pb.js";
export * from "./gen/spark/v1/workflow_pb.js";
export * from "./gen/spark/v1/workflow_service_pb.js";
export * from "./gen/google/rpc/error_details_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";
