package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/pgstore"
	"github.com/tandem-dev/tandem/runtime/store/storetest"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, url string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(ctxFor(t), url, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestDurableConformance(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	storetest.RunDurable(t, func(t *testing.T) store.Durable { return open(t, pg.URL()) })
}

func TestArchiveConformance(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	storetest.RunArchive(t, 10000, func(t *testing.T, interval int64) storetest.ArchiveStore {
		s := open(t, pg.URL())
		s.SetSnapshotInterval(interval)
		return s
	})
}

// Replicas starting together race to migrate; the advisory lock must make
// exactly one of them apply each migration and the others see it applied.
func TestConcurrentMigrations(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	const replicas = 4
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	stores := make([]*pgstore.Store, replicas)
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = pgstore.Open(ctxFor(t), pg.URL(), nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: Open: %v", i, err)
		}
		defer stores[i].Close()
	}
	files, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatalf("list migrations: %v", err)
	}
	var applied, distinct int
	if err := stores[0].Pool().QueryRow(ctxFor(t),
		`SELECT count(*), count(DISTINCT version_id) FROM tandem_schema_migrations WHERE version_id > 0 AND is_applied`).Scan(&applied, &distinct); err != nil {
		t.Fatalf("count migrations: %v", err)
	}
	if applied != len(files) || distinct != len(files) {
		t.Fatalf("migration rows = %d (%d distinct), want %d (each migration applied once)", applied, distinct, len(files))
	}
}

// A batch that cannot be applied is refused as a whole, is classified as
// permanent (so the flusher writes the batch's documents one by one at once
// rather than retrying it whole), and
// leaves every document of the batch untouched.
func TestWriteRejectsBadBatchAtomically(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	s := open(t, pg.URL())
	ctx := ctxFor(t)
	good := store.Entry{Doc: "good", Rev: 1, Op: ot.Op{{Insert: "hi"}}, Client: "c", Seq: 1, User: "u", Time: time.Now()}
	tests := []struct {
		name string
		bad  store.Entry
	}{
		{"gap in revisions", store.Entry{Doc: "bad", Rev: 3, Op: ot.Op{{Insert: "x"}}, Client: "c", Seq: 1, User: "u"}},
		{"op longer than text", store.Entry{Doc: "bad", Rev: 1, Op: ot.Op{{Retain: 10}, {Insert: "x"}}, Client: "c", Seq: 1, User: "u"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Write(ctx, []store.Entry{good, tc.bad})
			if err == nil {
				t.Fatal("Write succeeded, want an error")
			}
			if !errors.Is(err, pgstore.ErrInvalidBatch) || !pgstore.IsPermanent(err) {
				t.Fatalf("Write error %v is not a permanent invalid batch", err)
			}
			for _, doc := range []string{"good", "bad"} {
				snap, err := s.Load(ctx, doc)
				if err != nil || snap.Rev != 0 {
					t.Fatalf("Load(%s) after refused batch = %+v, %v; want rev 0", doc, snap, err)
				}
			}
		})
	}
}

// An outage is not permanent: the flusher must wait it out instead of
// dead-lettering.
func TestOutageIsNotPermanent(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	s := open(t, pg.URL())
	pg.Stop()
	ctx, cancel := context.WithTimeout(ctxFor(t), 5*time.Second)
	defer cancel()
	err := s.Write(ctx, []store.Entry{{Doc: "d", Rev: 1, Op: ot.Op{{Insert: "x"}}, Client: "c", Seq: 1, User: "u"}})
	if err == nil {
		t.Fatal("Write with PostgreSQL stopped succeeded")
	}
	if pgstore.IsPermanent(err) {
		t.Fatalf("outage error %v classified as permanent", err)
	}
	pg.Start()
	if err := s.Write(ctxFor(t), []store.Entry{{Doc: "d", Rev: 1, Op: ot.Op{{Insert: "x"}}, Client: "c", Seq: 1, User: "u"}}); err != nil {
		t.Fatalf("Write after restart: %v", err)
	}
	if snap, err := s.Load(ctxFor(t), "d"); err != nil || snap.Text != "x" || snap.Rev != 1 {
		t.Fatalf("Load after restart = %+v, %v", snap, err)
	}
}

// appendEntry returns the entry that appends s to doc at rev: an insert
// after the text the previous entries built, so snapshots are predictable.
func appendEntry(doc string, rev int64, textLen int, s, user string) store.Entry {
	op := ot.Op{{Insert: s}}
	if textLen > 0 {
		op = ot.Op{{Retain: textLen}, {Insert: s}}
	}
	return store.Entry{Doc: doc, Rev: rev, Op: op, Client: "c-" + doc, Seq: rev, User: user, Time: time.Now()}
}

// One Write spanning many documents — new ones, stored ones advancing, and
// stored ones whose entries are all already stored — advances every
// snapshot exactly once and stores each operation once, whatever order the
// documents' entries arrive in.
func TestWriteManyDocs(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	s := open(t, pg.URL())
	ctx := ctxFor(t)

	const docs = 50
	type docCase struct {
		id     string
		stored int64 // revisions written before the big Write
		upTo   int64 // the big Write carries revisions 1..upTo
	}
	var cases []docCase
	for i := range docs {
		c := docCase{id: fmt.Sprintf("doc-%02d", docs-1-i)} // ids arrive unsorted
		switch i % 3 {
		case 0: // new document
			c.upTo = int64(1 + i%4)
		case 1: // stored, advanced by the Write
			c.stored, c.upTo = int64(1+i%5), int64(3+i%5)
		case 2: // stored, every entry already there
			c.stored, c.upTo = int64(2+i%3), int64(2+i%3)
		}
		cases = append(cases, c)
	}
	piece := func(rev int64) string { return fmt.Sprintf("r%d;", rev) }
	textAt := func(rev int64) string {
		var sb strings.Builder
		for r := int64(1); r <= rev; r++ {
			sb.WriteString(piece(r))
		}
		return sb.String()
	}
	entry := func(doc string, rev int64, user string) store.Entry {
		return appendEntry(doc, rev, len(textAt(rev-1)), piece(rev), user)
	}

	var first []store.Entry
	for _, c := range cases {
		for rev := int64(1); rev <= c.stored; rev++ {
			first = append(first, entry(c.id, rev, "first"))
		}
	}
	if err := s.Write(ctx, first); err != nil {
		t.Fatalf("first Write: %v", err)
	}

	// Interleave the documents' entries: rev 1 of every document, then rev
	// 2, and so on, as a flush of many busy documents would.
	var big []store.Entry
	for rev := int64(1); rev <= 8; rev++ {
		for _, c := range cases {
			if rev <= c.upTo {
				big = append(big, entry(c.id, rev, "second"))
			}
		}
	}
	if err := s.Write(ctx, big); err != nil {
		t.Fatalf("big Write: %v", err)
	}

	for _, c := range cases {
		t.Run(c.id, func(t *testing.T) {
			snap, err := s.Load(ctx, c.id)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if want := textAt(c.upTo); snap.Text != want || snap.Rev != c.upTo {
				t.Fatalf("snapshot = %q at rev %d, want %q at rev %d", snap.Text, snap.Rev, want, c.upTo)
			}
			ops, err := s.Ops(ctx, c.id, 0, -1)
			if err != nil {
				t.Fatalf("Ops: %v", err)
			}
			if int64(len(ops)) != c.upTo {
				t.Fatalf("%d ops stored, want %d", len(ops), c.upTo)
			}
			for i, op := range ops {
				rev := int64(i + 1)
				// Entries already stored are skipped, not rewritten.
				wantUser := "second"
				if rev <= c.stored {
					wantUser = "first"
				}
				want := entry(c.id, rev, wantUser)
				if op.Rev != rev || op.User != wantUser || op.Client != want.Client || op.Seq != want.Seq || !reflect.DeepEqual(op.Op, want.Op) {
					t.Fatalf("op %d = %+v, want rev %d by %s: %+v", i, op, rev, wantUser, want.Op)
				}
			}
		})
	}
}

// BenchmarkWriteManyDocs measures one flush as the Redis flusher issues it
// under the S4 load: 200 documents with a few new entries each.
func BenchmarkWriteManyDocs(b *testing.B) {
	const docs, perDoc = 200, 3
	pg := testsvc.StartPostgres(b)
	s, err := pgstore.Open(context.Background(), pg.URL(), nil)
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	defer s.Close()
	ctx := context.Background()

	textLen := make([]int, docs)
	var rev int64
	batch := make([]store.Entry, 0, docs*perDoc)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		batch = batch[:0]
		for k := range perDoc {
			for d := range docs {
				e := appendEntry(fmt.Sprintf("bench-%03d", d), rev+int64(k)+1, textLen[d], "abc", "u")
				batch = append(batch, e)
				textLen[d] += 3
			}
		}
		rev += perDoc
		b.StartTimer()
		if err := s.Write(ctx, batch); err != nil {
			b.Fatalf("Write: %v", err)
		}
	}
}

// Replicas flushing overlapping documents lock the same rows; whatever the
// order their batches list the documents in, none may deadlock (PostgreSQL
// would abort one with 40P01) and the snapshots end as if written once.
func TestConcurrentOverlappingWrites(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	s := open(t, pg.URL())
	ctx := ctxFor(t)
	const docs, writers, rounds = 40, 4, 5
	for round := range int64(rounds) {
		var wg sync.WaitGroup
		errs := make([]error, writers)
		for w := range writers {
			// Each writer lists the documents in a different order: some
			// forwards, some backwards, all overlapping.
			var batch []store.Entry
			for i := range docs {
				d := i
				if w%2 == 1 {
					d = docs - 1 - i
				}
				batch = append(batch, appendEntry(fmt.Sprintf("doc-%02d", d), round+1, int(round), "x", "u"))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[w] = s.Write(ctx, batch)
			}()
		}
		wg.Wait()
		for w, err := range errs {
			if err != nil {
				t.Fatalf("round %d: writer %d: %v", round, w, err)
			}
		}
	}
	for d := range docs {
		snap, err := s.Load(ctx, fmt.Sprintf("doc-%02d", d))
		if err != nil || snap.Text != strings.Repeat("x", rounds) || snap.Rev != rounds {
			t.Fatalf("Load(doc-%02d) = %+v, %v; want %d x at rev %d", d, snap, err, rounds, rounds)
		}
	}
}

// The content rule of docs/protocol.md ("any Unicode text except U+0000")
// is exactly what PostgreSQL can hold: every text the rule admits is
// stored and read back unchanged, in the snapshot, the operation (jsonb)
// and the author and client id columns, and the one it refuses is refused
// by PostgreSQL too, which is why it must never be acknowledged.
func TestStoresEveryTextTheProtocolAdmits(t *testing.T) {
	pg := testsvc.StartPostgres(t)
	s := open(t, pg.URL())
	ctx := ctxFor(t)
	tests := []struct {
		name    string
		text    string
		allowed bool
	}{
		{"ASCII", "hello", true},
		{"control characters", "\x01\x07\x08\x0b\x0c\x1b\x1f\x7f", true},
		{"whitespace and separators", "\t\r\n\u0085\u2028\u2029\u00a0", true},
		{"JSON specials", `"\/'` + "`", true},
		{"C1 controls", "\u0080\u009f", true},
		{"noncharacters", "\ufdd0\ufffe\uffff\U0001fffe\U0010fffe\U0010ffff", true},
		{"replacement character and BOM", "\ufffd\ufeff", true},
		{"astral", "😀𝄞\U000e0001", true},
		{"private use", "\ue000\U000f0000", true},
		{"U+0000 alone", "\x00", false},
		{"U+0000 inside", "A\x00B", false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := protocol.CheckText(tc.text)
			if (err == nil) != tc.allowed {
				t.Fatalf("CheckText(%q) = %v, want allowed %v", tc.text, err, tc.allowed)
			}
			doc := fmt.Sprintf("text-%d", i)
			e := store.Entry{Doc: doc, Rev: 1, Op: ot.Op{{Insert: tc.text}}, Client: "c" + tc.text, Seq: 1, User: "u" + tc.text, Time: time.Now()}
			werr := s.Write(ctx, []store.Entry{e})
			if !tc.allowed {
				if werr == nil {
					t.Fatalf("PostgreSQL stored %q; the rule refuses it for nothing", tc.text)
				}
				if !pgstore.IsPermanent(werr) {
					t.Errorf("Write error %v is not classified permanent", werr)
				}
				return
			}
			if werr != nil {
				t.Fatalf("Write(%q): %v", tc.text, werr)
			}
			snap, err := s.Load(ctx, doc)
			if err != nil || snap.Text != tc.text || snap.Rev != 1 {
				t.Fatalf("Load = %+v, %v; want %q at rev 1", snap, err, tc.text)
			}
			ops, err := s.Ops(ctx, doc, 0, -1)
			if err != nil || len(ops) != 1 {
				t.Fatalf("Ops = %v, %v", ops, err)
			}
			if got := ops[0]; !ot.Equal(got.Op, e.Op) || got.Client != e.Client || got.User != e.User {
				t.Fatalf("stored entry = %+v, want %+v", got, e)
			}
		})
	}
}
