package spark

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/status"

	sparkv1 "github.com/namastexlabs/spark-grpc/clients/go/gen/spark/v1"
)

// WatchOption changes how WatchTask and WatchTasks behave.
type WatchOption func(*watchConfig)

type watchConfig struct {
	onReconnect func(err error, attempt int)
	onHeartbeat func(*sparkv1.StreamHeartbeat)
}

// OnReconnect calls fn before each reconnect, with the error that ended the stream and
// the number of tries in a row so far.
func OnReconnect(fn func(err error, attempt int)) WatchOption {
	return func(c *watchConfig) { c.onReconnect = fn }
}

// OnHeartbeat calls fn for each heartbeat of an idle stream.
func OnHeartbeat(fn func(*sparkv1.StreamHeartbeat)) WatchOption {
	return func(c *watchConfig) { c.onHeartbeat = fn }
}

func newWatchConfig(opts []WatchOption) watchConfig {
	cfg := watchConfig{onReconnect: func(error, int) {}, onHeartbeat: func(*sparkv1.StreamHeartbeat) {}}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// callbackError carries an error returned by the caller's fn out of a stream.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// TerminalState says whether a task in state s is finished.
func TerminalState(s sparkv1.TaskState) bool {
	switch s {
	case sparkv1.TaskState_TASK_STATE_SUCCEEDED, sparkv1.TaskState_TASK_STATE_FAILED,
		sparkv1.TaskState_TASK_STATE_CANCELLED, sparkv1.TaskState_TASK_STATE_TIMED_OUT:
		return true
	}
	return false
}

// WatchTask calls fn with every event of task taskID after sequence afterSequence (0:
// from the first), in order and each once, until the task's terminal event: the server
// then ends the stream with OK and WatchTask returns nil. When the stream breaks with
// UNAVAILABLE (a lost connection, a server restarting or shutting down) it reconnects
// with the client's Backoff and resumes after the last sequence received. It returns the
// error of fn, of ctx, any other status (NOT_FOUND, DEADLINE_EXCEEDED, ...), or the last
// UNAVAILABLE once the Backoff is spent. Give ctx a deadline: streams get no default one.
func (c *Client) WatchTask(ctx context.Context, taskID string, afterSequence int64, fn func(*sparkv1.TaskEvent) error, opts ...WatchOption) error {
	cfg := newWatchConfig(opts)
	return c.resume(ctx, cfg, func(ctx context.Context, progress func()) error {
		stream, err := c.Tasks.WatchTask(ctx, &sparkv1.WatchTaskRequest{TaskId: taskID, AfterSequence: afterSequence})
		if err != nil {
			return err
		}
		for {
			msg, err := stream.Recv()
			if err != nil {
				return err
			}
			progress()
			if hb := msg.GetHeartbeat(); hb != nil {
				cfg.onHeartbeat(hb)
				continue
			}
			ev := msg.GetEvent()
			if ev == nil || ev.GetSequence() <= afterSequence {
				continue // never hand fn an event twice
			}
			if ctx.Err() != nil { // cancelled: hand fn nothing more
				return status.FromContextError(ctx.Err()).Err()
			}
			afterSequence = ev.GetSequence()
			if err := fn(ev); err != nil {
				return callbackError{err}
			}
		}
	})
}

// WatchTasks calls fn with every task state change matching filter after cursor (""
// from now on), with the cursor to resume after that change, until ctx ends or fn returns
// an error (returned as it is; return a sentinel error to stop). Like WatchTask it
// reconnects on UNAVAILABLE and resumes from the last cursor received (heartbeats carry
// one too).
func (c *Client) WatchTasks(ctx context.Context, filter *sparkv1.TaskFilter, cursor string, fn func(change *sparkv1.TaskChange, cursor string) error, opts ...WatchOption) error {
	cfg := newWatchConfig(opts)
	return c.resume(ctx, cfg, func(ctx context.Context, progress func()) error {
		stream, err := c.Tasks.WatchTasks(ctx, &sparkv1.WatchTasksRequest{Filter: filter, Cursor: cursor})
		if err != nil {
			return err
		}
		for {
			msg, err := stream.Recv()
			if err != nil {
				return err
			}
			progress()
			if msg.GetCursor() != "" {
				cursor = msg.GetCursor()
			}
			if hb := msg.GetHeartbeat(); hb != nil {
				cfg.onHeartbeat(hb)
				continue
			}
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			if ch := msg.GetChange(); ch != nil {
				if err := fn(ch, cursor); err != nil {
					return callbackError{err}
				}
			}
		}
	})
}

// resume runs one stream after another until one ends with OK or an error that is not
// UNAVAILABLE; tries in a row that receive nothing are bounded by the client's Backoff.
func (c *Client) resume(ctx context.Context, cfg watchConfig, once func(ctx context.Context, progress func()) error) error {
	b := c.backoff.orDefault()
	failures := 0
	for {
		err := once(ctx, func() { failures = 0 })
		if err == nil || errors.Is(err, io.EOF) {
			return nil
		}
		var cb callbackError
		if errors.As(err, &cb) {
			return cb.err
		}
		if ctx.Err() != nil || !Retryable(err) {
			return err
		}
		failures++
		if failures >= b.MaxAttempts {
			return err
		}
		cfg.onReconnect(err, failures)
		if sleep(ctx, b.delay(failures)) != nil {
			return err
		}
	}
}
