package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/internal/bench"
	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/server"
	"github.com/tandem-dev/tandem/runtime/store/memory"
)

// startRuntime serves the real runtime HTTP stack (server, sequencer,
// in-memory log) on loopback with anonymous auth.
func startRuntime(t *testing.T) string {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	m := metrics.New()
	l := memory.NewLog(memory.LogOptions{})
	mgr := doc.NewManager(doc.Options{Log: l, Metrics: m, Logger: logger})
	srv := server.New(server.Options{Manager: mgr, Auth: auth.Anonymous{}, Metrics: m, Logger: logger,
		// The closed loop would otherwise hit the per-connection rate limit.
		Limits: server.Limits{OpsPerSecond: 1e6}})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		hs.Close()
		_ = mgr.Close(ctx)
		_ = l.Close(ctx)
	})
	return hs.URL
}

func TestRunAgainstRuntimeAndReport(t *testing.T) {
	url := startRuntime(t)
	dir := t.TempDir()
	resultsPath := filepath.Join(dir, "results.json")
	var stdout, stderr bytes.Buffer
	err := run([]string{"run", "--single", url, "--replicas", url + "," + url, "--json", "--out", resultsPath,
		"--scenarios", "S1-single,S2,S2-single,S3,S4", "--runs", "2",
		"--s1-duration", "300ms", "--s1-readers", "2",
		"--s2-duration", "400ms", "--s2-writers", "4",
		"--s3-conns", "20", "--s3-docs", "4", "--s3-idle", "200ms",
		"--s4-docs", "3", "--s4-editors", "2", "--s4-rate", "20", "--s4-duration", "300ms",
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, stdout.String())
	}
	if len(rep.Runs) != 2 {
		t.Fatalf("%d runs, want 2", len(rep.Runs))
	}
	ids := map[string]bool{}
	for _, r := range rep.Median {
		ids[r.ID] = true
		if r.Error != "" {
			t.Errorf("%s: %s", r.ID, r.Error)
		}
	}
	for _, id := range []string{"S1-single", "S2", "S2-single", "S3", "S4"} {
		if !ids[id] {
			t.Errorf("no result for %s", id)
		}
	}

	gobench := filepath.Join(dir, "micro.txt")
	if err := os.WriteFile(gobench, []byte("BenchmarkRopeApply1MiB-2 100 1500 ns/op\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(dir, "benchmarks.md")
	if err := run([]string{"report", "--results", resultsPath, "--gobench", gobench, "--out", md}, &stdout, &stderr); err != nil {
		t.Fatalf("report: %v", err)
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Machine", "| OT: one-character edit on a 1 MiB document | – | – | ≤ 20 µs | 1.500 µs | **yes** |", "### S2-single"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("document lacks %q", want)
		}
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"run", "--scenarios", "S9", "--single", "http://127.0.0.1:1"}, `unknown scenario "S9"`},
		{[]string{"run", "--scenarios", "S1", "--single", "http://127.0.0.1:1"}, "S1 needs two --replicas"},
		{[]string{"run", "--scenarios", "S2-single"}, "S2-single needs --single"},
		{[]string{"run", "--scenarios", "S1-colocated", "--replicas", "http://127.0.0.1:1"}, "S1-colocated needs two --replicas"},
		{[]string{"run", "--scenarios", "S2-colocated", "--single", "http://127.0.0.1:1"}, "S2-colocated needs two --replicas"},
		{[]string{"run", "--runs", "0"}, "--runs must be at least 1"},
		{[]string{"report"}, "report needs --results"},
		{[]string{"run", "--single", "http://127.0.0.1:1", "--profile-dir", "/nonexistent"}, "--profile-dir needs --debug"},
		{[]string{"run", "--single", "http://127.0.0.1:1", "--debug", "single=http://127.0.0.1:2"}, "--debug is only used with --profile-dir"},
		{[]string{"run", "--single", "http://127.0.0.1:1", "--profile-dir", "/nonexistent", "--debug", "C=http://127.0.0.1:2"}, `unknown runtime "C"`},
		{[]string{"run", "--single", "http://127.0.0.1:1", "--profile-dir", "/nonexistent", "--debug", "single"}, `"single" is not name=URL`},
		{[]string{"run", "--single", "http://127.0.0.1:1", "--profile-dir", "/nonexistent", "--debug", "A=http://x,A=http://y"}, "A given twice"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(tt.args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestRunWritesProfiles: with --profile-dir, the first run writes a CPU
// profile per runtime a load scenario drives and S3's heap profile; a debug
// listener that is down costs its profile and a warning, not the run.
func TestRunWritesProfiles(t *testing.T) {
	url := startRuntime(t)
	// The runtime runs in the test process: profiles of this process stand
	// in for the runtime's.
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	debug := httptest.NewServer(mux)
	t.Cleanup(debug.Close)
	down := httptest.NewServer(nil)
	down.Close()

	dir := filepath.Join(t.TempDir(), "profiles") // created by the run
	var stdout, stderr bytes.Buffer
	err := run([]string{"run", "--single", url, "--idle", url, "--scenarios", "S3,S2-single,S1-single", "--runs", "2",
		"--profile-dir", dir, "--debug", "single=" + debug.URL + ",idle=" + down.URL,
		"--s1-duration", "200ms", "--s1-readers", "1",
		"--s2-duration", "300ms", "--s2-writers", "2",
		"--s3-conns", "10", "--s3-docs", "2", "--s3-idle", "100ms",
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		files = append(files, e.Name())
	}
	// One CPU profile (S2-single, first run only); none for S1-single, and
	// none for S3 whose debug listener is down.
	if want := []string{"S2-single-single.cpu.pprof"}; strings.Join(files, " ") != strings.Join(want, " ") {
		t.Errorf("profile directory holds %q, want %q", files, want)
	}
	for _, f := range files {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v, %v", f, fi, err)
		}
	}
	if !strings.Contains(stderr.String(), "warning: S3: fetch profile "+down.URL) {
		t.Errorf("no warning about the idle runtime's heap profile:\n%s", stderr.String())
	}
}

// TestRunFailsWhenRuntimeIsDown: a scenario that cannot connect is a
// failure with a non-zero exit, not an empty success.
func TestRunFailsWhenRuntimeIsDown(t *testing.T) {
	hs := httptest.NewServer(nil)
	url := hs.URL
	hs.Close()
	var out, errOut bytes.Buffer
	err := run([]string{"run", "--single", url, "--scenarios", "S1-single", "--s1-duration", "100ms"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "S1-single") {
		t.Fatalf("err = %v, want a failed S1-single", err)
	}
	if !strings.Contains(out.String(), "FAILED") {
		t.Errorf("table does not show the failure:\n%s", out.String())
	}
}
