package storetest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Gathered returns the value of a counter or gauge, or the sample count of
// a histogram, named name in reg; result, when not empty, picks the series
// whose single label has that value. It fails the test when there is none.
func Gathered(t *testing.T, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if result != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != result) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	t.Fatalf("metric %s{result=%q} not gathered", name, result)
	return 0
}
