// Package storetest holds the conformance suites that every implementation
// of the store interfaces must pass: the in-process (memory) one, the SQLite
// one and the Redis/PostgreSQL ones run exactly the same assertions, so the
// document layer can rely on the documented semantics whatever the backend.
//
// Each suite uses fresh, randomly named document ids, so a factory may hand
// out instances that share one backing server.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
)

// DocID returns a document id that no other test uses.
func DocID(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random doc id: %v", err)
	}
	return "storetest-" + hex.EncodeToString(b)
}

// testCtx returns a context bounded so that a hanging backend fails the
// test instead of stalling the whole run.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// insertEntries builds n entries for doc starting at revision from+1, each
// inserting one letter at the start of the document (always valid).
func insertEntries(doc string, from int64, n int, client string) []store.Entry {
	out := make([]store.Entry, n)
	for i := range out {
		rev := from + int64(i) + 1
		out[i] = store.Entry{
			Doc:    doc,
			Rev:    rev,
			Op:     ot.Op{{Insert: string(rune('a' + rev%26))}},
			Client: client,
			Seq:    rev,
			User:   "user-" + client,
			Time:   time.Unix(1700000000+rev, 0).UTC(),
		}
	}
	return out
}

func revs(entries []store.Entry) []int64 {
	out := make([]int64, len(entries))
	for i, e := range entries {
		out[i] = e.Rev
	}
	return out
}

func equalRevs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func span(from, to int64) []int64 {
	out := []int64{}
	for r := from; r <= to; r++ {
		out = append(out, r)
	}
	return out
}

func equalOp(a, b ot.Op) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sameEntry compares every field; times are compared to the millisecond
// because databases store them with limited precision.
func sameEntry(t testing.TB, got, want store.Entry) {
	t.Helper()
	if got.Doc != want.Doc || got.Rev != want.Rev || got.Client != want.Client ||
		got.Seq != want.Seq || got.User != want.User || !equalOp(got.Op, want.Op) {
		t.Errorf("entry mismatch:\n got %+v\nwant %+v", got, want)
	}
	if d := got.Time.Sub(want.Time); d > time.Millisecond || d < -time.Millisecond {
		t.Errorf("entry rev %d time = %v, want %v", want.Rev, got.Time, want.Time)
	}
}
