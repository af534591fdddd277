package bench

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startPprofServer serves net/http/pprof the way tandem-runtime's
// --debug-addr listener does.
func startPprofServer(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs.URL
}

func TestCPUProfileSeconds(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "seconds=1"},
		{300 * time.Millisecond, "seconds=1"},
		{15 * time.Second, "seconds=15"},
		{2600 * time.Millisecond, "seconds=3"},
	}
	for _, tt := range tests {
		p := CPUProfile("http://127.0.0.1:6060/", tt.d, "f")
		if want := "http://127.0.0.1:6060/debug/pprof/profile?" + tt.want; p.URL != want {
			t.Errorf("CPUProfile(%v).URL = %q, want %q", tt.d, p.URL, want)
		}
	}
}

func TestFetchProfile(t *testing.T) {
	good := startPprofServer(t)
	down := httptest.NewServer(nil)
	down.Close()
	noPprof := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(noPprof.Close)

	tests := []struct {
		name    string
		profile func(file string) Profile
		wantErr string // empty: the file is written
	}{
		{"cpu", func(f string) Profile { return CPUProfile(good, 300*time.Millisecond, f) }, ""},
		{"heap", func(f string) Profile { return HeapProfile(good, f) }, ""},
		{"runtime down", func(f string) Profile { return HeapProfile(down.URL, f) }, "fetch profile"},
		{"no pprof handlers", func(f string) Profile { return CPUProfile(noPprof.URL, time.Second, f) }, "HTTP 404"},
		{"malformed URL", func(f string) Profile { return Profile{URL: "http://[::1", File: f} }, "profile request"},
		{"directory missing", func(f string) Profile { return HeapProfile(good, filepath.Join(f, "nested", "p")) }, "create profile file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "p.pprof")
			err := FetchProfile(context.Background(), tt.profile(file))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				// A failed fetch leaves nothing behind, not even a
				// temporary file.
				if left, _ := os.ReadDir(dir); len(left) != 0 {
					t.Errorf("left %v in the profile directory", left)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			// A pprof profile is a gzipped protocol buffer.
			if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
				t.Errorf("%s is %d bytes, not a gzipped profile: %q", file, len(b), b[:min(len(b), 64)])
			}
		})
	}
}

func TestStartProfilesReportsEachFailure(t *testing.T) {
	good := startPprofServer(t)
	down := httptest.NewServer(nil)
	down.Close()
	dir := t.TempDir()
	wait := StartProfiles(context.Background(), []Profile{
		HeapProfile(good, filepath.Join(dir, "good.heap.pprof")),
		HeapProfile(down.URL, filepath.Join(dir, "down.heap.pprof")),
	})
	errs := wait()
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), down.URL) {
		t.Fatalf("errors %v, want one naming %s", errs, down.URL)
	}
	if fi, err := os.Stat(filepath.Join(dir, "good.heap.pprof")); err != nil || fi.Size() == 0 {
		t.Errorf("good profile: %v, %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "down.heap.pprof")); !os.IsNotExist(err) {
		t.Errorf("failed profile left a file: %v", err)
	}
}
