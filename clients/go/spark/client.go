// Package spark is the thin hand-written layer over the generated spark.v1 stubs
// (package sparkv1): connecting with TLS and an API key, default deadlines, retries of
// idempotent calls, keepalive for long-lived streams, resuming WatchTask / WatchTasks,
// and reading the error details the server attaches to a status.
package spark

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	sparkv1 "github.com/namastexlabs/spark-grpc/clients/go/gen/spark/v1"
)

// DefaultTimeout is the deadline given to a unary call whose context has none.
const DefaultTimeout = 30 * time.Second

// MaxMessageBytes is the largest message the client accepts: the server's default
// SPARK_MAX_MESSAGE_BYTES (16 MiB; grpc-go's own default is 4 MiB).
const MaxMessageBytes = 16 << 20

// Options says where and how to connect.
type Options struct {
	// Address is host:port, e.g. "127.0.0.1:50051".
	Address string
	// TLS, when set, connects with TLS; nil connects in plain text, which Dial allows only
	// for a loopback address unless Insecure is set.
	TLS *TLSOptions
	// Insecure allows plain text to an address that is not loopback (never send an API key
	// that way: Dial refuses APIKey without TLS off loopback).
	Insecure bool
	// APIKey, when set, is sent with every call as "authorization: Bearer <key>".
	APIKey string
	// DefaultTimeout is the deadline of a unary call whose context has none: zero means
	// DefaultTimeout, a negative value means none. Streams get no default deadline.
	DefaultTimeout time.Duration
	// Retry is the backoff of Retry, RunWorkflow and the reconnects of WatchTask and
	// WatchTasks; the zero value means DefaultBackoff.
	Retry Backoff
	// WaitReady makes Dial wait until the connection is ready (or ctx ends); otherwise
	// Dial connects lazily and returns at once.
	WaitReady bool
	// DialOptions are appended to the ones Dial builds.
	DialOptions []grpc.DialOption
}

// TLSOptions configures a TLS connection.
type TLSOptions struct {
	// CAFile is a PEM file of the CA that signed the server's certificate; empty means the
	// system roots.
	CAFile string
	// CertFile and KeyFile are the client's certificate and key (PEM), for mTLS.
	CertFile, KeyFile string
	// ServerName overrides the name checked against the server's certificate.
	ServerName string
}

// Client holds one connection and the four service clients on it.
type Client struct {
	// Conn is the underlying connection.
	Conn *grpc.ClientConn
	// Sources is spark.v1.SourceService.
	Sources sparkv1.SourceServiceClient
	// Workflows is spark.v1.WorkflowService.
	Workflows sparkv1.WorkflowServiceClient
	// Tasks is spark.v1.TaskService.
	Tasks sparkv1.TaskServiceClient
	// Schedules is spark.v1.ScheduleService.
	Schedules sparkv1.ScheduleServiceClient

	backoff Backoff
}

// Dial builds a client: TLS or loopback plain text, the API key as per-call credentials,
// the retrying service config, keepalive and a default deadline on unary calls.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	if opts.Address == "" {
		return nil, errors.New("spark: Options.Address is required")
	}
	loopback := isLoopback(opts.Address)
	var transport credentials.TransportCredentials
	if opts.TLS != nil {
		cfg, err := tlsConfig(opts.TLS)
		if err != nil {
			return nil, err
		}
		transport = credentials.NewTLS(cfg)
	} else {
		if !loopback && !opts.Insecure {
			return nil, fmt.Errorf("spark: plain text to %s, which is not loopback: set Options.TLS (or Options.Insecure)", opts.Address)
		}
		transport = insecure.NewCredentials()
	}
	timeout := opts.DefaultTimeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		grpc.WithDefaultServiceConfig(ServiceConfig()),
		// The server pings idle connections every 30 s and accepts client pings every 10 s
		// or slower: pinging every 30 s, streams or not, keeps long streams open through
		// proxies and notices a dead peer within 40 s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                30 * time.Second,
			Timeout:             10 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
		grpc.WithUnaryInterceptor(defaultDeadline(timeout)),
	}
	if opts.APIKey != "" {
		if opts.TLS == nil && !loopback {
			return nil, errors.New("spark: an API key is only sent over TLS, or in plain text to loopback")
		}
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(bearer{key: opts.APIKey, requireTLS: !loopback}))
	}
	conn, err := grpc.NewClient(opts.Address, append(dialOpts, opts.DialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("spark: %w", err)
	}
	if opts.WaitReady {
		if err := waitReady(ctx, conn); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return &Client{
		Conn:      conn,
		Sources:   sparkv1.NewSourceServiceClient(conn),
		Workflows: sparkv1.NewWorkflowServiceClient(conn),
		Tasks:     sparkv1.NewTaskServiceClient(conn),
		Schedules: sparkv1.NewScheduleServiceClient(conn),
		backoff:   opts.Retry.orDefault(),
	}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.Conn.Close() }

func waitReady(ctx context.Context, conn *grpc.ClientConn) error {
	conn.Connect()
	for {
		state := conn.GetState()
		if state == connectivity.Ready {
			return nil
		}
		if !conn.WaitForStateChange(ctx, state) {
			return fmt.Errorf("spark: connection not ready (%s): %w", state, ctx.Err())
		}
	}
}

func tlsConfig(o *TLSOptions) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("spark: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("spark: no PEM certificate in %s", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if o.CertFile != "" || o.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("spark: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// isLoopback says whether host:port names this machine (localhost, 127.0.0.0/8, ::1).
func isLoopback(address string) bool {
	host := address
	if i := strings.Index(host, "://"); i >= 0 { // dns:///host:port, unix:// ...
		host = strings.TrimLeft(host[i+3:], "/")
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// bearer sends the API key as "authorization: Bearer <key>" with every call.
type bearer struct {
	key        string
	requireTLS bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.key}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.requireTLS }

// defaultDeadline gives a unary call whose context has no deadline the default one.
func defaultDeadline(timeout time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok && timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
