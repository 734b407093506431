// The five things users do first, against a live server with the demo source:
// add a source, import a workflow, run it, watch its progress to the end, schedule it.
//
//   make run                                   # in the repository root, another terminal
//   npm run build && node dist/examples/quickstart.js
//
// Env: SPARK_ADDRESS (default http://127.0.0.1:50051), SPARK_API_KEY, SPARK_TLS_CA
// (SPARK_TLS_CERT / SPARK_TLS_KEY for mTLS), SPARK_DEMO_SOURCE_URL (default
// http://127.0.0.1:7860/langflow). Exits 0 when the run SUCCEEDED. Safe to re-run.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { pathToFileURL } from "node:url";
import {
  Code,
  ConnectError,
  OverlapPolicy,
  SourceType,
  TaskState,
  createSparkClient,
  describeEvent,
  errorInfo,
  optionsFromEnv,
  runWorkflowIdempotent,
  watchTask,
  type Schedule,
  type SparkClient,
  type Source,
  type Workflow,
} from "../src/index.js";

/** The demo LangFlow's echo flow. */
export const ECHO_FLOW_ID = "8f14e45f-ceea-467f-a5b8-1c2d3e4f5a01";

/** 1. Add the source, or find it when a previous run added it (ALREADY_EXISTS). */
export async function addSource(client: SparkClient, url: string): Promise<Source> {
  try {
    const res = await client.sources.createSource({
      source: { displayName: "Demo LangFlow", type: SourceType.LANGFLOW, url },
    });
    return res.source!;
  } catch (err) {
    if (!(err instanceof ConnectError) || err.code !== Code.AlreadyExists) throw err;
    const same = (u: string) => u.replace(/\/+$/, "") === url.replace(/\/+$/, "");
    let pageToken = "";
    do {
      const page = await client.sources.listSources({ type: SourceType.LANGFLOW, pageToken });
      const found = page.sources.find((s) => same(s.url));
      if (found) return found;
      pageToken = page.nextPageToken;
    } while (pageToken);
    throw new Error(`CreateSource said ${errorInfo(err)?.reason ?? "ALREADY_EXISTS"} but no source has url ${url}`);
  }
}

/** 2. Import a remote flow as a workflow (importing again updates it in place). */
export async function importWorkflow(client: SparkClient, sourceId: string): Promise<Workflow> {
  const res = await client.workflows.importWorkflow({ sourceId, remoteFlowId: ECHO_FLOW_ID, tags: ["quickstart"] });
  return res.workflow!;
}

/** 5. A schedule for every day at 09:00 Paris time (reused when one exists). */
export async function scheduleDaily(client: SparkClient, workflowId: string): Promise<Schedule> {
  const { schedules } = await client.schedules.listSchedules({ workflowId });
  if (schedules.length > 0) return schedules[0]!;
  const res = await client.schedules.createSchedule({
    schedule: {
      workflowId,
      displayName: "quickstart daily",
      inputValue: "Good morning",
      spec: { kind: { case: "cron", value: { expression: "0 9 * * *", timeZone: "Europe/Paris" } } },
      overlapPolicy: OverlapPolicy.SKIP,
    },
  });
  return res.schedule!;
}

export async function main(): Promise<number> {
  const options = optionsFromEnv();
  const sourceUrl = process.env.SPARK_DEMO_SOURCE_URL || "http://127.0.0.1:7860/langflow";
  const client = createSparkClient(options);
  try {
    console.log(`connected to ${options.baseUrl}${options.apiKey ? " with an API key" : ""}`);

    const source = await addSource(client, sourceUrl);
    console.log(`source   ${source.id} ${source.displayName} (${source.url})`);

    const workflow = await importWorkflow(client, source.id);
    console.log(`workflow ${workflow.id} ${workflow.displayName}`);

    // 3. Run it: with a request_id, so a retry after a dropped connection runs it once.
    const task = await runWorkflowIdempotent(client, { workflowId: workflow.id, inputValue: "Hello from TypeScript" });
    console.log(`task     ${task.id} ${TaskState[task.state]}`);

    // 4. Watch its events to the end; the stream resumes by itself if the connection drops.
    const watched = await watchTask(client, task.id, { onEvent: (e) => console.log(`event    ${describeEvent(e)}`) });
    const done = (await client.tasks.getTask({ id: task.id })).task!;
    console.log(`result   ${TaskState[done.state]} ${JSON.stringify(done.outputText)} (last event #${watched.lastSequence}${watched.reconnects ? `, ${watched.reconnects} reconnects` : ""})`);

    const schedule = await scheduleDaily(client, workflow.id);
    console.log(`schedule ${schedule.id} next fire ${schedule.nextFireTime ? timestampDate(schedule.nextFireTime).toISOString() : "none"}`);

    return done.state === TaskState.SUCCEEDED ? 0 : 1;
  } finally {
    client.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      const ce = ConnectError.from(err);
      console.error(`quickstart failed: [${Code[ce.code]}] ${ce.rawMessage}${errorInfo(ce) ? ` (${errorInfo(ce)!.reason})` : ""}`);
      process.exit(1);
    },
  );
}
