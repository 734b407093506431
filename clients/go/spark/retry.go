package spark

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	sparkv1 "github.com/namastexlabs/spark-grpc/clients/go/gen/spark/v1"
)

// Backoff bounds the retries of Retry and RunWorkflow and the reconnects of WatchTask
// and WatchTasks: up to MaxAttempts tries in a row that fail with UNAVAILABLE, waiting a
// random time up to Initial, then twice that, ... up to Max, between them.
type Backoff struct {
	MaxAttempts  int
	Initial, Max time.Duration
}

// DefaultBackoff rides out a server restart of about half a minute.
var DefaultBackoff = Backoff{MaxAttempts: 12, Initial: 250 * time.Millisecond, Max: 4 * time.Second}

func (b Backoff) orDefault() Backoff {
	if b.MaxAttempts <= 0 {
		b.MaxAttempts = DefaultBackoff.MaxAttempts
	}
	if b.Initial <= 0 {
		b.Initial = DefaultBackoff.Initial
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoff.Max
	}
	return b
}

// delay is the wait before retry number n (1-based): "equal jitter", at least half the
// exponential step, so a restarting server is given time.
func (b Backoff) delay(n int) time.Duration {
	step := b.Initial << min(n-1, 20)
	if step > b.Max || step <= 0 {
		step = b.Max
	}
	return step/2 + rand.N(step/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Retryable says whether a failed call may be tried again: UNAVAILABLE, which is what
// a server that is down, restarting or shutting down answers.
func Retryable(err error) bool { return status.Code(err) == codes.Unavailable }

// Retry calls fn until it succeeds, fails with an error that is not Retryable, the
// client's Backoff runs out or ctx ends. Use it only for idempotent calls: the Get*,
// List*, Check* and Preview* RPCs, and Create* / Import* / RunWorkflow with a request_id
// that stays the same across the tries. (The service config already retries the
// idempotent RPCs a few times within their deadline; Retry rides out longer outages.)
func (c *Client) Retry(ctx context.Context, fn func(ctx context.Context) error) error {
	b := c.backoff.orDefault()
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil || !Retryable(err) || attempt >= b.MaxAttempts {
			return err
		}
		if serr := sleep(ctx, b.delay(attempt)); serr != nil {
			return err
		}
	}
}

// NewRequestID returns a new random idempotency key (a UUID v4).
func NewRequestID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// RunWorkflow runs a workflow once, however often the call is retried: it sets a
// request_id when req has none (req is not changed; the id used is on the returned
// request) and retries UNAVAILABLE with that same id, so a retry returns the task the
// first try created instead of starting a second run.
func (c *Client) RunWorkflow(ctx context.Context, req *sparkv1.RunWorkflowRequest) (*sparkv1.Task, error) {
	if req.GetRequestId() == "" {
		clone := proto.Clone(req).(*sparkv1.RunWorkflowRequest)
		clone.RequestId = NewRequestID()
		req = clone
	}
	var task *sparkv1.Task
	err := c.Retry(ctx, func(ctx context.Context) error {
		resp, err := c.Workflows.RunWorkflow(ctx, req)
		task = resp.GetTask()
		return err
	})
	return task, err
}

// idempotentPrefixes name the RPCs the service config retries on UNAVAILABLE. RunWorkflow,
// Create* and Import* are idempotent only with a request_id, which a service config cannot
// see: they are never retried by it (use RunWorkflow / Retry with a request_id).
var idempotentPrefixes = []string{"Get", "List", "Check", "Preview", "Watch"}

var serviceFiles = []protoreflect.FileDescriptor{
	sparkv1.File_spark_v1_source_service_proto,
	sparkv1.File_spark_v1_workflow_service_proto,
	sparkv1.File_spark_v1_task_service_proto,
	sparkv1.File_spark_v1_schedule_service_proto,
}

// IdempotentMethods lists the RPCs the service config retries, as "/service/method".
func IdempotentMethods() []string {
	var out []string
	for _, f := range serviceFiles {
		for i := 0; i < f.Services().Len(); i++ {
			svc := f.Services().Get(i)
			for j := 0; j < svc.Methods().Len(); j++ {
				name := string(svc.Methods().Get(j).Name())
				for _, p := range idempotentPrefixes {
					if strings.HasPrefix(name, p) {
						out = append(out, "/"+string(svc.FullName())+"/"+name)
						break
					}
				}
			}
		}
	}
	return out
}

// ServiceConfig is the gRPC service config Dial installs: the idempotent RPCs (Get*,
// List*, Check*, Preview*, and WatchTask / WatchTasks until their first message) are
// retried on UNAVAILABLE, up to 5 tries within the call's deadline.
func ServiceConfig() string {
	type name struct {
		Service string `json:"service"`
		Method  string `json:"method"`
	}
	var names []name
	for _, m := range IdempotentMethods() {
		parts := strings.Split(strings.TrimPrefix(m, "/"), "/")
		names = append(names, name{parts[0], parts[1]})
	}
	cfg := map[string]any{
		"methodConfig": []any{map[string]any{
			"name": names,
			"retryPolicy": map[string]any{
				"maxAttempts":          5,
				"initialBackoff":       "0.2s",
				"maxBackoff":           "2s",
				"backoffMultiplier":    2,
				"retryableStatusCodes": []string{"UNAVAILABLE"},
			},
		}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(err)
	}
	return string(b)
}
