package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tandem-dev/tandem/internal/testsvc"
	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/ot"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/store"
)

// do sends a request to replica i and returns the status and body.
func (d *deployment) do(i int, method, path, token string) (int, http.Header, []byte) {
	d.t.Helper()
	req, err := http.NewRequest(method, d.urls[i%len(d.urls)]+path, nil)
	if err != nil {
		d.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		d.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, body
}

// churn submits n operations through r, one client's, each after the last
// and returns the text after each revision.
func churn(t *testing.T, r *raw, n int, seed uint64) []string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	texts := []string{""}
	text := []rune{}
	for i := 1; i <= n; i++ {
		var op ot.Op
		if len(text) > 3 && rng.IntN(3) == 0 {
			pos := rng.IntN(len(text) - 2)
			if pos > 0 {
				op = append(op, ot.Component{Retain: pos})
			}
			op = append(op, ot.Component{Delete: 2})
			text = append(text[:pos:pos], text[pos+2:]...)
		} else {
			pos := rng.IntN(len(text) + 1)
			ins := []rune(fmt.Sprintf("%d✓", i))
			if pos > 0 {
				op = append(op, ot.Component{Retain: pos})
			}
			op = append(op, ot.Component{Insert: string(ins)})
			text = append(text[:pos:pos], append(ins, text[pos:]...)...)
		}
		texts = append(texts, string(text))
		// One at a time: an operation's base revision must be committed.
		r.sendText(mustJSON(protocol.ClientOp{Type: "op", Seq: int64(i), Rev: int64(i - 1), Op: op}))
		for {
			typ, m, code := r.next(10 * time.Second)
			if typ == "" {
				t.Fatalf("connection closed with %d while waiting for ack %d", code, i)
			}
			if typ == "error" {
				t.Fatalf("error while churning: %v", m)
			}
			if typ == "ack" && num(m, "seq") == int64(i) {
				break
			}
		}
	}
	return texts
}

// Time travel: the text at random revisions, across the snapshot interval
// (500 by default), equals the text the history produced; a revision after
// the head is 404.
func TestTextAtRevision(t *testing.T) {
	modes(t, func(t *testing.T, d *deployment) {
		const n = 1100
		docID := "travel"
		w := d.rawAt(0, docID, d.token("writer", auth.PermWrite, time.Hour, docID), "c1")
		w.expect("welcome")
		texts := churn(t, w, n, 7)
		reader := d.token("reader", auth.PermRead, time.Hour, docID)
		rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
		revs := []int64{0, 1, 499, 500, 501, 1000, 1099, n}
		for range 20 {
			revs = append(revs, rng.Int64N(n+1))
		}
		for i, rev := range revs {
			code, _, body := d.do(i, http.MethodGet, fmt.Sprintf("/v1/docs/%s?rev=%d", docID, rev), reader)
			if code != http.StatusOK {
				t.Fatalf("GET ?rev=%d: HTTP %d %s", rev, code, body)
			}
			var got docJSON
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got.Rev != rev || got.Text != texts[rev] {
				t.Fatalf("GET ?rev=%d = rev %d %q, want %q", rev, got.Rev, got.Text, texts[rev])
			}
		}
		if code, _, body := d.do(0, http.MethodGet, fmt.Sprintf("/v1/docs/%s?rev=%d", docID, n+1), reader); code != http.StatusNotFound {
			t.Fatalf("GET after the head: HTTP %d %s, want 404", code, body)
		}
		if code, _, _ := d.do(0, http.MethodGet, "/v1/docs/"+docID+"?rev=-1", reader); code != http.StatusBadRequest {
			t.Fatalf("GET ?rev=-1: HTTP %d, want 400", code)
		}
	})
}

// Time travel with retention on: once compaction has cut the history,
// every kept revision still reads exactly, a revision below the cut and
// the operations from before it answer 410 gone, and the history export
// starts with the snapshot at the cut.
func TestTextAtRevisionAfterCompaction(t *testing.T) {
	modes(t, func(t *testing.T, d *deployment) {
		const (
			n      = 1100 // across two snapshot intervals (500)
			retain = 400
			cut    = n - retain
		)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		docID := "retained"
		w := d.rawAt(0, docID, d.token("writer", auth.PermWrite, time.Hour, docID), "c1")
		w.expect("welcome")
		texts := churn(t, w, n, 11)
		// Compaction removes only what is stored: wait for the flush.
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			docs, err := d.archive.List(ctx, docID, "", 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(docs) == 1 && docs[0].Rev == n {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the durable store does not hold revision %d after 20 s: %+v", n, docs)
			}
		}
		res := store.CompactAll(ctx, d.archive, store.CompactionOptions{Retention: store.Retention{Revisions: retain}})
		if res.Ops != cut {
			t.Fatalf("compaction removed %d operations, want %d (revisions 1 to %d)", res.Ops, cut, cut)
		}

		reader := d.token("reader", auth.PermRead, time.Hour, docID)
		rng := rand.New(rand.NewPCG(3, uint64(time.Now().UnixNano())))
		kept := []int64{cut, cut + 1, 1000, 1001, n}
		gone := []int64{1, 499, 500, 501, cut - 1}
		for range 15 {
			kept = append(kept, cut+rng.Int64N(retain+1))
			gone = append(gone, 1+rng.Int64N(cut-1))
		}
		for i, rev := range kept {
			code, _, body := d.do(i, http.MethodGet, fmt.Sprintf("/v1/docs/%s?rev=%d", docID, rev), reader)
			if code != http.StatusOK {
				t.Fatalf("GET ?rev=%d (kept): HTTP %d %s", rev, code, body)
			}
			var got docJSON
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got.Rev != rev || got.Text != texts[rev] {
				t.Fatalf("GET ?rev=%d = rev %d %q, want %q", rev, got.Rev, got.Text, texts[rev])
			}
		}
		for i, rev := range gone {
			if code, _, body := d.do(i, http.MethodGet, fmt.Sprintf("/v1/docs/%s?rev=%d", docID, rev), reader); code != http.StatusGone || !strings.Contains(string(body), protocol.CodeGone) {
				t.Fatalf("GET ?rev=%d (below the cut at %d): HTTP %d %s, want 410 %s", rev, cut, code, body, protocol.CodeGone)
			}
		}
		for i, from := range []int64{0, 1, cut - 1} {
			if code, _, body := d.do(i, http.MethodGet, fmt.Sprintf("/v1/docs/%s/ops?from=%d", docID, from), reader); code != http.StatusGone {
				t.Fatalf("GET /ops?from=%d (below the cut at %d): HTTP %d %s, want 410", from, cut, code, body)
			}
		}
		// From the cut on, the operations are all there.
		code, _, body := d.do(1, http.MethodGet, fmt.Sprintf("/v1/docs/%s/ops?from=%d&limit=%d", docID, cut, retain), reader)
		if code != http.StatusOK {
			t.Fatalf("GET /ops?from=%d: HTTP %d %s", cut, code, body)
		}
		var ops []struct {
			Rev int64 `json:"rev"`
			Op  ot.Op `json:"op"`
		}
		if err := json.Unmarshal(body, &ops); err != nil {
			t.Fatalf("decode ops: %v", err)
		}
		if len(ops) != retain || ops[0].Rev != cut+1 || ops[len(ops)-1].Rev != n {
			t.Fatalf("GET /ops?from=%d: %d operations, want revisions %d to %d", cut, len(ops), cut+1, n)
		}

		admin := d.token("adm", auth.PermAdmin, time.Hour, docID)
		code, _, body = d.do(0, http.MethodGet, "/v1/docs/"+docID+"/export?format=history", admin)
		if code != http.StatusOK {
			t.Fatalf("export history: HTTP %d %s", code, body)
		}
		from, fromText, text, rev := replayHistory(t, body)
		if from != cut || fromText != texts[cut] {
			t.Fatalf("history export starts with a snapshot at %d %q, want the cut at %d %q", from, fromText, cut, texts[cut])
		}
		if rev != n || text != texts[n] {
			t.Fatalf("exported history replays to rev %d %q, want rev %d %q", rev, text, n, texts[n])
		}
	})
}

// DELETE closes the document's editors on every replica with 4004, removes
// it, and a later open starts empty. Only admin tokens granting the
// document may delete.
func TestDeleteDocument(t *testing.T) {
	modes(t, func(t *testing.T, d *deployment) {
		docID := "doomed"
		writer := d.token("writer", auth.PermWrite, time.Hour, docID)
		var editors []*raw
		for i := range 2 {
			r := d.rawAt(i, docID, writer, fmt.Sprintf("c%d", i))
			r.expect("welcome")
			editors = append(editors, r)
		}
		churn(t, editors[0], 30, 3)

		for _, tc := range []struct {
			name, token string
			want        int
		}{
			{"no token", "", http.StatusUnauthorized},
			{"write token", writer, http.StatusForbidden},
			{"admin of other documents", d.token("adm", auth.PermAdmin, time.Hour, "other-*"), http.StatusForbidden},
		} {
			if code, _, body := d.do(0, http.MethodDelete, "/v1/docs/"+docID, tc.token); code != tc.want {
				t.Fatalf("DELETE with %s: HTTP %d %s, want %d", tc.name, code, body, tc.want)
			}
		}
		admin := d.token("adm", auth.PermAdmin, time.Hour, "doo*")
		if code, _, body := d.do(0, http.MethodDelete, "/v1/docs/"+docID, admin); code != http.StatusNoContent {
			t.Fatalf("DELETE: HTTP %d %s", code, body)
		}
		for i, r := range editors {
			for {
				typ, _, code := r.next(10 * time.Second)
				if typ == "" {
					if code != protocol.CloseDeleted {
						t.Fatalf("editor on replica %d closed with %d, want %d", i, code, protocol.CloseDeleted)
					}
					break
				}
			}
		}
		for i := range d.urls {
			code, _, body := d.do(i, http.MethodGet, "/v1/docs/"+docID, writer)
			var got docJSON
			if code != http.StatusOK || json.Unmarshal(body, &got) != nil || got.Rev != 0 || got.Text != "" {
				t.Fatalf("GET after delete on replica %d: HTTP %d %s, want an empty document at 0", i, code, body)
			}
		}
		if code, _, body := d.do(0, http.MethodGet, "/v1/docs?prefix=doomed", admin); code != http.StatusOK || strings.Contains(string(body), `"doomed"`) {
			t.Fatalf("list after delete: HTTP %d %s", code, body)
		}
		// A new editor starts from scratch and its edits stick.
		r := d.rawAt(1, docID, writer, "c9")
		if m := r.expect("welcome"); num(m, "rev") != 0 {
			t.Fatalf("welcome after delete at rev %d, want 0", num(m, "rev"))
		}
		texts := churn(t, r, 5, 9)
		code, _, body := d.do(0, http.MethodGet, "/v1/docs/"+docID, writer)
		var got docJSON
		if code != http.StatusOK || json.Unmarshal(body, &got) != nil || got.Rev != 5 || got.Text != texts[5] {
			t.Fatalf("GET after new edits: HTTP %d %s, want rev 5 %q", code, body, texts[5])
		}
	})
}

// List pages through documents with a cursor and shows only those the
// admin token grants; export gives the text and a history that replays to
// it.
func TestListAndExport(t *testing.T) {
	modes(t, func(t *testing.T, d *deployment) {
		writer := d.token("writer", auth.PermWrite, time.Hour, "*")
		want := map[string]string{}
		for i := range 5 {
			id := fmt.Sprintf("team-%d", i)
			r := d.rawAt(i, id, writer, "c")
			r.expect("welcome")
			texts := churn(t, r, 3+i, uint64(i))
			want[id] = texts[len(texts)-1]
		}
		r := d.rawAt(0, "private", writer, "c")
		r.expect("welcome")
		churn(t, r, 2, 1)

		admin := d.token("adm", auth.PermAdmin, time.Hour, "team-*")
		var listed []string
		deadline := time.Now().Add(10 * time.Second) // the distributed list reads PostgreSQL, a flush behind
		for {
			listed = listed[:0]
			cursor := ""
			for page := 0; page < 10; page++ {
				code, _, body := d.do(page, http.MethodGet, "/v1/docs?limit=2&cursor="+cursor, admin)
				if code != http.StatusOK {
					t.Fatalf("list: HTTP %d %s", code, body)
				}
				var resp struct {
					Documents []struct {
						ID      string    `json:"id"`
						Rev     int64     `json:"rev"`
						Size    int64     `json:"size"`
						Updated time.Time `json:"updated"`
					} `json:"documents"`
					Next string `json:"next"`
				}
				if err := json.Unmarshal(body, &resp); err != nil {
					t.Fatalf("decode list: %v", err)
				}
				for _, doc := range resp.Documents {
					i := int64(doc.ID[len(doc.ID)-1] - '0')
					if doc.Rev == 3+i && doc.Size != int64(len(want[doc.ID])) {
						t.Fatalf("listed %s with size %d, want %d", doc.ID, doc.Size, len(want[doc.ID]))
					}
					listed = append(listed, doc.ID)
				}
				if cursor = resp.Next; cursor == "" {
					break
				}
			}
			if len(listed) == 5 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if strings.Join(listed, ",") != "team-0,team-1,team-2,team-3,team-4" {
			t.Fatalf("listed %v, want the five team documents in order", listed)
		}
		if code, _, _ := d.do(0, http.MethodGet, "/v1/docs", writer); code != http.StatusForbidden {
			t.Fatalf("list with a write token: HTTP %d, want 403", code)
		}

		code, hdr, body := d.do(1, http.MethodGet, "/v1/docs/team-4/export", admin)
		if code != http.StatusOK || string(body) != want["team-4"] || hdr.Get("X-Tandem-Rev") != "7" {
			t.Fatalf("export text: HTTP %d rev %s %q, want %q", code, hdr.Get("X-Tandem-Rev"), body, want["team-4"])
		}
		code, _, body = d.do(0, http.MethodGet, "/v1/docs/team-3/export?format=history", admin)
		if code != http.StatusOK {
			t.Fatalf("export history: HTTP %d %s", code, body)
		}
		_, _, text, rev := replayHistory(t, body)
		if rev != 6 || text != want["team-3"] {
			t.Fatalf("exported history replays to rev %d %q, want rev 6 %q", rev, text, want["team-3"])
		}
		if code, _, _ := d.do(0, http.MethodGet, "/v1/docs/private/export", admin); code != http.StatusForbidden {
			t.Fatalf("export of a document the token does not grant: HTTP %d, want 403", code)
		}
	})
}

// Anonymous mode has no admin API: it authenticates nobody.
func TestAdminRefusedInAnonymousMode(t *testing.T) {
	s := newStack(t, stackOptions{})
	for _, req := range []struct{ method, path string }{
		{http.MethodGet, "/v1/docs"},
		{http.MethodDelete, "/v1/docs/x"},
		{http.MethodGet, "/v1/docs/x/export"},
	} {
		r, err := http.NewRequest(req.method, s.http.URL+req.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s %s in anonymous mode: HTTP %d, want 403", req.method, req.path, resp.StatusCode)
		}
	}
}

// Reading a document that does not exist, in the distributed mode,
// creates nothing in Redis: not its text, its history, nor its export.
func TestReadingAMissingDocumentCreatesNothing(t *testing.T) {
	redis := testsvc.StartRedis(t)
	pg := testsvc.StartPostgres(t)
	url, _ := startReplica(t, redis.URL(), pg.URL(), 0)
	d := &deployment{t: t, urls: []string{url}}
	rdb := goredis.NewClient(mustRedisOptions(t, redis.URL()))
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	reader := d.token("reader", auth.PermRead, time.Hour, "*")
	admin := d.token("adm", auth.PermAdmin, time.Hour, "*")
	// Everything in Redis before the reads: the replica's own keys only.
	keysBefore, sizeBefore := redisContents(t, rdb)
	for _, path := range []string{"/v1/docs/ghost", "/v1/docs/ghost?rev=0", "/v1/docs/ghost/ops", "/v1/docs/ghost/export", "/v1/docs/ghost/export?format=history"} {
		tok := reader
		if strings.Contains(path, "export") {
			tok = admin
		}
		code, _, body := d.do(0, http.MethodGet, path, tok)
		if code != http.StatusOK {
			t.Fatalf("GET %s: HTTP %d %s", path, code, body)
		}
	}
	keys, err := rdb.Keys(ctx, "*ghost*").Result()
	if err != nil || len(keys) != 0 {
		t.Fatalf("keys for the missing document: %v, %v", keys, err)
	}
	// Nor anything else: not a key under another name, not one more key.
	keysAfter, sizeAfter := redisContents(t, rdb)
	if sizeAfter != sizeBefore || !slices.Equal(keysAfter, keysBefore) {
		t.Fatalf("Redis changed with reads of a missing document: DBSIZE %d -> %d, keys %q -> %q", sizeBefore, sizeAfter, keysBefore, keysAfter)
	}
}

// redisContents is every key in Redis, sorted, and DBSIZE.
func redisContents(t *testing.T, rdb *goredis.Client) ([]string, int64) {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	n, err := rdb.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	return keys, n
}

func mustRedisOptions(t *testing.T, url string) *goredis.Options {
	t.Helper()
	o, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// replayHistory replays a history export (format=history): one snapshot,
// then every operation after it in order. It returns where the export
// starts (the snapshot's revision and text) and the text and revision it
// replays to.
func replayHistory(t *testing.T, body []byte) (fromRev int64, fromText, text string, rev int64) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(nil, 1<<20)
	rev = -1
	for sc.Scan() {
		var line struct {
			Type string `json:"type"`
			Rev  int64  `json:"rev"`
			Text string `json:"text"`
			Op   ot.Op  `json:"op"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("history line %q: %v", sc.Text(), err)
		}
		switch {
		case rev < 0 && line.Type == "snapshot":
			fromRev, fromText = line.Rev, line.Text
			text, rev = line.Text, line.Rev
		case line.Type == "op" && line.Rev == rev+1:
			var err error
			if text, err = ot.Apply(text, line.Op); err != nil {
				t.Fatalf("apply exported rev %d: %v", line.Rev, err)
			}
			rev = line.Rev
		default:
			t.Fatalf("unexpected history line %q after rev %d", sc.Text(), rev)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return fromRev, fromText, text, rev
}
