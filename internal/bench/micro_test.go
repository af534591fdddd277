package bench

// Micro-benchmarks of the runtime's hot path that no other package
// measures: the document sequencer (runtime/doc over the in-memory log)
// and the wire encoding of the messages every operation turns into. The OT
// core and the rope have their own benchmarks in their packages; make bench
// runs all of them and compares runs with benchstat.
//
// BenchmarkS2InProcess runs the S2 closed loop against the complete server
// in this process, so that `go test -cpuprofile` shows where the server
// spends its time (the runtime binary has no pprof endpoint).

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/metrics"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/server"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/memory"
)

// BenchmarkSequencer submits operations to one document and waits for each
// ack (the closed loop of S2, without the network), with 1 or 20 members
// receiving every committed operation.
func BenchmarkSequencer(b *testing.B) {
	for _, members := range []int{1, 20} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			ctx := context.Background()
			l := memory.NewLog(memory.LogOptions{})
			m := doc.NewManager(doc.Options{Log: l, Metrics: metrics.New(), Logger: slog.New(slog.DiscardHandler)})
			defer func() { _ = m.Close(ctx); _ = l.Close(ctx) }()
			acks := make(chan protocol.Ack, 1)
			var writer *doc.Session
			for i := range members {
				i := i
				member := doc.Member{Conn: fmt.Sprintf("c%d", i), Client: fmt.Sprintf("client%d", i), User: store.User{ID: "u"}, Perm: "write",
					Send: func(f *protocol.Frame) bool {
						if _, err := f.Encoded(); err != nil {
							b.Error(err)
						}
						if a, ok := f.Msg.(protocol.Ack); ok && i == 0 {
							acks <- a
						}
						return true
					}}
				s, err := m.Join(ctx, "bench", member, nil)
				if err != nil {
					b.Fatal(err)
				}
				if i == 0 {
					writer = s
				}
			}
			rev := int64(0)
			b.ReportAllocs()
			for b.Loop() {
				op := ot.Op{{Insert: "x"}}
				if rev > 0 {
					op = ot.Op{{Retain: int(rev)}, {Insert: "x"}}
				}
				if err := writer.Submit(ctx, rev+1, rev, op); err != nil {
					b.Fatal(err)
				}
				a := <-acks
				rev = a.Rev
			}
		})
	}
}

// BenchmarkEncoding is the per-operation encoding work: decoding a
// client's op message, encoding the committed op sent to every other
// member, and the ack.
func BenchmarkEncoding(b *testing.B) {
	op := ot.Op{{Retain: 524288}, {Insert: "x"}, {Retain: 1000}}
	in, err := json.Marshal(protocol.ClientOp{Type: protocol.TypeOp, Seq: 42, Rev: 100000, Op: op})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode-client-op", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			if _, p := protocol.Decode(in); p != nil {
				b.Fatal(p)
			}
		}
	})
	b.Run("encode-op", func(b *testing.B) {
		msg := protocol.Op{Type: protocol.TypeOp, Rev: 100001, Op: op, Client: "client-0123456789", Seq: 42, User: "user-42"}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode-ack", func(b *testing.B) {
		msg := protocol.Ack{Type: protocol.TypeAck, Seq: 42, Rev: 100001}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkS2InProcess runs S2-single for a few seconds against the real
// server stack on loopback in this process and reports acknowledged
// operations per second. For profiling, not for the results table (the
// load and the server share one process here).
func BenchmarkS2InProcess(b *testing.B) {
	logger := slog.New(slog.DiscardHandler)
	m := metrics.New()
	l := memory.NewLog(memory.LogOptions{})
	mgr := doc.NewManager(doc.Options{Log: l, Metrics: m, Logger: logger})
	srv := server.New(server.Options{Manager: mgr, Auth: auth.Anonymous{}, Metrics: m, Logger: logger,
		Limits: server.Limits{OpsPerSecond: 1e6}})
	hs := httptest.NewServer(srv.Handler())
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		hs.Close()
		_ = mgr.Close(ctx)
		_ = l.Close(ctx)
	}()
	env := &Env{Replicas: []string{hs.URL}, Seed: 1}
	for _, writers := range []int{1, 20} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			for b.Loop() {
				r, _ := S2(context.Background(), env, S2Options{Duration: 3 * time.Second, Writers: writers, Single: true})
				if r.Error != "" {
					b.Fatal(r.Error)
				}
				v, _ := r.Get("acked_ops_per_s")
				b.ReportMetric(v, "acked-ops/s")
				p99, _ := r.Get("ack_p99")
				b.ReportMetric(p99, "ack-p99-ms")
			}
		})
	}
}
