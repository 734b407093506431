package spark

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sparkv1 "github.com/namastexlabs/spark-grpc/clients/go/gen/spark/v1"
)

// Tests against a live server. They run only when SPARK_ADDRESS is set:
//
//	SPARK_ADDRESS          the server (plain text on loopback unless SPARK_TLS_CA is set)
//	SPARK_API_KEY          its API key, if it requires one
//	SPARK_TLS_CA           CA file of its certificate: connect with TLS
//	SPARK_DEMO_SOURCE_URL  the demo (fake) LangFlow, default http://127.0.0.1:7860/langflow;
//	                       its /_fake/config controls make it slow for the deadline tests
//	SPARK_SECURED_ADDRESS  a server with SPARK_AUTH_MODE=required, for UNAUTHENTICATED
//	SPARK_SECURED_API_KEY  a write key of that server
//	SPARK_SECURED_TLS_CA   CA file of that server's certificate, if it serves TLS
//
// Each test changes only what it creates, and puts the demo source back as it was.

const echoFlowID = "8f14e45f-ceea-467f-a5b8-1c2d3e4f5a01"

func liveClient(t *testing.T) *Client {
	t.Helper()
	addr := os.Getenv("SPARK_ADDRESS")
	if addr == "" {
		t.Skip("SPARK_ADDRESS is not set: no live server to test against")
	}
	return dialLive(t, addr, os.Getenv("SPARK_API_KEY"), os.Getenv("SPARK_TLS_CA"))
}

func dialLive(t *testing.T, addr, key, ca string, extra ...func(*Options)) *Client {
	t.Helper()
	opts := Options{Address: addr, APIKey: key, DefaultTimeout: 15 * time.Second}
	if ca != "" {
		opts.TLS = &TLSOptions{CAFile: ca}
	}
	for _, f := range extra {
		f(&opts)
	}
	c, err := Dial(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func demoURL() string {
	if u := os.Getenv("SPARK_DEMO_SOURCE_URL"); u != "" {
		return u
	}
	return "http://127.0.0.1:7860/langflow"
}

// echoWorkflow registers (or finds) the demo source and imports its echo flow.
func echoWorkflow(t *testing.T, c *Client) string {
	t.Helper()
	ctx := context.Background()
	url := demoURL()
	sourceID := ""
	created, err := c.Sources.CreateSource(ctx, &sparkv1.CreateSourceRequest{
		Source: &sparkv1.Source{DisplayName: "Demo LangFlow", Type: sparkv1.SourceType_SOURCE_TYPE_LANGFLOW, Url: url},
	})
	switch {
	case err == nil:
		sourceID = created.GetSource().GetId()
	case status.Code(err) == codes.AlreadyExists:
		taken := ErrorInfo(err).GetMetadata()["url"]
		list, err := c.Sources.ListSources(ctx, &sparkv1.ListSourcesRequest{PageSize: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list.GetSources() {
			if s.GetUrl() == taken {
				sourceID = s.GetId()
			}
		}
		if sourceID == "" {
			t.Fatalf("no source has the taken url %q", taken)
		}
	default:
		t.Fatal(err)
	}
	imported, err := c.Workflows.ImportWorkflow(ctx, &sparkv1.ImportWorkflowRequest{SourceId: sourceID, RemoteFlowId: echoFlowID})
	if err != nil {
		t.Fatal(err)
	}
	return imported.GetWorkflow().GetId()
}

// configureFake changes how the demo source behaves (see spark_grpc/demo/fake_sources.py)
// and puts it back when the test ends; the test is skipped when the source has no controls.
func configureFake(t *testing.T, settings string) {
	t.Helper()
	post := func(body string) error {
		resp, err := http.Post(demoURL()+"/_fake/config", "application/json", bytes.NewBufferString(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("%s: %s", resp.Status, b)
		}
		return nil
	}
	if err := post(settings); err != nil {
		t.Skipf("the demo source at %s has no test controls: %v", demoURL(), err)
	}
	t.Cleanup(func() {
		if err := post(`{"reset": true}`); err != nil {
			t.Errorf("reset the demo source: %v", err)
		}
	})
}

func allEvents(t *testing.T, c *Client, taskID string) []int64 {
	t.Helper()
	var seqs []int64
	page := ""
	for {
		resp, err := c.Tasks.ListTaskEvents(context.Background(), &sparkv1.ListTaskEventsRequest{TaskId: taskID, PageSize: 1000, PageToken: page})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.GetEvents() {
			seqs = append(seqs, ev.GetSequence())
		}
		if page = resp.GetNextPageToken(); page == "" {
			return seqs
		}
	}
}

func words(n int) string {
	w := make([]string, n)
	for i := range w {
		w[i] = fmt.Sprintf("w%d", i)
	}
	return strings.Join(w, " ")
}

func TestLiveNotFound(t *testing.T) {
	c := liveClient(t)
	_, err := c.Workflows.GetWorkflow(context.Background(), &sparkv1.GetWorkflowRequest{Id: "123e4567-e89b-12d3-a456-426614174000"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("got %v", err)
	}
	if r := ErrorInfo(err).GetReason(); r != "WORKFLOW_NOT_FOUND" {
		t.Fatalf("ErrorInfo reason %q", r)
	}
	_, err = c.Tasks.GetTask(context.Background(), &sparkv1.GetTaskRequest{Id: "123e4567-e89b-12d3-a456-426614174000"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("got %v", err)
	}
}

func TestLiveInvalidArgumentWithFieldViolations(t *testing.T) {
	c := liveClient(t)
	_, err := c.Workflows.GetWorkflow(context.Background(), &sparkv1.GetWorkflowRequest{Id: "not-a-uuid"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("got %v", err)
	}
	if v := FieldViolations(err); !strings.Contains(v["id"], "UUID") {
		t.Fatalf("field violations %v", v)
	}
	info := ErrorInfo(err)
	if info.GetReason() != "INVALID_ARGUMENT" || info.GetDomain() != "spark.automagik.dev" {
		t.Fatalf("ErrorInfo %v", info)
	}
	// A schedule with neither workflow nor spec: a violation for each.
	_, err = c.Schedules.CreateSchedule(context.Background(), &sparkv1.CreateScheduleRequest{Schedule: &sparkv1.Schedule{}})
	v := FieldViolations(err)
	if status.Code(err) != codes.InvalidArgument || len(v) == 0 {
		t.Fatalf("got %v, violations %v", err, v)
	}
	t.Logf("CreateSchedule({}) field violations: %v", v)
}

func TestLiveUnauthenticated(t *testing.T) {
	addr := os.Getenv("SPARK_SECURED_ADDRESS")
	if addr == "" {
		t.Skip("SPARK_SECURED_ADDRESS is not set: no server that requires keys")
	}
	ca := os.Getenv("SPARK_SECURED_TLS_CA")
	ctx := context.Background()
	for name, key := range map[string]string{"no key": "", "a wrong key": "spark_not-a-real-key"} {
		c := dialLive(t, addr, key, ca)
		_, err := c.Sources.ListSources(ctx, &sparkv1.ListSourcesRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("%s: got %v", name, err)
		}
		err = c.WatchTask(ctx, "123e4567-e89b-12d3-a456-426614174000", 0, func(*sparkv1.TaskEvent) error { return nil })
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("%s: WatchTask got %v", name, err)
		}
	}
	key := os.Getenv("SPARK_SECURED_API_KEY")
	if key == "" {
		t.Skip("SPARK_SECURED_API_KEY is not set")
	}
	c := dialLive(t, addr, key, ca)
	if _, err := c.Sources.ListSources(ctx, &sparkv1.ListSourcesRequest{}); err != nil {
		t.Fatalf("with the key: %v", err)
	}
}

func TestLiveDeadlineExceeded(t *testing.T) {
	c := liveClient(t)
	workflowID := echoWorkflow(t, c)
	sources, err := c.Sources.ListSources(context.Background(), &sparkv1.ListSourcesRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	sourceID := ""
	for _, s := range sources.GetSources() {
		if s.GetUrl() == demoURL() {
			sourceID = s.GetId()
		}
	}
	configureFake(t, `{"hang": true}`)

	// A unary call to a source that never answers, with a short deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Sources.GetRemoteFlow(ctx, &sparkv1.GetRemoteFlowRequest{SourceId: sourceID, RemoteFlowId: echoFlowID})
	if status.Code(err) != codes.DeadlineExceeded || time.Since(start) > 5*time.Second {
		t.Fatalf("GetRemoteFlow: %v after %s", err, time.Since(start))
	}

	// A stream on a task whose source hangs: it gets to RUNNING and then waits.
	task, err := c.RunWorkflow(context.Background(), &sparkv1.RunWorkflowRequest{WorkflowId: workflowID, InputValue: "hang"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Tasks.CancelTask(context.Background(), &sparkv1.CancelTaskRequest{Id: task.GetId(), Reason: "test over"})
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	running := false
	err = c.WatchTask(ctx, task.GetId(), 0, func(ev *sparkv1.TaskEvent) error {
		running = running || ev.GetStateChange().GetToState() == sparkv1.TaskState_TASK_STATE_RUNNING
		return nil
	})
	if status.Code(err) != codes.DeadlineExceeded || !running {
		t.Fatalf("WatchTask: %v (saw RUNNING: %v)", err, running)
	}
}

func TestLiveWatchTaskResumedAfterACancelledConnection(t *testing.T) {
	c := liveClient(t)
	workflowID := echoWorkflow(t, c)
	configureFake(t, `{"delay_s": 1}`) // the run is live while the first stream reads
	task, err := c.RunWorkflow(context.Background(), &sparkv1.RunWorkflowRequest{WorkflowId: workflowID, InputValue: words(30)})
	if err != nil {
		t.Fatal(err)
	}
	// The first stream: its context is cancelled after the second event.
	ctx, cancel := context.WithCancel(context.Background())
	var got []int64
	err = c.WatchTask(ctx, task.GetId(), 0, func(ev *sparkv1.TaskEvent) error {
		got = append(got, ev.GetSequence())
		if len(got) == 2 {
			cancel()
		}
		return nil
	})
	cancel()
	if status.Code(err) != codes.Canceled || len(got) != 2 {
		t.Fatalf("first stream: %v after %v", err, got)
	}
	// Resumed after the last sequence received, to the terminal event.
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var last *sparkv1.TaskEvent
	err = c.WatchTask(ctx, task.GetId(), got[len(got)-1], func(ev *sparkv1.TaskEvent) error {
		got = append(got, ev.GetSequence())
		last = ev
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := allEvents(t, c, task.GetId()); !slices.Equal(got, want) {
		t.Fatalf("streamed %v, stored %v", got, want)
	}
	if last.GetStateChange().GetToState() != sparkv1.TaskState_TASK_STATE_SUCCEEDED {
		t.Fatalf("last event %v", last)
	}
}

// proxy forwards TCP connections to target and can cut them all, as a network would.
type proxy struct {
	lis    net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	target string
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{lis: lis, target: target}
	go func() {
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	t.Cleanup(func() { lis.Close(); p.cut() })
	return p
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func TestLiveWatchTaskReconnectsAfterConnectionLoss(t *testing.T) {
	direct := liveClient(t)
	if os.Getenv("SPARK_TLS_CA") != "" {
		t.Skip("the proxy test dials in plain text")
	}
	workflowID := echoWorkflow(t, direct)
	p := startProxy(t, os.Getenv("SPARK_ADDRESS"))
	c := dialLive(t, p.lis.Addr().String(), os.Getenv("SPARK_API_KEY"), "", func(o *Options) {
		o.Retry = Backoff{MaxAttempts: 10, Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}
	})
	configureFake(t, `{"delay_s": 1.5}`)
	task, err := c.RunWorkflow(context.Background(), &sparkv1.RunWorkflowRequest{WorkflowId: workflowID, InputValue: words(20)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got []int64
	var reconnects []error
	err = c.WatchTask(ctx, task.GetId(), 0, func(ev *sparkv1.TaskEvent) error {
		got = append(got, ev.GetSequence())
		if len(got) == 1 {
			p.cut() // every connection drops mid-stream
		}
		return nil
	}, OnReconnect(func(err error, _ int) { reconnects = append(reconnects, err) }))
	if err != nil {
		t.Fatal(err)
	}
	if len(reconnects) == 0 || status.Code(reconnects[0]) != codes.Unavailable {
		t.Fatalf("reconnects %v", reconnects)
	}
	if want := allEvents(t, direct, task.GetId()); !slices.Equal(got, want) {
		t.Fatalf("streamed %v, stored %v", got, want)
	}
	t.Logf("resumed after %d reconnect(s): %v", len(reconnects), reconnects[0])
}

func TestLiveWatchTasksFollowsARun(t *testing.T) {
	c := liveClient(t)
	workflowID := echoWorkflow(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	changes := make(chan *sparkv1.TaskChange, 1000)
	ended := make(chan error, 1)
	go func() {
		ended <- c.WatchTasks(ctx, &sparkv1.TaskFilter{WorkflowId: workflowID}, "", func(ch *sparkv1.TaskChange, cursor string) error {
			if cursor == "" {
				return errors.New("a change without a cursor")
			}
			changes <- ch
			return nil
		})
	}()
	time.Sleep(time.Second) // the feed is open
	task, err := c.RunWorkflow(ctx, &sparkv1.RunWorkflowRequest{WorkflowId: workflowID, InputValue: "feed"})
	if err != nil {
		t.Fatal(err)
	}
	var states []sparkv1.TaskState
	for {
		select {
		case ch := <-changes:
			if ch.GetEvent().GetTaskId() != task.GetId() {
				continue
			}
			to := ch.GetEvent().GetStateChange().GetToState()
			states = append(states, to)
			if TerminalState(to) {
				if to != sparkv1.TaskState_TASK_STATE_SUCCEEDED || ch.GetWorkflowId() != workflowID {
					t.Fatalf("states %v, workflow %s", states, ch.GetWorkflowId())
				}
				return
			}
		case err := <-ended:
			if status.Code(err) == codes.Internal {
				t.Skipf("the server's WatchTasks fails (a known server bug, WATCH_TASKS_XID_BUG in tests/e2e/test_streams.py): %v", err)
			}
			t.Fatalf("WatchTasks ended: %v (states so far %v)", err, states)
		}
	}
}
