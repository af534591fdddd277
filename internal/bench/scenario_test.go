package bench

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
)

func metric(t *testing.T, r Result, name string) float64 {
	t.Helper()
	v, ok := r.Get(name)
	if !ok {
		t.Fatalf("%s has no metric %q: %+v", r.ID, name, r.Metrics)
	}
	return v
}

// TestScenariosVerifyAgainstHealthyServer runs every scenario, scaled
// down, against the real sequencer and checks that they pass their own
// verification and report plausible figures.
func TestScenariosVerifyAgainstHealthyServer(t *testing.T) {
	srv := startTestServer(t, nil)
	// A second "replica" is the same server: enough to exercise the
	// two-replica code paths without Redis.
	env := &Env{Replicas: []string{srv.URL, srv.URL}, Settle: 10 * time.Second, Seed: 7}
	ctx := context.Background()

	tests := []struct {
		name  string
		run   func() Result
		check func(t *testing.T, r Result)
	}{
		{"S1", func() Result {
			return S1(ctx, env, S1Options{Duration: 500 * time.Millisecond, Interval: 10 * time.Millisecond, Readers: 3})
		}, func(t *testing.T, r Result) {
			sent := metric(t, r, "ops_sent")
			if sent < 10 {
				t.Errorf("writer sent %v operations in 500ms at 10ms, want at least 10", sent)
			}
			if got := metric(t, r, "receipts"); got != 3*sent {
				t.Errorf("receipts = %v, want 3 readers × %v operations", got, sent)
			}
			if p50, p99 := metric(t, r, "latency_p50"), metric(t, r, "latency_p99"); p50 <= 0 || p99 < p50 {
				t.Errorf("latency p50 %v p99 %v", p50, p99)
			}
		}},
		{"S1-single", func() Result {
			return S1(ctx, env, S1Options{Duration: 300 * time.Millisecond, Readers: 2, Single: true})
		}, func(t *testing.T, r Result) {
			if r.ID != "S1-single" {
				t.Errorf("ID = %q", r.ID)
			}
		}},
		{"S2", func() Result {
			r, s5 := S2(ctx, env, S2Options{Duration: 700 * time.Millisecond, Writers: 6})
			if s5 != nil {
				t.Errorf("S5 result without a PostgreSQL probe")
			}
			return r
		}, func(t *testing.T, r Result) {
			acked := metric(t, r, "acked_ops")
			if acked < 20 {
				t.Errorf("acked only %v operations", acked)
			}
			if rate := metric(t, r, "acked_ops_per_s"); rate <= 0 {
				t.Errorf("rate %v", rate)
			}
			if cpu := metric(t, r, "cpu_s_per_1000_ops"); cpu <= 0 {
				t.Errorf("cpu per 1000 ops %v: the process collector should show some CPU", cpu)
			}
		}},
		{"S3", func() Result {
			// OnIdle runs once, with all 60 connections open and the
			// verification connections not yet dialled.
			before := srv.conns.Load()
			var calls, open atomic.Int64
			r := S3(ctx, env, S3Options{Conns: 60, Docs: 6, Idle: 300 * time.Millisecond, OnIdle: func(context.Context) {
				calls.Add(1)
				open.Store(srv.conns.Load() - before)
			}})
			if calls.Load() != 1 || open.Load() != 60 {
				t.Errorf("OnIdle called %d times with %d connections open, want once with 60", calls.Load(), open.Load())
			}
			return r
		}, func(t *testing.T, r Result) {
			if g := metric(t, r, "goroutines_per_conn"); g <= 0 {
				t.Errorf("goroutines per connection %v: the server runs goroutines per connection", g)
			}
		}},
		{"S4", func() Result {
			return S4(ctx, env, S4Options{Docs: 4, Editors: 3, Rate: 20, Duration: 600 * time.Millisecond})
		}, func(t *testing.T, r Result) {
			if ops := metric(t, r, "acked_ops_per_s"); ops <= 0 {
				t.Errorf("acked ops/s %v", ops)
			}
			if p99 := metric(t, r, "latency_p99"); p99 <= 0 {
				t.Errorf("latency p99 %v", p99)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.run()
			if r.Error != "" {
				t.Fatalf("%s failed against a healthy server: %s", r.ID, r.Error)
			}
			tt.check(t, r)
		})
	}
}

// TestScenariosDetectFaults runs scenarios against servers that misbehave
// in one precise way; each must end with an error naming the problem.
func TestScenariosDetectFaults(t *testing.T) {
	tests := []struct {
		name  string
		fault func() func(conn string, m doc.Member, msg any) (any, bool)
		run   func(env *Env) Result
		want  string
	}{
		{
			name: "divergence: one connection gets a changed insert",
			fault: func() func(string, doc.Member, any) (any, bool) {
				var done atomic.Bool
				return func(conn string, m doc.Member, msg any) (any, bool) {
					op, ok := msg.(protocol.Op)
					if !ok || !strings.HasSuffix(m.Client, "-r0") || done.Load() {
						return msg, true
					}
					changed := make(ot.Op, len(op.Op))
					for i, c := range op.Op {
						if c.Insert != "" {
							c.Insert = strings.Repeat("Z", len([]rune(c.Insert)))
							done.Store(true)
						}
						changed[i] = c
					}
					op.Op = changed
					return op, true
				}
			},
			run: func(env *Env) Result {
				return S1(context.Background(), env, S1Options{Duration: 300 * time.Millisecond, Readers: 3, Single: true})
			},
			want: "diverged",
		},
		{
			name: "missing acknowledgement",
			fault: func() func(string, doc.Member, any) (any, bool) {
				var n atomic.Int64
				return func(conn string, m doc.Member, msg any) (any, bool) {
					if _, ok := msg.(protocol.Ack); ok && n.Add(1) == 5 {
						return nil, false
					}
					return msg, true
				}
			},
			run: func(env *Env) Result {
				return S1(context.Background(), env, S1Options{Duration: 300 * time.Millisecond, Readers: 2, Single: true})
			},
			want: "never acknowledged",
		},
		{
			name: "missing acknowledgement in the closed loop",
			fault: func() func(string, doc.Member, any) (any, bool) {
				var n atomic.Int64
				return func(conn string, m doc.Member, msg any) (any, bool) {
					if _, ok := msg.(protocol.Ack); ok && n.Add(1) == 30 {
						return nil, false
					}
					return msg, true
				}
			},
			run: func(env *Env) Result {
				r, _ := S2(context.Background(), env, S2Options{Duration: 500 * time.Millisecond, Writers: 4, Single: true})
				return r
			},
			want: "never acknowledged",
		},
		{
			name: "lost operation: a reader misses one remote operation",
			fault: func() func(string, doc.Member, any) (any, bool) {
				var done atomic.Bool
				return func(conn string, m doc.Member, msg any) (any, bool) {
					if _, ok := msg.(protocol.Op); ok && strings.HasSuffix(m.Client, "-r1") && done.CompareAndSwap(false, true) {
						return nil, false
					}
					return msg, true
				}
			},
			run: func(env *Env) Result {
				return S1(context.Background(), env, S1Options{Duration: 300 * time.Millisecond, Readers: 3, Single: true})
			},
			want: "gap or reorder",
		},
		{
			name: "server error to a writer",
			fault: func() func(string, doc.Member, any) (any, bool) {
				var n atomic.Int64
				return func(conn string, m doc.Member, msg any) (any, bool) {
					if a, ok := msg.(protocol.Ack); ok && n.Add(1) == 3 {
						seq := a.Seq
						return protocol.Error{Type: protocol.TypeError, Code: protocol.CodeInternal, Message: "injected", Seq: &seq}, true
					}
					return msg, true
				}
			},
			run: func(env *Env) Result {
				return S1(context.Background(), env, S1Options{Duration: 300 * time.Millisecond, Readers: 1, Single: true})
			},
			want: "internal: injected",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTestServer(t, func(s *testServer) { s.fault = tt.fault() })
			env := &Env{Replicas: []string{srv.URL}, Settle: 2 * time.Second, Seed: 3}
			r := tt.run(env)
			if r.Error == "" {
				t.Fatalf("%s passed against a faulty server; metrics %+v", r.ID, r.Metrics)
			}
			if !strings.Contains(r.Error, tt.want) {
				t.Fatalf("error = %q, want it to mention %q", r.Error, tt.want)
			}
			t.Logf("%s reported: %s", r.ID, r.Error)
		})
	}
}

// TestClientResumesAfterDrops makes the server drop every connection after
// a few operations: clients re-dial with their revision, treat a replayed
// own operation as its ack, resubmit what is still in flight, and the
// writers still converge with every operation acknowledged exactly once.
func TestClientResumesAfterDrops(t *testing.T) {
	srv := startTestServer(t, func(s *testServer) { s.closeAfter = 7 })
	env := &Env{Replicas: []string{srv.URL}, Settle: 10 * time.Second, Seed: 11, Reconnects: 1000}
	r, _ := S2(context.Background(), env, S2Options{Duration: time.Second, Writers: 4, Single: true})
	if r.Error != "" {
		t.Fatalf("S2 with reconnects failed: %s", r.Error)
	}
	if acked := metric(t, r, "acked_ops"); acked < 28 {
		t.Fatalf("acked %v operations; every connection should have been dropped at least once", acked)
	}
}

// TestClientRetriesUnavailable: "unavailable" is retryable by contract; the
// client resubmits the operation on its current revision and the scenario
// still converges, reporting how many retries it took.
func TestClientRetriesUnavailable(t *testing.T) {
	srv := startTestServer(t, func(s *testServer) { s.refuseEvery = 3 })
	env := &Env{Replicas: []string{srv.URL}, Settle: 10 * time.Second, Seed: 5}
	r, _ := S2(context.Background(), env, S2Options{Duration: 700 * time.Millisecond, Writers: 4, Single: true})
	if r.Error != "" {
		t.Fatalf("S2 with refused operations failed: %s", r.Error)
	}
	acked, retries := metric(t, r, "acked_ops"), metric(t, r, "unavailable_retries")
	if retries < acked/3 {
		t.Fatalf("%v retries for %v acked operations; every third submission was refused", retries, acked)
	}
}
