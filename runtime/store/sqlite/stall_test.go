package sqlite_test

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/store"
	"github.com/tandem-dev/tandem/runtime/store/sqlite"
)

// randomText returns n letters no compressor shrinks much.
func randomText(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + r.IntN(26))
	}
	return string(b)
}

// Compaction and the vacuum after it share the one connection with the
// writes that acknowledge edits: while they clear a churned document (tens
// of megabytes of history), writes to another document must go on with a
// latency an editor does not notice.
func TestCompactionDoesNotStallWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("churns tens of megabytes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	s := open(t, dir)
	r := rand.New(rand.NewPCG(1, 2))

	// 1,200 revisions of a document that alternately gains and loses 60 KB:
	// about 36 MB of operations for a document that ends empty.
	const chunk = 60 << 10
	base := time.Now().Add(-time.Hour)
	rev := int64(0)
	for range 20 {
		var batch []store.Entry
		for range 30 {
			rev++
			batch = append(batch, store.Entry{Doc: "churn", Rev: rev, Op: ot.Op{{Insert: randomText(r, chunk)}}, Client: "c", Seq: rev, User: "u", Time: base})
			rev++
			batch = append(batch, store.Entry{Doc: "churn", Rev: rev, Op: ot.Op{{Delete: chunk}}, Client: "c", Seq: rev, User: "u", Time: base})
		}
		if err := s.Write(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	before := fileSize(t, dir)

	// Writes to another document, one at a time as an editor's
	// acknowledgements come, timed while compaction runs.
	var (
		mu        sync.Mutex
		latencies []time.Duration
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for rev := int64(1); ; rev++ {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			if err := s.Write(ctx, []store.Entry{{Doc: "typing", Rev: rev, Op: ot.Op{{Insert: "x"}}, Client: "t", Seq: rev, User: "u", Time: time.Now()}}); err != nil {
				t.Errorf("write while compacting: %v", err)
				return
			}
			mu.Lock()
			latencies = append(latencies, time.Since(start))
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	})
	started := time.Now()
	passes := 0
	for ; passes < 20; passes++ {
		res := store.CompactAll(ctx, s, store.CompactionOptions{Retention: store.Retention{Revisions: 10}, Pause: time.Millisecond})
		if passes > 0 && res.Ops == 0 && freelist(t, s) == 0 {
			break
		}
	}
	took := time.Since(started)
	close(stop)
	wg.Wait()
	// Closing checkpoints the WAL: the file shrinks to what the vacuum
	// left.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	after := fileSize(t, dir)

	mu.Lock()
	defer mu.Unlock()
	if len(latencies) < 3 {
		t.Fatalf("only %d writes during %v of compaction", len(latencies), took)
	}
	slices.Sort(latencies)
	p50, p99, worst := latencies[len(latencies)/2], latencies[len(latencies)*99/100], latencies[len(latencies)-1]
	t.Logf("file %d -> %d MB in %d passes, %v; %d writes during it: p50 %v, p99 %v, max %v",
		before>>20, after>>20, passes+1, took.Round(time.Millisecond), len(latencies), p50, p99, worst)
	if after > before/4 {
		t.Errorf("file is %d bytes after compaction, was %d: space not given back", after, before)
	}
	// A step (a transaction removing at most a megabyte of operations,
	// or a vacuum of 1 MB of pages) holds the connection for tens of
	// milliseconds here, and a write waits for about one of them. The
	// longest is the first step of a cut, which also builds the snapshot
	// at the cut from up to --snapshot-interval operations (here 190 of
	// 60 KB each) and is bounded by that interval, not by the history.
	// (The race detector makes all of it about eight times slower.)
	const (
		typical = slowdown * 30 * time.Millisecond
		longest = slowdown * 500 * time.Millisecond
	)
	if p50 > typical || worst > longest {
		t.Errorf("writes waited behind compaction: median %v (want under %v), longest %v (want under %v)", p50, typical, worst, longest)
	}
}

func fileSize(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	for _, name := range []string{sqlite.FileName, sqlite.FileName + "-wal"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			t.Fatal(err)
		}
		total += fi.Size()
	}
	return total
}

func freelist(t *testing.T, s *sqlite.Store) int64 {
	t.Helper()
	n, err := s.FreePages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}
