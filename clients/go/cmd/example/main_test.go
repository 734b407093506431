package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/namastexlabs/spark-grpc/clients/go/spark"
)

// TestExample runs the five steps against a live server (SPARK_ADDRESS, and
// SPARK_API_KEY / SPARK_TLS_CA / SPARK_DEMO_SOURCE_URL as for the command), twice: a
// re-run reuses the source, the workflow and the schedule.
func TestExample(t *testing.T) {
	addr := os.Getenv("SPARK_ADDRESS")
	if addr == "" {
		t.Skip("SPARK_ADDRESS is not set: no live server to test against")
	}
	opts := spark.Options{Address: addr, APIKey: os.Getenv("SPARK_API_KEY")}
	if ca := os.Getenv("SPARK_TLS_CA"); ca != "" {
		opts.TLS = &spark.TLSOptions{CAFile: ca}
	}
	client, err := spark.Dial(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	url := env("SPARK_DEMO_SOURCE_URL", "http://127.0.0.1:7860/langflow")
	for run := 1; run <= 2; run++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := (&example{client: client, callTimeout: 10 * time.Second}).run(ctx, url, EchoFlowID, "Hello from go test")
		cancel()
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
	}
}
