package specs

import (
	"fmt"
	"maps"
	"strconv"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	collabv1 "github.com/tandem-dev/tandem/api/v1alpha1"
)

// The prometheus-operator kinds of spec.monitoring, written unstructured
// so that the operator needs no prometheus-operator Go module.
var (
	PodMonitorGVK     = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PodMonitor"}
	PrometheusRuleGVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"}
)

// CRD names of the prometheus-operator kinds.
const (
	PodMonitorCRDName     = "podmonitors.monitoring.coreos.com"
	PrometheusRuleCRDName = "prometheusrules.monitoring.coreos.com"
)

// Defaults of spec.monitoring, mirrored from the CRD markers.
const (
	DefaultScrapeInterval            = "30s"
	DefaultFlushStalledSeconds int32 = 120
	DefaultAckLatencyP99Millis int32 = 500
	DefaultErrorsPerSecond     int32 = 5
)

// LabelCollabCluster is the label the PodMonitor gives every runtime
// series: the CollabCluster's name. With namespace it scopes the alerts
// and the dashboard to one CollabCluster.
const LabelCollabCluster = "collabcluster"

// Annotations of the runtime pods and Service for scrapers that discover
// targets by annotation (the prometheus.io convention) rather than by
// PodMonitor.
const (
	AnnotationScrape = "prometheus.io/scrape"
	AnnotationPort   = "prometheus.io/port"
	AnnotationPath   = "prometheus.io/path"
)

func scrapeAnnotations() map[string]string {
	return map[string]string{
		AnnotationScrape: "true",
		AnnotationPort:   strconv.Itoa(RuntimePort),
		AnnotationPath:   "/metrics",
	}
}

// PodMonitorName and PrometheusRuleName are the monitoring children.
func PodMonitorName(cc *collabv1.CollabCluster) string     { return cc.Name + "-runtime" }
func PrometheusRuleName(cc *collabv1.CollabCluster) string { return cc.Name + "-runtime" }

// MonitoringEnabled reports whether spec.monitoring asks for a PodMonitor.
func MonitoringEnabled(in *collabv1.CollabCluster) bool {
	cc := WithDefaults(in)
	return cc.Spec.Monitoring != nil && *cc.Spec.Monitoring.Enabled
}

// AlertsEnabled reports whether spec.monitoring asks for a PrometheusRule.
func AlertsEnabled(in *collabv1.CollabCluster) bool {
	cc := WithDefaults(in)
	return MonitoringEnabled(cc) && *cc.Spec.Monitoring.Alerts.Enabled
}

func defaultMonitoring(m *collabv1.MonitoringSpec) {
	if m.Enabled == nil {
		m.Enabled = ptr.To(true)
	}
	if m.ScrapeInterval == "" {
		m.ScrapeInterval = DefaultScrapeInterval
	}
	a := &m.Alerts
	if a.Enabled == nil {
		a.Enabled = ptr.To(true)
	}
	if a.FlushStalledSeconds == nil {
		a.FlushStalledSeconds = ptr.To(DefaultFlushStalledSeconds)
	}
	if a.AckLatencyP99Milliseconds == nil {
		a.AckLatencyP99Milliseconds = ptr.To(DefaultAckLatencyP99Millis)
	}
	if a.ErrorsPerSecond == nil {
		a.ErrorsPerSecond = ptr.To(DefaultErrorsPerSecond)
	}
}

// monitoringLabels are a monitoring child's labels: the component's, plus
// spec.monitoring.labels for the Prometheus's selectors. The managed-by
// label stays the operator's: its cache selects its children by it.
func monitoringLabels(cc *collabv1.CollabCluster) map[string]string {
	l := Labels(cc, ComponentRuntime)
	maps.Copy(l, cc.Spec.Monitoring.Labels)
	l[LabelManagedBy] = FieldManager
	return l
}

// RuntimePodMonitor scrapes /metrics on every runtime pod's http port and
// labels each series with its CollabCluster; nil unless spec.monitoring
// is enabled.
//
// The operator writes no NetworkPolicy for the runtime pods (browsers
// reach them from anywhere the Service is exposed), so any Prometheus can
// scrape them; the policies it writes for the managed Redis and PostgreSQL
// admit only the runtime pods, and those stores are not scraped.
func RuntimePodMonitor(in *collabv1.CollabCluster) *unstructured.Unstructured {
	if !MonitoringEnabled(in) {
		return nil
	}
	cc := WithDefaults(in)
	selector := map[string]any{}
	for k, v := range SelectorLabels(cc, ComponentRuntime) {
		selector[k] = v
	}
	spec := map[string]any{
		"selector": map[string]any{"matchLabels": selector},
		"podMetricsEndpoints": []any{map[string]any{
			"port":     "http",
			"path":     "/metrics",
			"interval": cc.Spec.Monitoring.ScrapeInterval,
			"relabelings": []any{map[string]any{
				"action":       "replace",
				"sourceLabels": []any{"__meta_kubernetes_pod_label_app_kubernetes_io_instance"},
				"targetLabel":  LabelCollabCluster,
			}},
		}},
	}
	u := unstructuredChild(cc, PodMonitorGVK, PodMonitorName(cc), ComponentRuntime, spec)
	u.SetLabels(monitoringLabels(cc))
	return u
}

// RuntimePrometheusRule holds the runtime's alerts for this CollabCluster
// only (every expression selects its namespace and name); nil unless
// spec.monitoring and its alerts are enabled. Each alert's runbook is a
// section of docs/operations.md.
func RuntimePrometheusRule(in *collabv1.CollabCluster) *unstructured.Unstructured {
	if !AlertsEnabled(in) {
		return nil
	}
	cc := WithDefaults(in)
	spec := map[string]any{"groups": []any{RuntimeRuleGroup(cc)}}
	u := unstructuredChild(cc, PrometheusRuleGVK, PrometheusRuleName(cc), ComponentRuntime, spec)
	u.SetLabels(monitoringLabels(cc))
	return u
}

// RunbookURL is where every alert's runbook lives.
const RunbookURL = "https://github.com/tandem-dev/tandem/blob/main/docs/operations.md"

// RuntimeRuleGroup is the Prometheus rule group of cc's runtime alerts, in
// the rule file format (the PrometheusRule's spec.groups[0]; promtool
// tests it as config/prometheus/runtime-alerts.yaml).
func RuntimeRuleGroup(in *collabv1.CollabCluster) map[string]any {
	cc := WithDefaults(in)
	if cc.Spec.Monitoring == nil {
		cc.Spec.Monitoring = &collabv1.MonitoringSpec{}
		defaultMonitoring(cc.Spec.Monitoring)
	}
	a := cc.Spec.Monitoring.Alerts
	sel := fmt.Sprintf(`namespace=%q,%s=%q`, cc.Namespace, LabelCollabCluster, cc.Name)
	who := fmt.Sprintf("CollabCluster %s/%s", cc.Namespace, cc.Name)
	ackSeconds := strconv.FormatFloat(float64(*a.AckLatencyP99Milliseconds)/1000, 'f', -1, 64)
	alert := func(name, expr, forDur, severity, summary, description, anchor string) map[string]any {
		return map[string]any{
			"alert": name,
			"expr":  expr,
			"for":   forDur,
			"labels": map[string]any{
				"severity":         severity,
				"namespace":        cc.Namespace,
				LabelCollabCluster: cc.Name,
			},
			"annotations": map[string]any{
				"summary":     summary,
				"description": description,
				"runbook_url": RunbookURL + "#" + anchor,
			},
		}
	}
	rules := []any{
		alert("TandemFlushStalled",
			fmt.Sprintf(`max(tandem_flush_oldest_unpersisted_seconds{%s}) > %d`, sel, *a.FlushStalledSeconds),
			"1m", "critical",
			who+": acknowledged edits are not reaching PostgreSQL",
			fmt.Sprintf("The oldest acknowledged edit not yet in PostgreSQL is {{ $value | humanizeDuration }} old (threshold %ds). Until the flush catches up, those edits exist only in Redis.", *a.FlushStalledSeconds),
			"tandemflushstalled"),
		alert("TandemDocumentFlushFailing",
			fmt.Sprintf(`max(tandem_flush_failing_documents{%s}) > 0`, sel),
			"5m", "critical",
			who+": PostgreSQL refuses the edits of {{ $value }} document(s)",
			"PostgreSQL is up but refuses to store some documents' operations; they stay in Redis and are retried. The runtime logs name the documents.",
			"tandemdocumentflushfailing"),
		alert("TandemRedisUnavailable",
			fmt.Sprintf(`max(tandem_redis_breaker_state{%s}) >= 2`, sel),
			"1m", "critical",
			who+": Redis is unreachable from the runtime",
			"The runtime's Redis circuit breaker is open on at least one pod: editing on that pod is refused (clients retry) until Redis answers.",
			"tandemredisunavailable"),
		alert("TandemPostgresUnreachable",
			fmt.Sprintf(`sum(rate(tandem_flush_errors_total{%s}[2m])) > 0`, sel),
			"3m", "warning",
			who+": flushes to PostgreSQL keep failing",
			"Flush attempts to PostgreSQL have kept failing for five minutes (some failed in every two-minute window for three minutes), usually because PostgreSQL is unreachable; documents whose rows a reachable PostgreSQL refuses are not counted here (see TandemDocumentFlushFailing). Editing goes on; acknowledged edits wait in Redis (see TandemFlushStalled).",
			"tandempostgresunreachable"),
		alert("TandemAckLatencyHigh",
			fmt.Sprintf(`histogram_quantile(0.99, sum by (le) (rate(tandem_ack_seconds_bucket{%s}[5m]))) > %s`, sel, ackSeconds),
			"10m", "warning",
			who+": edits take long to be acknowledged",
			fmt.Sprintf("The 99th percentile of the time from a submission to its ack is {{ $value | humanizeDuration }} (threshold %sms).", strconv.Itoa(int(*a.AckLatencyP99Milliseconds))),
			"tandemacklatencyhigh"),
		alert("TandemErrorRateHigh",
			fmt.Sprintf(`sum by (code) (rate(tandem_errors_total{%s}[5m])) > %d`, sel, *a.ErrorsPerSecond),
			"10m", "warning",
			who+": clients get many {{ $labels.code }} errors",
			fmt.Sprintf("The runtime sends {{ $value | humanize }} {{ $labels.code }} errors per second to clients (threshold %d/s).", *a.ErrorsPerSecond),
			"tandemerrorratehigh"),
		alert("TandemRuntimeRestarting",
			fmt.Sprintf(`sum(changes(process_start_time_seconds{%s}[15m])) > 2`, sel),
			"0s", "warning",
			who+": runtime processes restarted {{ $value }} times in 15 minutes",
			"Runtime containers keep restarting (crashes, OOM kills or failed liveness probes). Each restart drops that pod's WebSockets.",
			"tandemruntimerestarting"),
		alert("TandemRuntimeTargetDown",
			fmt.Sprintf(`count(up{%s} == 0) > 0`, sel),
			"5m", "warning",
			who+": {{ $value }} runtime pod(s) cannot be scraped",
			"Prometheus cannot reach /metrics on some runtime pods: the pod is not serving, or the network to it is blocked.",
			"tandemruntimetargetdown"),
	}
	return map[string]any{"name": "tandem-runtime." + cc.Namespace + "." + cc.Name, "rules": rules}
}
