// Package alerts tests the Prometheus alert rules that ship with Tandem:
// the runtime's (written per CollabCluster by the operator) and the
// operator's (the Helm chart's PrometheusRule), with promtool.
package alerts

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/test/testtools"
)

var ruleFiles = []struct{ rules, tests string }{
	{"config/prometheus/runtime-alerts.yaml", "test/alerts/runtime-alerts.test.yaml"},
	{"config/prometheus/operator-alerts.yaml", "test/alerts/operator-alerts.test.yaml"},
}

func promtool(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := testtools.Tool(ctx, t, "promtool")
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
}

// The rule files are valid, and every alert fires and stays quiet when it
// should (the promtool test files).
func TestAlertRules(t *testing.T) {
	root := testtools.RepoRoot(t)
	for _, f := range ruleFiles {
		t.Run(filepath.Base(f.rules), func(t *testing.T) {
			promtool(t, "check", "rules", filepath.Join(root, f.rules))
			promtool(t, "test", "rules", filepath.Join(root, f.tests))
		})
	}
}

type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Alert       string            `json:"alert"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

type testFile struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string `json:"alertname"`
			ExpAlerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// Every alert is tested both firing and not firing, and its runbook link
// points at a section of docs/operations.md that exists.
func TestEveryAlertIsTestedAndHasARunbook(t *testing.T) {
	root := testtools.RepoRoot(t)
	ops, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ (.+)$`).FindAllStringSubmatch(string(ops), -1) {
		anchors[githubAnchor(m[1])] = true
	}
	for _, f := range ruleFiles {
		var rules ruleFile
		testtools.ReadYAML(t, filepath.Join(root, f.rules), &rules)
		var tests testFile
		testtools.ReadYAML(t, filepath.Join(root, f.tests), &tests)
		fires, quiet := map[string]bool{}, map[string]bool{}
		for _, tc := range tests.Tests {
			for _, a := range tc.AlertRuleTest {
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname] = true
				} else {
					quiet[a.Alertname] = true
				}
			}
		}
		n := 0
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				n++
				if !fires[r.Alert] || !quiet[r.Alert] {
					t.Errorf("%s: alert %s tested firing %v, not firing %v; want both", f.tests, r.Alert, fires[r.Alert], quiet[r.Alert])
				}
				url := r.Annotations["runbook_url"]
				_, anchor, ok := strings.Cut(url, "docs/operations.md#")
				if !ok || !anchors[anchor] {
					t.Errorf("alert %s: runbook_url %q is not a section of docs/operations.md", r.Alert, url)
				}
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("alert %s lacks a summary or description", r.Alert)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s has no alert", f.rules)
		}
	}
}

// githubAnchor is the fragment GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}
