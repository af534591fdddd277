package bench

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// PGProbe measures what the runtime costs PostgreSQL during a scenario
// (S5): transactions and rows written per 1,000 acknowledged operations
// from pg_stat_database, and the flush lag (ack to row committed) by
// polling the operations table of pgstore's schema.
type PGProbe struct {
	URL string
	// Poll is the flush-lag polling interval, which is also the lag's
	// resolution (default 5ms).
	Poll time.Duration
	// StatsDelay is how long to wait before the last pg_stat_database read.
	// A backend that goes idle less than a second after its last report
	// holds its counters for up to 10 s (PostgreSQL 15's idle stats
	// interval), and the runtime's pooled connections stay open, so the
	// default is 11s.
	StatsDelay time.Duration
}

type pgStats struct {
	commits int64 // xact_commit
	rows    int64 // tup_inserted + tup_updated + tup_deleted
}

func readPGStats(ctx context.Context, conn *pgx.Conn) (pgStats, error) {
	var s pgStats
	// A fresh snapshot: pg_stat views are cached per transaction otherwise.
	if _, err := conn.Exec(ctx, "SELECT pg_stat_clear_snapshot()"); err != nil {
		return s, fmt.Errorf("clear stats snapshot: %w", err)
	}
	err := conn.QueryRow(ctx, `SELECT xact_commit, tup_inserted + tup_updated + tup_deleted
		FROM pg_stat_database WHERE datname = current_database()`).Scan(&s.commits, &s.rows)
	if err != nil {
		return s, fmt.Errorf("read pg_stat_database: %w", err)
	}
	return s, nil
}

type pgRun struct {
	p     *PGProbe
	stats *pgx.Conn
	poll  *pgx.Conn
	doc   string
	start pgStats
	ours  int64 // transactions we ran ourselves, subtracted at the end

	mu      sync.Mutex
	obs     []revAt // (highest stored revision, when seen)
	pollErr error
	cancel  context.CancelFunc
	done    chan struct{}
}

func (p *PGProbe) begin(ctx context.Context, doc string) (*pgRun, error) {
	if p.Poll <= 0 {
		p.Poll = 5 * time.Millisecond
	}
	if p.StatsDelay <= 0 {
		p.StatsDelay = 11 * time.Second
	}
	cfg, err := pgx.ParseConfig(p.URL)
	if err != nil {
		return nil, fmt.Errorf("parse PostgreSQL URL: %w", err)
	}
	// The simple protocol makes each of our statements exactly one
	// transaction (a prepare would be one more), so they can be subtracted.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	stats, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL for statistics: %w", err)
	}
	poll, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		stats.Close(ctx)
		return nil, fmt.Errorf("connect to PostgreSQL for flush lag: %w", err)
	}
	r := &pgRun{p: p, stats: stats, poll: poll, doc: doc, done: make(chan struct{})}
	if r.start, err = readPGStats(ctx, stats); err != nil {
		r.stop()
		return nil, err
	}
	// The two statements above and the start-up transaction of each of
	// our two connections, counted once our backends report.
	r.ours += 4
	pctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.pollLoop(pctx)
	return r, nil
}

func (r *pgRun) pollLoop(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(r.p.Poll)
	defer t.Stop()
	for {
		var rev int64
		err := r.poll.QueryRow(ctx, "SELECT coalesce(max(rev), 0) FROM operations WHERE doc_id = $1", r.doc).Scan(&rev)
		at := time.Now()
		r.mu.Lock()
		if err != nil {
			if ctx.Err() == nil {
				r.pollErr = fmt.Errorf("poll stored revision of %q: %w", r.doc, err)
			}
			r.mu.Unlock()
			return
		}
		r.ours++
		r.obs = append(r.obs, revAt{rev, at})
		r.mu.Unlock()
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func (r *pgRun) stored() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.obs); n > 0 {
		return r.obs[n-1].rev
	}
	return 0
}

func (r *pgRun) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r.poll != nil {
		r.poll.Close(ctx)
		r.poll = nil
	}
	if r.stats != nil {
		r.stats.Close(ctx)
		r.stats = nil
	}
}

// finish waits until every revision up to head is stored, then computes
// the S5 figures into res.
func (r *pgRun) finish(ctx context.Context, head, acked int64, acks []revAt, res *Result) error {
	deadline := time.Now().Add(30 * time.Second)
	for r.stored() < head {
		r.mu.Lock()
		perr := r.pollErr
		r.mu.Unlock()
		if perr != nil {
			return perr
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("revision %d of %q not stored in PostgreSQL after 30s (stored: %d)", head, r.doc, r.stored())
		}
		select {
		case <-time.After(r.p.Poll):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.cancel()
	<-r.done
	r.cancel = nil
	// Closing the polling backend makes it report its counters.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	r.poll.Close(cctx)
	cancel()
	r.poll = nil
	select {
	case <-time.After(r.p.StatsDelay):
	case <-ctx.Done():
		return ctx.Err()
	}
	end, err := readPGStats(ctx, r.stats)
	if err != nil {
		return err
	}
	commits := end.commits - r.start.commits - r.ours
	rows := end.rows - r.start.rows
	per := func(v int64) float64 { return float64(v) / float64(max(acked, 1)) * 1000 }
	res.add("pg_xact_per_1000_ops", per(commits), "")
	res.add("pg_rows_per_1000_ops", per(rows), "")
	lags := flushLags(acks, r.obs)
	q := lags.Quantiles(0.5, 0.99, 1)
	res.add("flush_lag_p50", q[0], "ms")
	res.add("flush_lag_p99", q[1], "ms")
	res.add("flush_lag_max", q[2], "ms")
	res.add("pg_xact", float64(commits), "")
	res.add("acked_ops", float64(acked), "")
	res.Params["poll"] = r.p.Poll.String()
	return nil
}

// flushLags pairs each acknowledgement with the first poll that saw its
// revision stored. A row seen before the ack arrived counts as zero lag.
func flushLags(acks, obs []revAt) *Samples {
	sort.Slice(acks, func(i, j int) bool { return acks[i].rev < acks[j].rev })
	var s Samples
	j := 0
	for _, a := range acks {
		for j < len(obs) && obs[j].rev < a.rev {
			j++
		}
		if j == len(obs) {
			break
		}
		s.Add(max(0, obs[j].at.Sub(a.at)))
	}
	return &s
}
