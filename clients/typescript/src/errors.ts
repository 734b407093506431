// Reading the google.rpc details the server attaches to every error (ErrorInfo always,
// BadRequest for bad input). connect-es decodes grpc-status-details-bin itself; the
// generated schemas of google/rpc/error_details.proto tell it which details to pick.
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  type BadRequest_FieldViolation,
  type ErrorInfo,
} from "./gen/google/rpc/error_details_pb.js";

/** The ErrorInfo of an error (reason, domain `spark.automagik.dev`, metadata), if any. */
export function errorInfo(err: unknown): ErrorInfo | undefined {
  return ConnectError.from(err).findDetails(ErrorInfoSchema)[0];
}

/** Every BadRequest field violation of an error, in the order the server sent them. */
export function fieldViolations(err: unknown): BadRequest_FieldViolation[] {
  return ConnectError.from(err).findDetails(BadRequestSchema).flatMap((bad) => bad.fieldViolations);
}

/** field -> description of every violation, for quick checks and messages. */
export function fieldViolationMap(err: unknown): Record<string, string> {
  return Object.fromEntries(fieldViolations(err).map((v) => [v.field, v.description]));
}

/** Whether `err` is a ConnectError with this code (e.g. `hasCode(err, Code.NotFound)`). */
export function hasCode(err: unknown, code: Code): boolean {
  return err instanceof ConnectError && err.code === code;
}
