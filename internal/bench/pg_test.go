package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tandem-dev/tandem/internal/testsvc"
)

// TestPGProbeCountsWriterTransactions runs the S5 probe against a real
// PostgreSQL while a stand-in flusher writes 100 acknowledged operations
// in 4 transactions: the probe must report 40 transactions and 1,000 rows
// per 1,000 operations (its own polling subtracted), and lags of the
// flusher's pace.
func TestPGProbeCountsWriterTransactions(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	setup, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	// The columns the probe reads of pgstore's operations table.
	if _, err := setup.Exec(ctx, `CREATE TABLE operations (doc_id text NOT NULL, rev bigint NOT NULL, PRIMARY KEY (doc_id, rev))`); err != nil {
		t.Fatal(err)
	}
	// A closing backend reports its counters; give it a moment so the
	// catalog rows of CREATE TABLE fall before the probe's baseline.
	setup.Close(ctx)
	time.Sleep(time.Second)
	probe := &PGProbe{URL: pg.URL(), Poll: 2 * time.Millisecond, StatsDelay: 1500 * time.Millisecond}
	run, err := probe.begin(ctx, "doc")
	if err != nil {
		t.Fatal(err)
	}
	defer run.stop()
	w, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}

	const ops, batches = 100, 4
	var acks []revAt
	for b := range batches {
		var rows []string
		for i := range ops / batches {
			rev := b*(ops/batches) + i + 1
			acks = append(acks, revAt{int64(rev), time.Now()})
			rows = append(rows, fmt.Sprintf("('doc', %d)", rev))
		}
		time.Sleep(40 * time.Millisecond) // the flush interval
		if _, err := w.Exec(ctx, "INSERT INTO operations (doc_id, rev) VALUES "+strings.Join(rows, ","), pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
	}
	// A pooled connection reports its counters up to 10 s after going
	// idle; closing this one reports them now and keeps the test short.
	w.Close(ctx)
	res := Result{ID: "S5", Params: map[string]any{}}
	if err := run.finish(ctx, ops, ops, acks, &res); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		metric string
		lo, hi float64
	}{
		// The writer's 4 commits per 100 operations, with slack for its
		// connection's start-up transaction and a background worker's.
		{"pg_xact_per_1000_ops", 40, 55},
		{"pg_rows_per_1000_ops", 1000, 1050},
		{"flush_lag_p50", 1, 500},
		{"flush_lag_max", 30, 1000},
	}
	for _, tt := range tests {
		v := metric(t, res, tt.metric)
		if v < tt.lo || v > tt.hi {
			t.Errorf("%s = %v, want in [%v, %v]", tt.metric, v, tt.lo, tt.hi)
		}
	}
}
