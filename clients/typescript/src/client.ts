// createSparkClient: the four spark.v1 services over one gRPC (HTTP/2) connection, with an
// API key, TLS or mTLS, a default deadline, retries of idempotent calls and keepalive.
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import type { SecureClientSessionOptions } from "node:http2";
import { ScheduleService } from "./gen/spark/v1/schedule_service_pb.js";
import { SourceService } from "./gen/spark/v1/source_service_pb.js";
import { TaskService } from "./gen/spark/v1/task_service_pb.js";
import { WorkflowService } from "./gen/spark/v1/workflow_service_pb.js";
import { retryInterceptor, type RetryOptions } from "./retry.js";

export interface TlsOptions {
  /** PEM of the CA that signed the server's certificate (default: the system CAs). */
  ca?: string | Buffer;
  /** PEM client certificate and key, for servers that require mTLS. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** The name to verify the server's certificate against, when it differs from the host. */
  servername?: string;
}

export interface KeepaliveOptions {
  /** Ping after this long without reading from the connection (default 30 s; the server
   * accepts pings every 10 s or slower). */
  pingIntervalMs?: number;
  /** Close the connection (and fail its streams, which watchTask then resumes) when a ping
   * is not answered within this long (default 10 s). */
  pingTimeoutMs?: number;
  /** Close a connection without streams after this long (default 15 min). */
  idleConnectionTimeoutMs?: number;
}

export interface SparkClientOptions {
  /** `http://host:port` for plaintext (loopback), `https://host:port` for TLS.
   * Default http://127.0.0.1:50051 (`make run`). */
  baseUrl?: string;
  /** An API key (`spark-grpc keys create`), sent as `authorization: Bearer <key>`. */
  apiKey?: string;
  /** TLS settings for an https baseUrl. */
  tls?: TlsOptions;
  /** The deadline of every call that sets no `timeoutMs` of its own (default 30 s; 0 for
   * none). watchTask / watchTasks do not use it: their streams are meant to stay open. */
  defaultTimeoutMs?: number;
  /** Retries of UNAVAILABLE on idempotent unary calls; false to disable. */
  retry?: RetryOptions | false;
  keepalive?: KeepaliveOptions;
  /** More interceptors, run after the API key and retry ones. */
  interceptors?: Interceptor[];
}

export interface SparkClient {
  sources: Client<typeof SourceService>;
  workflows: Client<typeof WorkflowService>;
  tasks: Client<typeof TaskService>;
  schedules: Client<typeof ScheduleService>;
  transport: Transport;
  /** The HTTP/2 connection; `close()` ends it and every open call. */
  sessionManager: Http2SessionManager;
  close(): void;
}

/** The server's largest message (SPARK_MAX_MESSAGE_BYTES); connect-node's default is 4 MiB. */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** An interceptor sending `authorization: Bearer <apiKey>` on every call. */
export function apiKeyInterceptor(apiKey: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${apiKey}`);
    return next(req);
  };
}

export function createSparkClient(options: SparkClientOptions = {}): SparkClient {
  const baseUrl = options.baseUrl ?? "http://127.0.0.1:50051";
  const tls = options.tls ?? {};
  const nodeOptions: SecureClientSessionOptions = {};
  for (const key of ["ca", "cert", "key", "servername"] as const) {
    if (tls[key] !== undefined) Object.assign(nodeOptions, { [key]: tls[key] });
  }
  const sessionManager = new Http2SessionManager(
    baseUrl,
    {
      pingIntervalMs: options.keepalive?.pingIntervalMs ?? 30_000,
      pingTimeoutMs: options.keepalive?.pingTimeoutMs ?? 10_000,
      idleConnectionTimeoutMs: options.keepalive?.idleConnectionTimeoutMs ?? 15 * 60_000,
    },
    nodeOptions,
  );
  const interceptors: Interceptor[] = [];
  if (options.apiKey) interceptors.push(apiKeyInterceptor(options.apiKey));
  if (options.retry !== false) interceptors.push(retryInterceptor(options.retry ?? {}));
  interceptors.push(...(options.interceptors ?? []));

  const transport = createGrpcTransport({
    baseUrl,
    sessionManager,
    interceptors,
    // connect treats a default of 0 as "already expired": none is undefined.
    defaultTimeoutMs: options.defaultTimeoutMs === 0 ? undefined : (options.defaultTimeoutMs ?? 30_000),
    readMaxBytes: MAX_MESSAGE_BYTES,
    writeMaxBytes: MAX_MESSAGE_BYTES,
  });
  return {
    sources: createClient(SourceService, transport),
    workflows: createClient(WorkflowService, transport),
    tasks: createClient(TaskService, transport),
    schedules: createClient(ScheduleService, transport),
    transport,
    sessionManager,
    close: () => sessionManager.abort(),
  };
}
