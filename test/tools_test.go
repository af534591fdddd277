package test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pinnedTools is what hack/tools.sh must provide, with the version each one
// reports; a version bump has to update this table on purpose.
var pinnedTools = []struct {
	name, version string
	versionArgs   []string
	wantInVersion string
}{
	{"kube-apiserver", "v1.37.2", []string{"--version"}, "v1.37.2"},
	{"etcd", "v3.6.16", []string{"--version"}, "3.6.16"},
	{"kubectl", "v1.37.2", []string{"version", "--client"}, "v1.37.2"},
	{"kube-controller-manager", "v1.37.2", []string{"--version"}, "v1.37.2"},
	{"kube-scheduler", "v1.37.2", []string{"--version"}, "v1.37.2"},
	{"controller-gen", "v0.23.0", []string{"--version"}, "v0.23.0"},
	{"helm", "v4.3.1", []string{"version"}, "v4.3.1"},
	{"kwok", "v0.8.0", []string{"--version"}, "0.8.0"},
	{"kwokctl", "v0.8.0", []string{"--version"}, "0.8.0"},
	{"promtool", "v0.316.0", []string{"--version"}, "3.16"},
	{"prometheus", "v0.316.0", []string{"--version"}, "3.16"},
}

// realClusterTools are built on request for `make test-e2e-real` (listed
// after pinnedTools); hack/real-cluster checks them when it builds them.
var realClusterTools = []struct{ name, version string }{
	{"kubelet", "v1.37.2"},
	{"kube-proxy", "v1.37.2"},
	{"coredns", "v1.15.0"},
	{"buildkitd", "v0.34.2"},
	{"buildctl", "v0.34.2"},
	{"crane", "v0.22.1"},
}

func runTools(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot(t), "hack", "tools.sh"), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// TestToolsList checks the names, versions and cache paths the script
// reports, in an empty cache (so nothing is built).
func TestToolsList(t *testing.T) {
	t.Parallel()
	cache := t.TempDir()
	out, stderr, err := runTools(t, []string{"TANDEM_TOOLS_DIR=" + cache}, "list")
	if err != nil {
		t.Fatalf("tools.sh list: %v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	all := make([]struct{ name, version string }, 0, len(pinnedTools)+len(realClusterTools))
	for _, tool := range pinnedTools {
		all = append(all, struct{ name, version string }{tool.name, tool.version})
	}
	all = append(all, realClusterTools...)
	if len(lines) != len(all) {
		t.Fatalf("list has %d lines, want %d:\n%s", len(lines), len(all), out)
	}
	for i, tool := range all {
		f := strings.Fields(lines[i])
		want := []string{tool.name, tool.version, "missing", filepath.Join(cache, tool.name+"-"+tool.version, tool.name)}
		if strings.Join(f, " ") != strings.Join(want, " ") {
			t.Errorf("list line %d = %q, want %q", i, f, want)
		}
	}
}

func TestToolsBadUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"bin", "no-such-tool"}, "unknown tool 'no-such-tool'"},
		{[]string{"install", "kubectl", "no-such-tool"}, "unknown tool 'no-such-tool'"},
		{[]string{"frobnicate"}, "usage:"},
		{nil, "usage:"},
		{[]string{"bin"}, "usage:"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			t.Parallel()
			cache := t.TempDir()
			_, stderr, err := runTools(t, []string{"TANDEM_TOOLS_DIR=" + cache}, tc.args...)
			if err == nil {
				t.Fatalf("tools.sh %v succeeded, want an error", tc.args)
			}
			if !strings.Contains(stderr, tc.wantErr) {
				t.Fatalf("stderr %q does not contain %q", stderr, tc.wantErr)
			}
			// Bad usage must be rejected before anything is built.
			if entries, _ := os.ReadDir(cache); len(entries) != 0 {
				t.Fatalf("bad usage left %d entries in the cache", len(entries))
			}
		})
	}
}

// TestToolsInstalled checks every tool already in the real cache: it runs
// and reports the pinned version, and asking for it again rebuilds nothing.
// Under CI=true every tool must be there (.ci/run runs `make tools` first).
func TestToolsInstalled(t *testing.T) {
	for _, tool := range pinnedTools {
		t.Run(tool.name, func(t *testing.T) {
			out, stderr, err := runTools(t, nil, "list")
			if err != nil {
				t.Fatalf("tools.sh list: %v\n%s", err, stderr)
			}
			var path string
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) == 4 && f[0] == tool.name && f[2] == "installed" {
					path = f[3]
				}
			}
			if path == "" {
				msg := tool.name + " is not built; run `make tools`"
				if os.Getenv("CI") == "true" {
					t.Fatal(msg)
				}
				t.Skip(msg)
			}
			before, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}

			got, stderr, err := runTools(t, nil, "bin", tool.name)
			if err != nil {
				t.Fatalf("tools.sh bin %s: %v\n%s", tool.name, err, stderr)
			}
			if strings.TrimSpace(got) != path {
				t.Fatalf("bin %s = %q, want %q", tool.name, got, path)
			}
			after, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if !after.ModTime().Equal(before.ModTime()) {
				t.Fatalf("bin %s rebuilt an installed tool", tool.name)
			}

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			version, err := exec.CommandContext(ctx, path, tool.versionArgs...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %v: %v\n%s", path, tool.versionArgs, err, version)
			}
			if !strings.Contains(string(version), tool.wantInVersion) {
				t.Fatalf("%s %v printed %q, want it to contain %q", tool.name, tool.versionArgs, version, tool.wantInVersion)
			}
		})
	}
}
