package testtools

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// recorder stands in for the test handed to Tool so that its skip or
// failure can be checked instead of ending this test.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Skip(args ...any)  { r.skipped = fmt.Sprint(args...) }
func (r *recorder) Fatal(args ...any) { r.failed = fmt.Sprint(args...) }

func TestRepoRoot(t *testing.T) {
	root := RepoRoot(t)
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatalf("read go.mod: %v", err)
	}
	if first, _, _ := strings.Cut(string(mod), "\n"); first != "module github.com/tandem-dev/tandem" {
		t.Fatalf("%s/go.mod starts with %q, want the tandem module", root, first)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	if want := filepath.Join(root, "test", "testtools"); wd != want {
		t.Fatalf("working directory %s is not %s", wd, want)
	}
}

// TestToolUnknown checks that a tool hack/tools.sh cannot provide skips the
// test, except under CI=true where it fails it.
func TestToolUnknown(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			r := &recorder{TB: t}
			if got := Tool(t.Context(), r, "no-such-tool"); got != "" {
				t.Errorf("Tool returned %q", got)
			}
			stopped, other, how := r.skipped, r.failed, "skip"
			if ci == "true" {
				stopped, other, how = r.failed, r.skipped, "fail"
			}
			if !strings.Contains(stopped, "unknown tool 'no-such-tool'") || other != "" {
				t.Errorf("CI=%q: skip %q, fail %q; want only a %s naming the unknown tool", ci, r.skipped, r.failed, how)
			}
		})
	}
}

// TestToolBuilt checks that Tool returns the cached binary for a tool that
// is already built; it builds nothing itself.
func TestToolBuilt(t *testing.T) {
	root := RepoRoot(t)
	out, err := exec.CommandContext(t.Context(), filepath.Join(root, "hack", "tools.sh"), "list").Output()
	if err != nil {
		t.Fatalf("hack/tools.sh list: %v", err)
	}
	var want string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "kubectl" && f[2] == "installed" {
			want = f[3]
		}
	}
	if want == "" {
		msg := "kubectl is not built; run `make tools`"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	got := Tool(t.Context(), t, "kubectl")
	if got != want {
		t.Fatalf("Tool(kubectl) = %q, want %q", got, want)
	}
	if fi, err := os.Stat(got); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("Tool(kubectl) = %q is not an executable file: %v", got, err)
	}
}
