// Client options from environment variables, as the example and the tests read them.
import { readFileSync } from "node:fs";
import type { SparkClientOptions } from "./client.js";

/**
 * SPARK_ADDRESS (`http://host:port`, `https://host:port` or `host:port`; default
 * http://127.0.0.1:50051), SPARK_API_KEY, SPARK_TLS_CA / SPARK_TLS_CERT / SPARK_TLS_KEY
 * (PEM file paths; CERT and KEY for mTLS) and SPARK_TLS_SERVER_NAME. A bare host:port is
 * plaintext unless a TLS file is given.
 */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): SparkClientOptions {
  const read = (name: string) => (env[name] ? readFileSync(env[name]) : undefined);
  const tls = {
    ca: read("SPARK_TLS_CA"),
    cert: read("SPARK_TLS_CERT"),
    key: read("SPARK_TLS_KEY"),
    servername: env.SPARK_TLS_SERVER_NAME || undefined,
  };
  const secure = tls.ca !== undefined || tls.cert !== undefined;
  let baseUrl = env.SPARK_ADDRESS || "http://127.0.0.1:50051";
  if (!/^https?:\/\//.test(baseUrl)) baseUrl = `${secure ? "https" : "http"}://${baseUrl}`;
  return { baseUrl, apiKey: env.SPARK_API_KEY || undefined, tls };
}
