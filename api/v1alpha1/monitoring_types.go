package v1alpha1

// ConditionMonitoringReady reports whether the PodMonitor and the
// PrometheusRule of spec.monitoring exist. False with reason
// PrometheusOperatorNotInstalled when the prometheus-operator CRDs are
// missing: editing is unaffected, so it never holds Ready back.
const ConditionMonitoringReady = "MonitoringReady"

// MonitoringSpec has the runtime pods scraped and alerted on by a
// prometheus-operator (kube-prometheus-stack and the like): a PodMonitor
// and a PrometheusRule next to the CollabCluster.
type MonitoringSpec struct {
	// Enabled creates the PodMonitor and the PrometheusRule. They need the
	// prometheus-operator's CRDs; without them the MonitoringReady
	// condition says so and nothing else is affected.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// Labels are added to the PodMonitor and the PrometheusRule, for the
	// Prometheus's podMonitorSelector and ruleSelector (kube-prometheus-stack
	// selects release: <its release name> by default).
	// +kubebuilder:validation:MaxProperties=16
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// A CEL rule rather than a Pattern, so that a rejection reads a
	// sentence instead of a regular expression.

	// ScrapeInterval is how often Prometheus scrapes each runtime pod, as
	// a Prometheus duration (30s, 1m).
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9]+(ms|s|m|h)$')",message="scrapeInterval must be a duration such as 30s or 1m: digits, then ms, s, m or h"
	// +kubebuilder:validation:MaxLength=16
	// +optional
	ScrapeInterval string `json:"scrapeInterval,omitempty"`

	// Alerts tunes the PrometheusRule.
	// +kubebuilder:default={}
	// +optional
	Alerts AlertsSpec `json:"alerts,omitempty"`
}

// AlertsSpec are the thresholds of the runtime's alerts. Each alert has a
// runbook in docs/operations.md.
type AlertsSpec struct {
	// Enabled creates the PrometheusRule; false keeps only the PodMonitor.
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// FlushStalledSeconds: TandemFlushStalled fires when the oldest
	// acknowledged edit not yet in PostgreSQL is older than this.
	// +kubebuilder:default=120
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=86400
	// +optional
	FlushStalledSeconds *int32 `json:"flushStalledSeconds,omitempty"`

	// AckLatencyP99Milliseconds: TandemAckLatencyHigh fires when the 99th
	// percentile of the time from a submission to its ack stays above it.
	// +kubebuilder:default=500
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=60000
	// +optional
	AckLatencyP99Milliseconds *int32 `json:"ackLatencyP99Milliseconds,omitempty"`

	// ErrorsPerSecond: TandemErrorRateHigh fires when errors of one code
	// sent to clients stay above this rate across the runtime pods.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	ErrorsPerSecond *int32 `json:"errorsPerSecond,omitempty"`
}
