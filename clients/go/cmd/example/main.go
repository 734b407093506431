// Command example does the five things users do first against a live spark-grpc server
// with the demo source: add a source, import a workflow, run it, watch its progress stream
// to the end, and create a schedule. It exits 0 when the task SUCCEEDED.
//
// Like a service, it gives every call a deadline, retries idempotent calls on UNAVAILABLE
// and resumes its stream after the last sequence it received, so it survives a server
// restart mid-run. Re-running it reuses the source, the workflow and the schedule.
//
//	go run ./cmd/example                       # plain text to 127.0.0.1:50051 (make run)
//	SPARK_ADDRESS=spark.example.com:443 SPARK_TLS_CA=ca.pem SPARK_API_KEY=... go run ./cmd/example
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sparkv1 "github.com/namastexlabs/spark-grpc/clients/go/gen/spark/v1"
	"github.com/namastexlabs/spark-grpc/clients/go/spark"
)

// EchoFlowID is the demo source's echo flow.
const EchoFlowID = "8f14e45f-ceea-467f-a5b8-1c2d3e4f5a01"

// scheduleName marks the example's schedule, so a re-run finds it instead of adding one.
const scheduleName = "Go example: daily at 09:00 UTC"

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	address := flag.String("address", env("SPARK_ADDRESS", "127.0.0.1:50051"), "server host:port ($SPARK_ADDRESS)")
	apiKey := flag.String("api-key", os.Getenv("SPARK_API_KEY"), "API key, sent as authorization: Bearer ($SPARK_API_KEY)")
	tlsCA := flag.String("tls-ca", os.Getenv("SPARK_TLS_CA"), "CA file of the server's certificate: connect with TLS ($SPARK_TLS_CA)")
	useTLS := flag.Bool("tls", os.Getenv("SPARK_TLS") == "1", "connect with TLS and the system roots ($SPARK_TLS=1)")
	sourceURL := flag.String("source-url", env("SPARK_DEMO_SOURCE_URL", "http://127.0.0.1:7860/langflow"), "the demo LangFlow ($SPARK_DEMO_SOURCE_URL)")
	flowID := flag.String("flow-id", EchoFlowID, "the remote flow to import")
	input := flag.String("input", "Hello from the Go client of Spark", "the run's input")
	callTimeout := flag.Duration("call-timeout", 10*time.Second, "deadline of each unary call")
	watchTimeout := flag.Duration("watch-timeout", 3*time.Minute, "deadline of the whole run, stream included")
	flag.Parse()

	opts := spark.Options{Address: *address, APIKey: *apiKey, DefaultTimeout: *callTimeout}
	if *tlsCA != "" || *useTLS {
		opts.TLS = &spark.TLSOptions{CAFile: *tlsCA}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *watchTimeout)
	defer cancel()
	client, err := spark.Dial(ctx, opts)
	if err != nil {
		fail("connect", err)
	}
	defer client.Close()
	ex := &example{client: client, callTimeout: *callTimeout}
	if err := ex.run(ctx, *sourceURL, *flowID, *input); err != nil {
		fail("", err)
	}
}

func fail(what string, err error) {
	if what != "" {
		err = fmt.Errorf("%s: %w", what, err)
	}
	fmt.Fprintln(os.Stderr, "error:", err)
	if info := spark.ErrorInfo(err); info != nil {
		fmt.Fprintf(os.Stderr, "  reason %s, metadata %v\n", info.GetReason(), info.GetMetadata())
	}
	for field, description := range spark.FieldViolations(err) {
		fmt.Fprintf(os.Stderr, "  field %s: %s\n", field, description)
	}
	os.Exit(1)
}

type example struct {
	client      *spark.Client
	callTimeout time.Duration
}

// call runs an idempotent call with its own deadline, retried on UNAVAILABLE.
func (e *example) call(ctx context.Context, fn func(ctx context.Context) error) error {
	return e.client.Retry(ctx, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, e.callTimeout)
		defer cancel()
		return fn(ctx)
	})
}

func (e *example) run(ctx context.Context, sourceURL, flowID, input string) error {
	// 1. Add the source (or find it: a URL is registered once).
	source, err := e.source(ctx, sourceURL)
	if err != nil {
		return fmt.Errorf("add the source: %w", err)
	}

	// 2. Import the flow; importing it again updates the workflow in place.
	var imported *sparkv1.ImportWorkflowResponse
	importReq := &sparkv1.ImportWorkflowRequest{
		SourceId: source.GetId(), RemoteFlowId: flowID, Tags: []string{"demo"}, RequestId: spark.NewRequestID(),
	}
	if err := e.call(ctx, func(ctx context.Context) (err error) {
		imported, err = e.client.Workflows.ImportWorkflow(ctx, importReq)
		return err
	}); err != nil {
		return fmt.Errorf("import the workflow: %w", err)
	}
	workflow := imported.GetWorkflow()
	fmt.Printf("workflow %s %q (%s)\n", workflow.GetId(), workflow.GetDisplayName(), map[bool]string{true: "created", false: "updated"}[imported.GetCreated()])

	// 3. Run it: RunWorkflow sets a request_id and retries with it, so it runs once.
	runCtx, cancel := context.WithTimeout(ctx, e.callTimeout)
	task, err := e.client.RunWorkflow(runCtx, &sparkv1.RunWorkflowRequest{WorkflowId: workflow.GetId(), InputValue: input})
	cancel()
	if err != nil {
		return fmt.Errorf("run the workflow: %w", err)
	}
	fmt.Printf("task %s %s\n", task.GetId(), short(task.GetState()))

	// 4. Watch its events to the end, resuming after the last one when the stream breaks.
	var last int64
	err = e.client.WatchTask(ctx, task.GetId(), 0, func(ev *sparkv1.TaskEvent) error {
		last = ev.GetSequence()
		fmt.Println(describe(ev))
		return nil
	}, spark.OnReconnect(func(err error, attempt int) {
		fmt.Printf("stream interrupted (%s: %s): resuming after sequence %d (try %d)\n",
			status.Code(err), status.Convert(err).Message(), last, attempt)
		// An idempotent call, retried until the server answers again.
		var got *sparkv1.GetTaskResponse
		if err := e.call(ctx, func(ctx context.Context) (err error) {
			got, err = e.client.Tasks.GetTask(ctx, &sparkv1.GetTaskRequest{Id: task.GetId()})
			return err
		}); err == nil {
			fmt.Printf("task %s is %s (server answering again)\n", task.GetId(), short(got.GetTask().GetState()))
		}
	}))
	if err != nil {
		return fmt.Errorf("watch the task: %w", err)
	}
	var done *sparkv1.GetTaskResponse
	if err := e.call(ctx, func(ctx context.Context) (err error) {
		done, err = e.client.Tasks.GetTask(ctx, &sparkv1.GetTaskRequest{Id: task.GetId()})
		return err
	}); err != nil {
		return fmt.Errorf("get the task: %w", err)
	}
	fmt.Printf("task %s %s output %q\n", task.GetId(), short(done.GetTask().GetState()), done.GetTask().GetOutputText())

	// 5. Schedule it every day at 09:00 UTC (once: a re-run finds the schedule).
	schedule, err := e.schedule(ctx, workflow.GetId(), input)
	if err != nil {
		return fmt.Errorf("create the schedule: %w", err)
	}
	fmt.Printf("schedule %s %q next fire %s\n", schedule.GetId(), schedule.GetDisplayName(),
		schedule.GetNextFireTime().AsTime().Format(time.RFC3339))

	if done.GetTask().GetState() != sparkv1.TaskState_TASK_STATE_SUCCEEDED {
		return fmt.Errorf("task %s ended %s: %s", task.GetId(), done.GetTask().GetState(), done.GetTask().GetError().GetMessage())
	}
	return nil
}

// source creates the LangFlow source at url, or finds it when the URL is taken.
func (e *example) source(ctx context.Context, url string) (*sparkv1.Source, error) {
	req := &sparkv1.CreateSourceRequest{
		Source: &sparkv1.Source{
			DisplayName: "Demo LangFlow", Type: sparkv1.SourceType_SOURCE_TYPE_LANGFLOW, Url: url,
		},
		RequestId: spark.NewRequestID(),
	}
	var created *sparkv1.CreateSourceResponse
	err := e.call(ctx, func(ctx context.Context) (err error) {
		created, err = e.client.Sources.CreateSource(ctx, req)
		return err
	})
	if err == nil {
		fmt.Printf("source %s %s (created)\n", created.GetSource().GetId(), url)
		return created.GetSource(), nil
	}
	if status.Code(err) != codes.AlreadyExists {
		return nil, err
	}
	taken := spark.ErrorInfo(err).GetMetadata()["url"]
	page := ""
	for {
		var list *sparkv1.ListSourcesResponse
		if err := e.call(ctx, func(ctx context.Context) (err error) {
			list, err = e.client.Sources.ListSources(ctx, &sparkv1.ListSourcesRequest{PageSize: 100, PageToken: page})
			return err
		}); err != nil {
			return nil, err
		}
		for _, s := range list.GetSources() {
			if s.GetUrl() == taken || strings.TrimRight(s.GetUrl(), "/") == strings.TrimRight(url, "/") {
				fmt.Printf("source %s %s (existing)\n", s.GetId(), s.GetUrl())
				return s, nil
			}
		}
		if page = list.GetNextPageToken(); page == "" {
			return nil, errors.New("the source URL is taken but no listed source has it")
		}
	}
}

// schedule returns the example's daily schedule of the workflow, creating it once.
func (e *example) schedule(ctx context.Context, workflowID, input string) (*sparkv1.Schedule, error) {
	var list *sparkv1.ListSchedulesResponse
	if err := e.call(ctx, func(ctx context.Context) (err error) {
		list, err = e.client.Schedules.ListSchedules(ctx, &sparkv1.ListSchedulesRequest{WorkflowId: workflowID, PageSize: 1000})
		return err
	}); err != nil {
		return nil, err
	}
	for _, s := range list.GetSchedules() {
		if s.GetDisplayName() == scheduleName {
			fmt.Printf("schedule %s (existing)\n", s.GetId())
			return s, nil
		}
	}
	req := &sparkv1.CreateScheduleRequest{
		Schedule: &sparkv1.Schedule{
			DisplayName: scheduleName,
			WorkflowId:  workflowID,
			InputValue:  input,
			Spec: &sparkv1.ScheduleSpec{Kind: &sparkv1.ScheduleSpec_Cron{
				Cron: &sparkv1.CronSpec{Expression: "0 9 * * *", TimeZone: "UTC"},
			}},
			OverlapPolicy: sparkv1.OverlapPolicy_OVERLAP_POLICY_SKIP,
		},
		RequestId: spark.NewRequestID(),
	}
	var created *sparkv1.CreateScheduleResponse
	if err := e.call(ctx, func(ctx context.Context) (err error) {
		created, err = e.client.Schedules.CreateSchedule(ctx, req)
		return err
	}); err != nil {
		return nil, err
	}
	fmt.Printf("schedule %s (created)\n", created.GetSchedule().GetId())
	return created.GetSchedule(), nil
}

// describe renders one event on one line.
func describe(ev *sparkv1.TaskEvent) string {
	head := fmt.Sprintf("event %d", ev.GetSequence())
	switch k := ev.GetKind().(type) {
	case *sparkv1.TaskEvent_StateChange:
		s := fmt.Sprintf("%s state %s -> %s attempt %d", head, short(k.StateChange.GetFromState()), short(k.StateChange.GetToState()), k.StateChange.GetAttempt())
		if msg := k.StateChange.GetError().GetMessage(); msg != "" {
			s += ": " + msg
		}
		return s
	case *sparkv1.TaskEvent_Progress:
		return fmt.Sprintf("%s progress %.0f%% %s", head, 100*k.Progress.GetFraction(), k.Progress.GetMessage())
	case *sparkv1.TaskEvent_Log:
		return fmt.Sprintf("%s log %s %s", head, k.Log.GetLevel(), k.Log.GetMessage())
	case *sparkv1.TaskEvent_OutputChunk:
		return fmt.Sprintf("%s output %q", head, k.OutputChunk.GetText())
	}
	return head
}

// short is a task state without its TASK_STATE_ prefix.
func short(s sparkv1.TaskState) string {
	if s == sparkv1.TaskState_TASK_STATE_UNSPECIFIED {
		return "(new)"
	}
	return strings.TrimPrefix(s.String(), "TASK_STATE_")
}
