package spark

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	sparkv1 "github.com/namastexlabs/spark-grpc/clients/go/gen/spark/v1"
)

// These tests need no spark-grpc server: an in-process gRPC server plays one.

type fakeServer struct {
	sparkv1.UnimplementedTaskServiceServer
	sparkv1.UnimplementedWorkflowServiceServer

	mu         sync.Mutex
	runIDs     []string // request_id of each RunWorkflow
	failRuns   int      // RunWorkflow answers UNAVAILABLE this many times
	getCalls   int
	failGets   int
	auth       []string // authorization header of each GetTask
	deadlines  []bool   // whether each GetTask had a deadline
	watchCalls []int64  // after_sequence of each WatchTask
}

func (f *fakeServer) GetTask(ctx context.Context, req *sparkv1.GetTaskRequest) (*sparkv1.GetTaskResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	f.auth = append(f.auth, md.Get("authorization")...)
	_, ok := ctx.Deadline()
	f.deadlines = append(f.deadlines, ok)
	f.getCalls++
	if f.getCalls <= f.failGets {
		return nil, status.Error(codes.Unavailable, "restarting")
	}
	return &sparkv1.GetTaskResponse{Task: &sparkv1.Task{Id: req.GetId()}}, nil
}

func (f *fakeServer) RunWorkflow(_ context.Context, req *sparkv1.RunWorkflowRequest) (*sparkv1.RunWorkflowResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runIDs = append(f.runIDs, req.GetRequestId())
	if len(f.runIDs) <= f.failRuns {
		return nil, status.Error(codes.Unavailable, "restarting")
	}
	return &sparkv1.RunWorkflowResponse{Task: &sparkv1.Task{Id: "t-" + req.GetRequestId()}}, nil
}

// WatchTask sends events after_sequence+1 .. 6 (6 is SUCCEEDED) but breaks the stream
// with UNAVAILABLE after two events, as a server shutting down does.
func (f *fakeServer) WatchTask(req *sparkv1.WatchTaskRequest, stream grpc.ServerStreamingServer[sparkv1.WatchTaskResponse]) error {
	f.mu.Lock()
	f.watchCalls = append(f.watchCalls, req.GetAfterSequence())
	f.mu.Unlock()
	sent := 0
	for seq := req.GetAfterSequence() + 1; seq <= 6; seq++ {
		if sent == 2 {
			return status.Errorf(codes.Unavailable, "server shutting down: resume with after_sequence=%d", seq-1)
		}
		ev := &sparkv1.TaskEvent{TaskId: req.GetTaskId(), Sequence: seq}
		if seq == 6 {
			ev.Kind = &sparkv1.TaskEvent_StateChange{StateChange: &sparkv1.TaskStateChange{ToState: sparkv1.TaskState_TASK_STATE_SUCCEEDED}}
		}
		if err := stream.Send(&sparkv1.WatchTaskResponse{Kind: &sparkv1.WatchTaskResponse_Event{Event: ev}}); err != nil {
			return err
		}
		sent++
	}
	return nil
}

func startFake(t *testing.T, fake *fakeServer, opts Options) *Client {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	sparkv1.RegisterTaskServiceServer(srv, fake)
	sparkv1.RegisterWorkflowServiceServer(srv, fake)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	opts.Address = lis.Addr().String()
	if opts.Retry.MaxAttempts == 0 {
		opts.Retry = Backoff{MaxAttempts: 5, Initial: time.Millisecond, Max: 5 * time.Millisecond}
	}
	c, err := Dial(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestServiceConfigRetriesOnlyIdempotentRPCs(t *testing.T) {
	var cfg struct {
		MethodConfig []struct {
			Name []struct{ Service, Method string }
		}
	}
	if err := json.Unmarshal([]byte(ServiceConfig()), &cfg); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range cfg.MethodConfig[0].Name {
		names = append(names, n.Service+"/"+n.Method)
	}
	for _, want := range []string{
		"spark.v1.SourceService/GetSource", "spark.v1.SourceService/CheckSource",
		"spark.v1.SourceService/ListRemoteFlows", "spark.v1.WorkflowService/ListWorkflows",
		"spark.v1.TaskService/GetTask", "spark.v1.TaskService/ListTaskEvents",
		"spark.v1.TaskService/WatchTask", "spark.v1.ScheduleService/PreviewSchedule",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("%s is not retried", want)
		}
	}
	for _, never := range []string{
		"spark.v1.WorkflowService/RunWorkflow", "spark.v1.WorkflowService/BatchRunWorkflows",
		"spark.v1.WorkflowService/ImportWorkflow", "spark.v1.SourceService/CreateSource",
		"spark.v1.ScheduleService/CreateSchedule", "spark.v1.TaskService/CancelTask",
		"spark.v1.ScheduleService/TriggerSchedule",
	} {
		if slices.Contains(names, never) {
			t.Errorf("%s must not be retried by the service config", never)
		}
	}
}

func TestDialChecksTransport(t *testing.T) {
	for addr, loop := range map[string]bool{
		"127.0.0.1:50051": true, "localhost:1": true, "[::1]:50051": true, "dns:///127.0.0.2:1": true,
		"example.com:443": false, "10.0.0.1:50051": false,
	} {
		if got := isLoopback(addr); got != loop {
			t.Errorf("isLoopback(%q) = %v", addr, got)
		}
	}
	if _, err := Dial(context.Background(), Options{Address: "example.com:443"}); err == nil {
		t.Error("plain text off loopback was allowed")
	}
	if _, err := Dial(context.Background(), Options{Address: "example.com:443", Insecure: true, APIKey: "k"}); err == nil {
		t.Error("an API key in plain text off loopback was allowed")
	}
	c, err := Dial(context.Background(), Options{Address: "example.com:443", TLS: &TLSOptions{}, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestAPIKeyAndDefaultDeadline(t *testing.T) {
	fake := &fakeServer{}
	c := startFake(t, fake, Options{APIKey: "sk-test", DefaultTimeout: time.Second})
	if _, err := c.Tasks.GetTask(context.Background(), &sparkv1.GetTaskRequest{Id: "x"}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fake.auth, []string{"Bearer sk-test"}) || !fake.deadlines[0] {
		t.Fatalf("auth %v, deadline %v", fake.auth, fake.deadlines)
	}
}

func TestServiceConfigRetriesGetTask(t *testing.T) {
	fake := &fakeServer{failGets: 2}
	c := startFake(t, fake, Options{})
	if _, err := c.Tasks.GetTask(context.Background(), &sparkv1.GetTaskRequest{Id: "x"}); err != nil {
		t.Fatal(err)
	}
	if fake.getCalls != 3 {
		t.Fatalf("GetTask tried %d times, want 3", fake.getCalls)
	}
}

func TestRunWorkflowRetriesWithOneRequestID(t *testing.T) {
	fake := &fakeServer{failRuns: 2}
	c := startFake(t, fake, Options{})
	task, err := c.RunWorkflow(context.Background(), &sparkv1.RunWorkflowRequest{WorkflowId: "w"})
	if err != nil {
		t.Fatal(err)
	}
	if len(fake.runIDs) != 3 || fake.runIDs[0] == "" || fake.runIDs[0] != fake.runIDs[2] || fake.runIDs[1] != fake.runIDs[2] {
		t.Fatalf("request ids %v", fake.runIDs)
	}
	if task.GetId() != "t-"+fake.runIDs[0] {
		t.Fatalf("task %v", task)
	}
	// A caller's own request_id is kept.
	fake.runIDs, fake.failRuns = nil, 0
	if _, err := c.RunWorkflow(context.Background(), &sparkv1.RunWorkflowRequest{WorkflowId: "w", RequestId: "mine"}); err != nil || fake.runIDs[0] != "mine" {
		t.Fatalf("%v %v", err, fake.runIDs)
	}
}

func TestWatchTaskResumesAfterUnavailable(t *testing.T) {
	fake := &fakeServer{}
	c := startFake(t, fake, Options{})
	var seqs []int64
	reconnects := 0
	err := c.WatchTask(context.Background(), "t", 1, func(ev *sparkv1.TaskEvent) error {
		seqs = append(seqs, ev.GetSequence())
		return nil
	}, OnReconnect(func(err error, attempt int) {
		reconnects++
		if status.Code(err) != codes.Unavailable || attempt != 1 {
			t.Errorf("reconnect after %v, attempt %d", err, attempt)
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqs, []int64{2, 3, 4, 5, 6}) || !slices.Equal(fake.watchCalls, []int64{1, 3, 5}) || reconnects != 2 {
		t.Fatalf("events %v, after_sequence of each stream %v, reconnects %d", seqs, fake.watchCalls, reconnects)
	}
	// fn's error stops the stream and comes back as it is.
	stop := errors.New("stop")
	if err := c.WatchTask(context.Background(), "t", 0, func(*sparkv1.TaskEvent) error { return stop }); err != stop {
		t.Fatalf("got %v", err)
	}
}

func TestErrorDetails(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "invalid id").WithDetails(
		&errdetails.ErrorInfo{Reason: "INVALID_ARGUMENT", Domain: "spark.automagik.dev"},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "id", Description: "must be a UUID"}}},
	)
	if err != nil {
		t.Fatal(err)
	}
	e := st.Err()
	if ErrorInfo(e).GetReason() != "INVALID_ARGUMENT" || FieldViolations(e)["id"] != "must be a UUID" {
		t.Fatalf("%v %v", ErrorInfo(e), FieldViolations(e))
	}
	if ErrorInfo(errors.New("plain")) != nil || len(FieldViolations(nil)) != 0 {
		t.Fatal("details out of nothing")
	}
}

func TestNewRequestID(t *testing.T) {
	a, b := NewRequestID(), NewRequestID()
	if len(a) != 36 || a == b || a[14] != '4' {
		t.Fatalf("%s %s", a, b)
	}
}
