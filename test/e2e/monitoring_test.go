//go:build e2e

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

const (
	podMonitorCRD     = "podmonitors.monitoring.coreos.com"
	prometheusRuleCRD = "prometheusrules.monitoring.coreos.com"
)

// endpoint0 is the PodMonitor's first podMetricsEndpoints entry.
func endpoint0(pm map[string]any) map[string]any {
	eps, _ := field(pm, "spec", "podMetricsEndpoints").([]any)
	if len(eps) == 0 {
		return nil
	}
	ep, _ := eps[0].(map[string]any)
	return ep
}

// ruleExprs maps each alert of a PrometheusRule to its expression.
func ruleExprs(rule map[string]any) map[string]string {
	out := map[string]string{}
	groups, _ := field(rule, "spec", "groups").([]any)
	for _, g := range groups {
		rules, _ := field(g, "rules").([]any)
		for _, r := range rules {
			out[str(r, "alert")] = str(r, "expr")
		}
	}
	return out
}

// monitoringSteps runs spec.monitoring on the kwok control plane, with the
// operator under the chart's RBAC: reported (not failed) while the
// prometheus-operator CRDs are missing, then a PodMonitor and a
// PrometheusRule created as soon as the CRDs from the pinned Go module are
// installed, spec updates and drift followed, each removed when the spec
// stops asking for it, and both garbage-collected with the CollabCluster.
func monitoringSteps(t *testing.T, c *cluster, op *operator, step func(string, func(*testing.T))) {
	root := c.root
	mon := loadSample(t, root, managedSample).renamed(t, "mon", func(spec map[string]any) {
		spec["runtime"] = map[string]any{"replicas": 2}
		spec["monitoring"] = map[string]any{
			"labels":         map[string]any{"release": "kube-prometheus-stack"},
			"scrapeInterval": "20s",
			"alerts":         map[string]any{"flushStalledSeconds": 60},
		}
	})
	const name = "mon-runtime" // the PodMonitor's and the PrometheusRule's
	var uid string

	step("spec.monitoring without the prometheus-operator CRDs: MonitoringReady False, the cluster still Ready", func(t *testing.T) {
		c.kApply(t, appNS, mon.yaml(t))
		msg := c.waitCondition(t, op, mon.name, "MonitoringReady", "False", "PrometheusOperatorNotInstalled")
		for _, want := range []string{podMonitorCRD, prometheusRuleCRD, "Editing is not affected"} {
			if !strings.Contains(msg, want) {
				t.Errorf("MonitoringReady message does not say %q: %s", want, msg)
			}
		}
		// Monitoring never holds the cluster back.
		if _, err := c.kubectl(t.Context(), "wait", "--for=condition=Ready", "collabcluster/"+mon.name, "-n", appNS, "--timeout="+readyTimeout.String()); err != nil {
			t.Fatalf("%v\n%s", err, c.k(t, "get", "collabcluster", mon.name, "-n", appNS, "-o", "yaml"))
		}
		if s, r, m := condition(c.getJSON(t, "collabcluster", mon.name, "-n", appNS), "Degraded"); s == "True" {
			t.Errorf("Degraded without the prometheus-operator: %s: %s", r, m)
		}
		uid = str(c.getJSON(t, "collabcluster", mon.name, "-n", appNS), "metadata", "uid")
	})

	step("prometheus-operator CRDs installed: PodMonitor and PrometheusRule from the spec", func(t *testing.T) {
		c.installCRDs(t, root, "prometheus-operator", podMonitorCRD, prometheusRuleCRD)
		msg := c.waitCondition(t, op, mon.name, "MonitoringReady", "True", "MonitorsCreated")
		if !strings.Contains(msg, "PodMonitor "+name) || !strings.Contains(msg, "PrometheusRule "+name) {
			t.Errorf("MonitoringReady message does not name both children: %s", msg)
		}

		pm := c.getJSON(t, "podmonitors.monitoring.coreos.com", name, "-n", appNS)
		if !ownedBy(pm, uid) {
			t.Errorf("PodMonitor not owned by %s", mon.name)
		}
		if got := str(pm, "metadata", "labels", "release"); got != "kube-prometheus-stack" {
			t.Errorf("PodMonitor label release=%q, want spec.monitoring.labels' kube-prometheus-stack", got)
		}
		ep := endpoint0(pm)
		if str(ep, "port") != "http" || str(ep, "path") != "/metrics" || str(ep, "interval") != "20s" {
			t.Errorf("PodMonitor endpoint %v, want port http, path /metrics, interval 20s", ep)
		}
		// The selector must pick exactly this cluster's runtime pods, and
		// they must have the port it names.
		sel, _ := field(pm, "spec", "selector", "matchLabels").(map[string]any)
		if len(sel) == 0 {
			t.Fatalf("PodMonitor has no selector: %v", field(pm, "spec"))
		}
		var kv []string
		for k, v := range sel {
			kv = append(kv, fmt.Sprintf("%s=%v", k, v))
		}
		pods := items(c.getJSON(t, "pods", "-n", appNS, "-l", strings.Join(kv, ",")))
		if len(pods) != 2 {
			t.Fatalf("the PodMonitor's selector %v picks %d pods %v, want the 2 runtime pods", kv, len(pods), names(pods))
		}
		for _, p := range pods {
			if !strings.HasPrefix(str(p, "metadata", "name"), "mon-") {
				t.Errorf("the selector picks pod %s of another cluster", str(p, "metadata", "name"))
			}
			if str(p, "metadata", "annotations", "prometheus.io/scrape") != "true" {
				t.Errorf("pod %s lacks prometheus.io/scrape", str(p, "metadata", "name"))
			}
			var ports []string
			cs, _ := field(p, "spec", "containers").([]any)
			for _, ctr := range cs {
				ps, _ := field(ctr, "ports").([]any)
				for _, port := range ps {
					ports = append(ports, str(port, "name"))
				}
			}
			if !slices.Contains(ports, "http") {
				t.Errorf("pod %s has ports %v, none named http", str(p, "metadata", "name"), ports)
			}
		}

		rule := c.getJSON(t, "prometheusrules.monitoring.coreos.com", name, "-n", appNS)
		if !ownedBy(rule, uid) {
			t.Errorf("PrometheusRule not owned by %s", mon.name)
		}
		exprs := ruleExprs(rule)
		for _, a := range []string{"TandemFlushStalled", "TandemDocumentFlushFailing", "TandemRedisUnavailable", "TandemAckLatencyHigh"} {
			if !strings.Contains(exprs[a], `collabcluster="mon"`) || !strings.Contains(exprs[a], `namespace="`+appNS+`"`) {
				t.Errorf("alert %s missing or not scoped to this cluster: %q", a, exprs[a])
			}
		}
		if !strings.HasSuffix(exprs["TandemFlushStalled"], "> 60") {
			t.Errorf("TandemFlushStalled %q does not use flushStalledSeconds 60", exprs["TandemFlushStalled"])
		}
	})

	step("spec updates and hand edits: the PodMonitor and the PrometheusRule follow the spec", func(t *testing.T) {
		c.k(t, "patch", "collabcluster", mon.name, "-n", appNS, "--type=merge", "-p",
			`{"spec":{"monitoring":{"scrapeInterval":"15s","alerts":{"flushStalledSeconds":90}}}}`)
		eventually(t, stepTimeout, "the PodMonitor interval and the alert threshold to follow the spec", func() (bool, string) {
			iv := str(endpoint0(c.getJSON(t, "podmonitors.monitoring.coreos.com", name, "-n", appNS)), "interval")
			expr := ruleExprs(c.getJSON(t, "prometheusrules.monitoring.coreos.com", name, "-n", appNS))["TandemFlushStalled"]
			return iv == "15s" && strings.HasSuffix(expr, "> 90"), fmt.Sprintf("interval %q, expr %q", iv, expr)
		})
		// A hand edit of a field the operator owns is taken back.
		c.k(t, "patch", "podmonitors.monitoring.coreos.com", name, "-n", appNS, "--type=json", "-p",
			`[{"op":"replace","path":"/spec/podMetricsEndpoints/0/interval","value":"5m"}]`)
		eventually(t, stepTimeout, "the hand-edited PodMonitor interval to be restored", func() (bool, string) {
			iv := str(endpoint0(c.getJSON(t, "podmonitors.monitoring.coreos.com", name, "-n", appNS)), "interval")
			return iv == "15s", "interval " + iv
		})
	})

	step("alerts disabled, then monitoring removed: each child deleted, the condition dropped", func(t *testing.T) {
		c.k(t, "patch", "collabcluster", mon.name, "-n", appNS, "--type=merge", "-p",
			`{"spec":{"monitoring":{"alerts":{"enabled":false}}}}`)
		eventually(t, stepTimeout, "the PrometheusRule to be deleted, the PodMonitor kept", func() (bool, string) {
			_, rule := c.tryGetJSON(t, "prometheusrules.monitoring.coreos.com", name, "-n", appNS)
			_, pm := c.tryGetJSON(t, "podmonitors.monitoring.coreos.com", name, "-n", appNS)
			return !rule && pm, fmt.Sprintf("PrometheusRule present %v, PodMonitor present %v", rule, pm)
		})
		if s, r, _ := condition(c.getJSON(t, "collabcluster", mon.name, "-n", appNS), "MonitoringReady"); s != "True" {
			t.Errorf("MonitoringReady=%s (%s) with only the PodMonitor wanted", s, r)
		}
		c.k(t, "patch", "collabcluster", mon.name, "-n", appNS, "--type=json", "-p", `[{"op":"remove","path":"/spec/monitoring"}]`)
		eventually(t, stepTimeout, "the PodMonitor to be deleted", func() (bool, string) {
			_, pm := c.tryGetJSON(t, "podmonitors.monitoring.coreos.com", name, "-n", appNS)
			return !pm, fmt.Sprintf("PodMonitor present %v", pm)
		})
		c.noCondition(t, mon.name, "MonitoringReady")
	})

	step("deleting the CollabCluster garbage-collects its PodMonitor and PrometheusRule", func(t *testing.T) {
		c.k(t, "patch", "collabcluster", mon.name, "-n", appNS, "--type=merge", "-p", `{"spec":{"monitoring":{"enabled":true}}}`)
		c.waitCondition(t, op, mon.name, "MonitoringReady", "True", "MonitorsCreated")
		for _, kind := range []string{"podmonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com"} {
			if got := names(c.owned(t, kind, appNS, uid)); len(got) != 1 {
				t.Fatalf("%s owned by %s: %v, want one", kind, mon.name, got)
			}
		}
		c.k(t, "delete", "collabcluster", mon.name, "-n", appNS, "--wait=true", "--timeout=1m")
		eventually(t, stepTimeout, "the monitoring children to be garbage-collected", func() (bool, string) {
			var left []string
			for _, kind := range []string{"podmonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com", "deployments"} {
				for _, n := range names(c.owned(t, kind, appNS, uid)) {
					left = append(left, kind+"/"+n)
				}
			}
			return len(left) == 0, fmt.Sprintf("left: %v", left)
		})
	})
}
