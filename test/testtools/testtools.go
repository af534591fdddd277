// Package testtools finds the repository root, the pinned tool binaries
// (helm, kubectl, kwokctl, the control plane) that hack/tools.sh builds and
// free loopback addresses, for the suites that drive those tools and
// processes.
package testtools

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// buildTimeout bounds one `hack/tools.sh bin`: a cold build of helm, kubectl
// or the control plane takes minutes; a built tool answers at once.
const buildTimeout = 30 * time.Minute

// RepoRoot walks up from the test's working directory (its package
// directory under go test) to the module root.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

// Tool returns the path of the pinned tool name, building it with
// `hack/tools.sh bin` if it is not built yet. Outside CI a tool that cannot
// be had skips the test (a fresh checkout without the tool cache); under
// CI=true it fails, so a broken tool build can never pass silently.
func Tool(ctx context.Context, t testing.TB, name string) string {
	t.Helper()
	root := RepoRoot(t)
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "tools.sh"), "bin", name)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := fmt.Sprintf("hack/tools.sh bin %s: %v\n%s", name, err, stderr.String())
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		} else {
			t.Skip(msg)
		}
		return ""
	}
	return strings.TrimSpace(string(out))
}

// ReadYAML decodes the YAML file at path into into, failing the test when
// it cannot be read or decoded.
func ReadYAML(t testing.TB, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// FreeAddr returns a loopback address nothing listens on, for a server the
// test starts as a separate process.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
