// Retrying UNAVAILABLE on idempotent calls. connect-es has no gRPC service config, so this
// is what grpc-go and grpcio would do from one: exponential backoff with jitter, bounded
// attempts, never past the caller's deadline or abort signal.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

export interface RetryOptions {
  /** Attempts in all, the first included (default 5; 1 disables retries). */
  maxAttempts?: number;
  /** Wait before the first retry (default 100 ms); doubles after each, with jitter. */
  initialBackoffMs?: number;
  /** The longest wait between attempts (default 2000 ms). */
  maxBackoffMs?: number;
}

const DEFAULTS: Required<RetryOptions> = { maxAttempts: 5, initialBackoffMs: 100, maxBackoffMs: 2000 };

/** The wait before retry number `retry` (0-based): full jitter over an exponential cap. */
export function backoffMs(retry: number, options: RetryOptions = {}): number {
  const { initialBackoffMs, maxBackoffMs } = { ...DEFAULTS, ...options };
  const cap = Math.min(maxBackoffMs, initialBackoffMs * 2 ** retry);
  return cap / 2 + Math.random() * (cap / 2);
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Calls `fn` until it does not fail with UNAVAILABLE, at most `maxAttempts` times. Only
 * for calls that are safe to repeat: reads, and writes that carry a `request_id`.
 */
export async function retryUnavailable<T>(
  fn: () => Promise<T>,
  options: RetryOptions & { signal?: AbortSignal } = {},
): Promise<T> {
  const maxAttempts = options.maxAttempts ?? DEFAULTS.maxAttempts;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= maxAttempts || ConnectError.from(err).code !== Code.Unavailable) throw err;
      await sleep(backoffMs(attempt - 1, options), options.signal);
    }
  }
}

/** Methods that only read (or probe), so repeating them changes nothing. */
const READ_ONLY = /^(Get|List|Check|Preview)/;

/**
 * Whether a unary call may be sent again: a read, or a create/run that carries a
 * `request_id` (the server answers a repeat with the first response). RunWorkflow
 * without a request_id is never retried: it could run the workflow twice.
 */
export function isIdempotent(methodName: string, message: unknown): boolean {
  if (READ_ONLY.test(methodName)) return true;
  const requestId = (message as { requestId?: unknown } | undefined)?.requestId;
  return typeof requestId === "string" && requestId !== "";
}

/**
 * An interceptor retrying unary idempotent calls that fail with UNAVAILABLE, within the
 * call's own deadline (the backoff sleeps stop when the call's signal aborts).
 */
export function retryInterceptor(options: RetryOptions = {}): Interceptor {
  return (next) => async (req) => {
    if (req.stream || !isIdempotent(req.method.name, req.message)) return next(req);
    return retryUnavailable(() => next(req), { ...options, signal: req.signal });
  };
}
