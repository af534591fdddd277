package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/sqlite"
	"github.com/tandem-dev/tandem/runtime/store/storetest"
)

// A compaction pass reports itself in the metrics: a pass that removed
// history counts as ok with what it removed, a pass that fails as error.
func TestCompactionMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s.SetSnapshotInterval(10)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var entries []store.Entry
	for i := int64(1); i <= 50; i++ {
		entries = append(entries, store.Entry{Doc: "d", Rev: i, Op: ot.Op{{Insert: "x"}}, Client: "c", Seq: i, User: "u", Time: base})
	}
	if err := s.Write(ctx, entries); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := store.NewCompactionMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	opts := store.CompactionOptions{
		Retention: store.Retention{Revisions: 20}, Metrics: m,
		Now: func() time.Time { return base.Add(time.Hour) },
	}
	res := store.CompactAll(ctx, s, opts)
	if res.Ops != 30 {
		t.Fatalf("compaction removed %d operations, want 30 (revisions 1-30)", res.Ops)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The store is closed now: the next pass fails.
	store.CompactAll(ctx, s, opts)

	for _, tc := range []struct {
		name, metric, result string
		want                 float64
	}{
		{"ok runs", "tandem_compaction_runs_total", "ok", 1},
		{"failed runs", "tandem_compaction_runs_total", "error", 1},
		{"operations removed", "tandem_compaction_operations_removed_total", "", 30},
		{"snapshots removed", "tandem_compaction_snapshots_removed_total", "", 2}, // at 10 and 20; the one at 30 is the cut
	} {
		if got := storetest.Gathered(t, reg, tc.metric, tc.result); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := storetest.Gathered(t, reg, "tandem_compaction_last_success_timestamp_seconds", ""); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last success timestamp = %v, want about now", got)
	}
	if got := storetest.Gathered(t, reg, "tandem_compaction_duration_seconds", ""); got != 2 {
		t.Errorf("duration histogram has %v passes, want 2", got)
	}
}
