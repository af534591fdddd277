package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
)

// ArchiveStore is a durable store with snapshots, listing, deletion and
// compaction.
type ArchiveStore interface {
	store.Durable
	store.Archive
}

// randomHistory builds n entries for doc that insert and delete at random
// places (a churn like an editor's), starting at revision 1, with times
// one second apart from base, and the text after each revision.
func randomHistory(doc string, n int, base time.Time, rng *rand.Rand) ([]store.Entry, []string) {
	texts := []string{""}
	entries := make([]store.Entry, 0, n)
	text := []rune{}
	for i := range n {
		var op ot.Op
		if len(text) > 0 && rng.IntN(3) == 0 {
			pos := rng.IntN(len(text))
			cnt := 1 + rng.IntN(min(len(text)-pos, 8))
			if pos > 0 {
				op = append(op, ot.Component{Retain: pos})
			}
			op = append(op, ot.Component{Delete: cnt})
			text = append(text[:pos:pos], text[pos+cnt:]...)
		} else {
			pos := rng.IntN(len(text) + 1)
			ins := []rune(fmt.Sprintf("%d·🌍", i))
			if pos > 0 {
				op = append(op, ot.Component{Retain: pos})
			}
			op = append(op, ot.Component{Insert: string(ins)})
			text = append(text[:pos:pos], append(ins, text[pos:]...)...)
		}
		rev := int64(i + 1)
		entries = append(entries, store.Entry{Doc: doc, Rev: rev, Op: op, Client: "c1", Seq: rev, User: "u1",
			Time: base.Add(time.Duration(i) * time.Second)})
		texts = append(texts, string(text))
	}
	return entries, texts
}

// textAt rebuilds the text at rev from the nearest snapshot and the stored
// operations after it, the way time travel does.
func textAt(ctx context.Context, a ArchiveStore, doc string, rev int64) (string, error) {
	snap, err := a.SnapshotAt(ctx, doc, rev)
	if err != nil {
		return "", err
	}
	if snap.Rev > rev {
		return "", fmt.Errorf("SnapshotAt(%d) returned rev %d, after the one asked for", rev, snap.Rev)
	}
	ops, err := a.Ops(ctx, doc, snap.Rev, rev)
	if err != nil {
		return "", err
	}
	if int64(len(ops)) != rev-snap.Rev {
		return "", fmt.Errorf("snapshot at %d and %d ops do not reach %d", snap.Rev, len(ops), rev)
	}
	text := snap.Text
	for _, e := range ops {
		if text, err = ot.Apply(text, e.Op); err != nil {
			return "", fmt.Errorf("apply rev %d: %w", e.Rev, err)
		}
	}
	return text, nil
}

// writeInBatches writes entries in random batch sizes, as flushes do.
func writeInBatches(t *testing.T, ctx context.Context, d store.Durable, entries []store.Entry, rng *rand.Rand) {
	t.Helper()
	for i := 0; i < len(entries); {
		n := min(len(entries)-i, 1+rng.IntN(40))
		if err := d.Write(ctx, entries[i:i+n]); err != nil {
			t.Fatalf("Write revs %d..%d: %v", entries[i].Rev, entries[i+n-1].Rev, err)
		}
		i += n
	}
}

// CompactStepper runs one step of compacting one document (one
// transaction of at most perTx removed operations) and says whether the
// document needs more: stores export it to their tests, so that the suite
// can interrupt a cut between steps.
type CompactStepper interface {
	CompactStep(ctx context.Context, doc string, ret store.Retention, now time.Time, perTx int64) (more bool, err error)
}

// RunArchive checks the store.Archive contract. newArchive returns a store
// keeping snapshots interval revisions apart; listDocs is how many
// documents the listing test pages through.
//
//   - The text at any revision, rebuilt from SnapshotAt plus the operations
//     after it, equals replaying the whole history up to it; the snapshot
//     is at most interval revisions behind (across snapshot boundaries).
//   - After compaction the current text and every kept revision are still
//     exact, only the retained window of operations is left (the cut is
//     where the retention allows, with a snapshot there), older revisions
//     report ErrCompacted, and compacting again changes nothing.
//   - A cut interrupted between its steps leaves every kept revision
//     exact, and the next compaction finishes it.
//   - List pages through every document in id order, filtered by prefix.
//   - Delete removes every trace; the document then starts empty.
func RunArchive(t *testing.T, listDocs int, newArchive func(t *testing.T, interval int64) ArchiveStore) {
	const interval = 16
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	t.Run("TextAtRevision", func(t *testing.T) {
		a := newArchive(t, interval)
		ctx := testCtx(t)
		doc := DocID(t)
		rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
		entries, texts := randomHistory(doc, 300, base, rng)
		writeInBatches(t, ctx, a, entries, rng)
		check := []int64{0, 1, interval - 1, interval, interval + 1, 2 * interval, 299, 300}
		for range 40 {
			check = append(check, rng.Int64N(301))
		}
		for _, rev := range check {
			snap, err := a.SnapshotAt(ctx, doc, rev)
			if err != nil {
				t.Fatalf("SnapshotAt(%d): %v", rev, err)
			}
			if rev-snap.Rev >= interval && rev != 300 {
				t.Errorf("SnapshotAt(%d) is at %d: more than %d revisions behind", rev, snap.Rev, interval)
			}
			got, err := textAt(ctx, a, doc, rev)
			if err != nil {
				t.Fatalf("text at %d: %v", rev, err)
			}
			if got != texts[rev] {
				t.Fatalf("text at %d = %q, want %q", rev, got, texts[rev])
			}
		}
	})

	t.Run("Compaction", func(t *testing.T) {
		a := newArchive(t, interval)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		doc, other := DocID(t), DocID(t)
		rng := rand.New(rand.NewPCG(2, uint64(time.Now().UnixNano())))
		entries, texts := randomHistory(doc, 300, base, rng)
		writeInBatches(t, ctx, a, entries, rng)
		otherEntries, otherTexts := randomHistory(other, 40, base, rng)
		writeInBatches(t, ctx, a, otherEntries, rng)

		tests := []struct {
			name string
			ret  store.Retention
			now  time.Time
			// keepFrom: every revision from here on must stay readable.
			keepFrom int64
			// cut: the revision history must start from (its snapshot).
			cut int64
		}{
			{"nothing by default", store.Retention{}, base.Add(time.Hour), 0, 0},
			{"revisions", store.Retention{Revisions: 200}, base, 100, 100},
			// Operation i+1 is stored at base+i s: older than 60 s at
			// base+250 s means revisions up to 190.
			{"age", store.Retention{Age: time.Minute}, base.Add(250 * time.Second), 191, 190},
			{"age and revisions keep the union", store.Retention{Age: time.Minute, Revisions: 20}, base.Add(250 * time.Second), 191, 190},
			{"age alone later", store.Retention{Age: time.Minute}, base.Add(time.Hour), 300, 300},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				// Twice: compacting again must keep everything exact.
				for range 2 {
					cursor := ""
					for {
						res, err := a.Compact(ctx, tc.ret, tc.now, cursor, 1)
						if err != nil {
							t.Fatalf("Compact: %v", err)
						}
						if !res.More {
							break
						}
						cursor = res.Cursor
					}
				}
				// Every kept revision near the cut and the snapshot
				// boundaries, and a stride through the rest.
				for rev := tc.keepFrom; rev <= 300; rev++ {
					if rev > tc.keepFrom+interval+1 && rev%interval > 1 && rev%interval != interval-1 && rev%5 != 0 {
						continue
					}
					got, err := textAt(ctx, a, doc, rev)
					if err != nil {
						t.Fatalf("text at kept revision %d: %v", rev, err)
					}
					if got != texts[rev] {
						t.Fatalf("text at %d = %q, want %q", rev, got, texts[rev])
					}
				}
				ops, err := a.Ops(ctx, doc, 0, -1)
				if err != nil {
					t.Fatalf("Ops: %v", err)
				}
				// Cut exactly where the retention allows: only the
				// retained window of operations is left.
				switch {
				case tc.cut == 300 && len(ops) != 0:
					t.Fatalf("%d operations left, want none (all are outside the window)", len(ops))
				case tc.cut < 300 && (len(ops) == 0 || ops[0].Rev != tc.cut+1):
					t.Fatalf("operations left start at %v, want at %d", revs(ops[:min(len(ops), 1)]), tc.cut+1)
				}
				if len(ops) == 0 && tc.cut > 0 {
					// Cut at the head: only the text there is left.
					for _, rev := range []int64{tc.cut - 1, tc.cut - interval/2, 1} {
						if _, err := textAt(ctx, a, doc, rev); !errors.Is(err, store.ErrCompacted) {
							t.Fatalf("text at %d with no operation left: err = %v, want ErrCompacted", rev, err)
						}
					}
				}
				if len(ops) > 0 && ops[0].Rev > 1 {
					if _, err := textAt(ctx, a, doc, ops[0].Rev-interval-1); !errors.Is(err, store.ErrCompacted) && ops[0].Rev-interval-1 >= 0 {
						// A revision before the oldest kept snapshot.
						t.Fatalf("text at a compacted revision: err = %v, want ErrCompacted", err)
					}
				}
				// The history exported from Oldest replays to the text.
				oldest, err := a.Oldest(ctx, doc)
				if err != nil {
					t.Fatalf("Oldest: %v", err)
				}
				if oldest.Rev != tc.cut {
					t.Fatalf("Oldest is at %d, want the cut at %d", oldest.Rev, tc.cut)
				}
				if start, err := a.HistoryStart(ctx, doc); err != nil || start != tc.cut {
					t.Fatalf("HistoryStart = %d, %v; want the cut at %d", start, err, tc.cut)
				}
				if start, err := a.HistoryStart(ctx, DocID(t)); err != nil || start != 0 {
					t.Fatalf("HistoryStart of a missing document = %d, %v; want 0", start, err)
				}
				if got, err := textAt(ctx, a, doc, oldest.Rev); err != nil || got != oldest.Text || oldest.Text != texts[oldest.Rev] {
					t.Fatalf("Oldest = rev %d %q; text there %q, %v", oldest.Rev, oldest.Text, got, err)
				}
				snap, err := a.Load(ctx, doc)
				if err != nil || snap.Rev != 300 || snap.Text != texts[300] {
					t.Fatalf("Load after compaction = rev %d, %v; want rev 300 and the current text", snap.Rev, err)
				}
				osnap, err := a.Load(ctx, other)
				if err != nil || osnap.Rev != 40 || osnap.Text != otherTexts[40] {
					t.Fatalf("Load of the other document after compaction = rev %d, %v", osnap.Rev, err)
				}
				// Writing on after compaction still works.
				next := store.Entry{Doc: doc, Rev: 301, Op: ot.Op{{Insert: "x"}}, Client: "c1", Seq: 301, User: "u1", Time: tc.now}
				if tc.name == "age alone later" {
					if err := a.Write(ctx, []store.Entry{next}); err != nil {
						t.Fatalf("Write after compaction: %v", err)
					}
					if snap, err := a.Load(ctx, doc); err != nil || snap.Text != "x"+texts[300] {
						t.Fatalf("Load after writing on = %q, %v", snap.Text, err)
					}
				}
			})
		}
	})

	t.Run("InterruptedCut", func(t *testing.T) {
		a := newArchive(t, interval)
		stepper, ok := a.(CompactStepper)
		if !ok {
			t.Fatalf("%T cannot run one compaction step (CompactStepper)", a)
		}
		ctx := testCtx(t)
		doc := DocID(t)
		rng := rand.New(rand.NewPCG(4, uint64(time.Now().UnixNano())))
		entries, texts := randomHistory(doc, 300, base, rng)
		writeInBatches(t, ctx, a, entries, rng)
		// Operations up to 190 are older than a minute at base+250 s: one
		// step of 7 operations, then the process "stops".
		more, err := stepper.CompactStep(ctx, doc, store.Retention{Age: time.Minute}, base.Add(250*time.Second), 7)
		if err != nil || !more {
			t.Fatalf("first step = more %v, %v; want more to do", more, err)
		}
		check := func(from int64) {
			t.Helper()
			for rev := from; rev <= 300; rev += 1 + rng.Int64N(9) {
				if got, err := textAt(ctx, a, doc, rev); err != nil || got != texts[rev] {
					t.Fatalf("text at %d: %v (right: %v)", rev, err, got == texts[rev])
				}
			}
			if snap, err := a.Load(ctx, doc); err != nil || snap.Rev != 300 || snap.Text != texts[300] {
				t.Fatalf("Load = rev %d, %v; want rev 300 and the current text", snap.Rev, err)
			}
		}
		check(190)
		// Next time the retention keeps more (cut at 50 only), but the
		// interrupted cut at 190 is finished first, in steps.
		for i := 0; ; i++ {
			if i > 300 {
				t.Fatalf("the interrupted cut does not finish")
			}
			more, err := stepper.CompactStep(ctx, doc, store.Retention{Revisions: 250}, base.Add(250*time.Second), 7)
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if !more {
				break
			}
		}
		ops, err := a.Ops(ctx, doc, 0, -1)
		if err != nil || len(ops) == 0 || ops[0].Rev != 191 {
			t.Fatalf("after finishing the cut: operations from %v, %v; want from 191", revs(ops[:min(len(ops), 1)]), err)
		}
		if oldest, err := a.Oldest(ctx, doc); err != nil || oldest.Rev != 190 || oldest.Text != texts[190] {
			t.Fatalf("Oldest = rev %d, %v; want the text at 190", oldest.Rev, err)
		}
		if start, err := a.HistoryStart(ctx, doc); err != nil || start != 190 {
			t.Fatalf("HistoryStart = %d, %v; want 190", start, err)
		}
		check(190)
		if _, err := textAt(ctx, a, doc, 189); !errors.Is(err, store.ErrCompacted) {
			t.Fatalf("text at 189 after the cut: %v, want ErrCompacted", err)
		}
	})

	t.Run("ListPages", func(t *testing.T) {
		a := newArchive(t, interval)
		// Writing 10,000 documents takes a while under the race detector.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		prefix := DocID(t) + "-"
		n := listDocs
		batch := make([]store.Entry, 0, n)
		for i := range n {
			batch = append(batch, store.Entry{Doc: fmt.Sprintf("%s%05d", prefix, i), Rev: 1,
				Op: ot.Op{{Insert: strings.Repeat("é", i%7+1)}}, Client: "c", Seq: 1, User: "u", Time: base})
		}
		for i := 0; i < n; i += 2000 {
			if err := a.Write(ctx, batch[i:min(n, i+2000)]); err != nil {
				t.Fatalf("Write: %v", err)
			}
		}
		// A document outside the prefix must not show up.
		if err := a.Write(ctx, []store.Entry{{Doc: DocID(t), Rev: 1, Op: ot.Op{{Insert: "x"}}, Client: "c", Seq: 1, User: "u", Time: base}}); err != nil {
			t.Fatalf("Write: %v", err)
		}
		seen := 0
		after := ""
		for page := 0; ; page++ {
			if page > n/700+2 {
				t.Fatalf("listing does not end")
			}
			docs, err := a.List(ctx, prefix, after, 700)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			for _, d := range docs {
				want := fmt.Sprintf("%s%05d", prefix, seen)
				if d.ID != want {
					t.Fatalf("document %d is %q, want %q", seen, d.ID, want)
				}
				if d.Rev != 1 || d.Size != int64(2*(seen%7+1)) {
					t.Fatalf("document %q: rev %d size %d, want rev 1 size %d", d.ID, d.Rev, d.Size, 2*(seen%7+1))
				}
				if d.Updated.IsZero() {
					t.Fatalf("document %q has no last edit time", d.ID)
				}
				seen++
			}
			if len(docs) < 700 {
				break
			}
			after = docs[len(docs)-1].ID
		}
		if seen != n {
			t.Fatalf("listed %d documents, want %d", seen, n)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		a := newArchive(t, interval)
		ctx := testCtx(t)
		doc, kept := DocID(t), DocID(t)
		rng := rand.New(rand.NewPCG(3, 3))
		entries, _ := randomHistory(doc, 100, base, rng)
		writeInBatches(t, ctx, a, entries, rng)
		keptEntries, keptTexts := randomHistory(kept, 50, base, rng)
		writeInBatches(t, ctx, a, keptEntries, rng)
		if err := a.Delete(ctx, doc); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if err := a.Delete(ctx, doc); err != nil {
			t.Fatalf("Delete again: %v", err)
		}
		if snap, err := a.Load(ctx, doc); err != nil || snap.Rev != 0 || snap.Text != "" {
			t.Fatalf("Load after delete = %+v, %v; want empty at 0", snap, err)
		}
		if ops, err := a.Ops(ctx, doc, 0, -1); err != nil || len(ops) != 0 {
			t.Fatalf("Ops after delete = %d, %v; want none", len(ops), err)
		}
		if snap, err := a.SnapshotAt(ctx, doc, 50); err != nil || snap.Rev != 0 || snap.Text != "" {
			t.Fatalf("SnapshotAt after delete = %+v, %v; want empty at 0", snap, err)
		}
		if docs, err := a.List(ctx, doc, "", 10); err != nil || len(docs) != 0 {
			t.Fatalf("List after delete = %v, %v; want nothing", docs, err)
		}
		if snap, err := a.Load(ctx, kept); err != nil || snap.Text != keptTexts[50] {
			t.Fatalf("the other document changed: %+v, %v", snap, err)
		}
		// The id starts over at revision 1.
		if err := a.Write(ctx, []store.Entry{{Doc: doc, Rev: 1, Op: ot.Op{{Insert: "new"}}, Client: "c", Seq: 1, User: "u", Time: base}}); err != nil {
			t.Fatalf("Write after delete: %v", err)
		}
		if snap, err := a.Load(ctx, doc); err != nil || snap.Rev != 1 || snap.Text != "new" {
			t.Fatalf("Load after rewriting = %+v, %v", snap, err)
		}
	})
}
