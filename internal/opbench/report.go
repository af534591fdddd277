package opbench

import (
	"fmt"
	"io"
	"strings"
)

// Targets at N = 500 (docs/benchmarks.md).
const (
	TargetChildrenSeconds = 30
	TargetReadyLagSeconds = 10
	TargetPeakRSSMB       = 150
)

// Markdown writes the operator section of docs/benchmarks.md for one or
// more runs, one column each.
func Markdown(w io.Writer, runs []*Result) error {
	var b strings.Builder
	b.WriteString("## Operator at scale\n\n")
	b.WriteString("`tandem-bench operator` (`make bench-operator`, `internal/opbench`): a kwok control plane (real kube-apiserver, etcd, kube-scheduler and kube-controller-manager; kwok plays the kubelet of fake nodes and marks pods Ready), N copies of the managed sample (2 runtime replicas, managed Redis and PostgreSQL: 4 pods and 2 volume claims each) created at once, and the operator as its own process (the built `cmd/manager`, default flags) so its memory and CPU are its own. Requests and writes are the operator's `tandem_operator_kube_api_requests_total`; the resync annotates every converged CollabCluster, which reconciles each once as a periodic resync would; the restart starts a fresh operator over them.\n\n")
	b.WriteString("| | target at N = 500 |")
	for _, r := range runs {
		fmt.Fprintf(&b, " N = %d |", r.N)
	}
	b.WriteString("\n|---|---|")
	for range runs {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	row := func(name, target string, f func(*Result) string) {
		fmt.Fprintf(&b, "| %s | %s |", name, target)
		for _, r := range runs {
			fmt.Fprintf(&b, " %s |", f(r))
		}
		b.WriteString("\n")
	}
	sec := func(v float64) string { return fmt.Sprintf("%.1f s", v) }
	row("fake nodes / pods", "", func(r *Result) string { return fmt.Sprintf("%d / %d", r.Nodes, r.Pods) })
	row("every child created", fmt.Sprintf("≤ %d s", TargetChildrenSeconds), func(r *Result) string { return sec(r.ChildrenSeconds) })
	row("last pod Ready", "", func(r *Result) string { return sec(r.LastPodReadySeconds) })
	row("every CollabCluster Ready", "", func(r *Result) string { return sec(r.AllReadySeconds) })
	row("Ready lag after the last pod", fmt.Sprintf("≤ %d s", TargetReadyLagSeconds), func(r *Result) string { return sec(r.ReadyLagSeconds) })
	row("per CollabCluster, Ready after its own pods (p50 / max)", "", func(r *Result) string {
		return fmt.Sprintf("%.1f / %.1f s", r.ClusterLagP50Seconds, r.ClusterLagMaxSeconds)
	})
	row("API requests / writes per CollabCluster", "", func(r *Result) string {
		return fmt.Sprintf("%.1f / %.1f", r.RequestsPerCluster, r.WritesPerCluster)
	})
	row("operator peak RSS", fmt.Sprintf("≤ %d MB", TargetPeakRSSMB), func(r *Result) string { return fmt.Sprintf("%.0f MB", r.PeakRSSMB) })
	row("operator CPU until converged", "", func(r *Result) string { return sec(r.CPUSeconds) })
	row("resync of every converged CollabCluster: writes (requests, reconciles)", "0 writes", func(r *Result) string {
		return fmt.Sprintf("%d (%d, %d)", r.ResyncWrites, r.ResyncRequests, r.ResyncReconciles)
	})
	row("restart over them: writes, time, peak RSS", "", func(r *Result) string {
		return fmt.Sprintf("%d, %.1f s, %.0f MB", r.RestartWrites, r.RestartSeconds, r.RestartPeakRSSMB)
	})
	row("restart with unrelated Secrets and Pods: peak RSS", "", func(r *Result) string {
		if r.Unrelated == 0 {
			return "not measured"
		}
		return fmt.Sprintf("%.0f MB (%d of each)", r.UnrelatedPeakRSSMB, r.Unrelated)
	})
	row("load average at the end", "", func(r *Result) string { return r.Load })
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}
