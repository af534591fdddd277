package storetest

import (
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
)

// RunDurable checks the store.Durable contract:
//
//   - Load of a document never written is an empty snapshot at revision 0.
//   - Write stores entries and advances the snapshot by applying them
//     (positions in code points, so astral characters count as one).
//   - Write is idempotent on (doc, rev): writing a batch again, or a batch
//     that overlaps what is stored, stores each revision exactly once and
//     leaves the snapshot equal to applying each operation once.
//   - One Write may carry several documents.
//   - Ops(from, to) returns exactly the entries with from < Rev <= to.
func RunDurable(t *testing.T, newDurable func(t *testing.T) store.Durable) {
	entry := func(doc string, rev int64, op ot.Op) store.Entry {
		return store.Entry{Doc: doc, Rev: rev, Op: op, Client: "c-" + doc, Seq: rev * 10,
			User: "u1", Time: time.Unix(1700000000+rev, 123000000).UTC()}
	}
	// A history whose snapshots are known: positions count code points.
	history := func(doc string) ([]store.Entry, []string) {
		return []store.Entry{
				entry(doc, 1, ot.Op{{Insert: "hello 🌍"}}),
				entry(doc, 2, ot.Op{{Retain: 6}, {Delete: 1}, {Insert: "world"}}),
				entry(doc, 3, ot.Op{{Insert: "👋 "}}),
				entry(doc, 4, ot.Op{{Retain: 2}, {Delete: 6}, {Insert: "big "}, {Retain: 5}, {Insert: "!"}}),
			}, []string{
				"",
				"hello 🌍",
				"hello world",
				"👋 hello world",
				"👋 big world!",
			}
	}

	t.Run("LoadUnknownIsEmpty", func(t *testing.T) {
		d := newDurable(t)
		snap, err := d.Load(testCtx(t), DocID(t))
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if snap.Rev != 0 || snap.Text != "" {
			t.Fatalf("Load of unknown doc = rev %d text %q, want rev 0 and empty text", snap.Rev, snap.Text)
		}
		ops, err := d.Ops(testCtx(t), DocID(t), 0, -1)
		if err != nil || len(ops) != 0 {
			t.Fatalf("Ops of unknown doc = %v, %v; want none", ops, err)
		}
	})

	t.Run("SnapshotAdvances", func(t *testing.T) {
		d := newDurable(t)
		ctx := testCtx(t)
		doc := DocID(t)
		entries, texts := history(doc)
		for i, e := range entries {
			if err := d.Write(ctx, []store.Entry{e}); err != nil {
				t.Fatalf("Write rev %d: %v", e.Rev, err)
			}
			snap, err := d.Load(ctx, doc)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if snap.Rev != e.Rev || snap.Text != texts[i+1] || snap.Doc != doc {
				t.Fatalf("after rev %d: snapshot %+v, want rev %d text %q", e.Rev, snap, e.Rev, texts[i+1])
			}
		}
		got, err := d.Ops(ctx, doc, 0, -1)
		if err != nil {
			t.Fatalf("Ops: %v", err)
		}
		if len(got) != len(entries) {
			t.Fatalf("Ops returned %d entries, want %d", len(got), len(entries))
		}
		for i := range entries {
			sameEntry(t, got[i], entries[i])
		}
	})

	t.Run("WriteIsIdempotent", func(t *testing.T) {
		tests := []struct {
			name    string
			batches [][]int // indexes into the history, one slice per Write
		}{
			{"same batch twice", [][]int{{0, 1, 2, 3}, {0, 1, 2, 3}}},
			{"overlapping batches", [][]int{{0, 1}, {1, 2}, {0, 1, 2, 3}}},
			{"replay of an old prefix", [][]int{{0, 1, 2, 3}, {0}, {1, 2}}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				d := newDurable(t)
				ctx := testCtx(t)
				doc := DocID(t)
				entries, texts := history(doc)
				for _, idx := range tc.batches {
					var batch []store.Entry
					for _, i := range idx {
						batch = append(batch, entries[i])
					}
					if err := d.Write(ctx, batch); err != nil {
						t.Fatalf("Write %v: %v", idx, err)
					}
				}
				snap, err := d.Load(ctx, doc)
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if snap.Rev != 4 || snap.Text != texts[4] {
					t.Fatalf("snapshot = rev %d %q, want rev 4 %q", snap.Rev, snap.Text, texts[4])
				}
				got, err := d.Ops(ctx, doc, 0, -1)
				if err != nil {
					t.Fatalf("Ops: %v", err)
				}
				if !equalRevs(revs(got), span(1, 4)) {
					t.Fatalf("stored revs = %v, want [1 2 3 4] exactly once", revs(got))
				}
			})
		}
	})

	t.Run("SeveralDocumentsInOneWrite", func(t *testing.T) {
		d := newDurable(t)
		ctx := testCtx(t)
		a, b := DocID(t), DocID(t)
		ea, ta := history(a)
		eb := []store.Entry{entry(b, 1, ot.Op{{Insert: "bee"}}), entry(b, 2, ot.Op{{Retain: 1}, {Delete: 2}})}
		// Interleave the documents; each keeps its own order.
		batch := []store.Entry{ea[0], eb[0], ea[1], eb[1], ea[2], ea[3]}
		if err := d.Write(ctx, batch); err != nil {
			t.Fatalf("Write: %v", err)
		}
		sa, err := d.Load(ctx, a)
		if err != nil || sa.Rev != 4 || sa.Text != ta[4] {
			t.Fatalf("Load a = %+v, %v; want rev 4 %q", sa, err, ta[4])
		}
		sb, err := d.Load(ctx, b)
		if err != nil || sb.Rev != 2 || sb.Text != "b" {
			t.Fatalf("Load b = %+v, %v; want rev 2 %q", sb, err, "b")
		}
	})

	t.Run("OpsRanges", func(t *testing.T) {
		d := newDurable(t)
		ctx := testCtx(t)
		doc := DocID(t)
		entries, _ := history(doc)
		if err := d.Write(ctx, entries); err != nil {
			t.Fatalf("Write: %v", err)
		}
		tests := []struct {
			name     string
			from, to int64
			want     []int64
		}{
			{"all", 0, -1, span(1, 4)},
			{"middle", 1, 3, span(2, 3)},
			{"tail", 2, -1, span(3, 4)},
			{"beyond", 4, -1, nil},
			{"clipped", 3, 99, span(4, 4)},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				got, err := d.Ops(ctx, doc, tc.from, tc.to)
				if err != nil {
					t.Fatalf("Ops(%d, %d): %v", tc.from, tc.to, err)
				}
				if !equalRevs(revs(got), tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
					t.Fatalf("Ops(%d, %d) revs = %v, want %v", tc.from, tc.to, revs(got), tc.want)
				}
			})
		}
	})
}
