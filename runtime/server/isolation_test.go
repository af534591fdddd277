package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/client"
)

// TestClientIDIsBoundToItsUser has mallory connect with alice's client id
// (client ids are public: every broadcast operation carries them), on
// another replica in the distributed mode. Mallory takes alice's next seq
// and a huge one; alice must still get her acks, her operations must be
// committed, and mallory must receive alice's operations as operations,
// never as acks.
func TestClientIDIsBoundToItsUser(t *testing.T) {
	modes(t, func(t *testing.T, d *deployment) {
		ctx := testContext(t)
		docID := "shared-client-id"
		const shared = "c-alice-tab"
		alice := client.New(client.Options{URL: d.wsURL(0, docID), ClientID: shared,
			Token: d.token("alice", auth.PermWrite, time.Hour, docID)})
		if err := alice.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(alice.Close)
		commitInserts(t, ctx, alice, 1) // alice's seq 1: revision 1

		mal := d.rawAt(1, docID, d.token("mallory", auth.PermWrite, time.Hour, docID), shared)
		var seen []map[string]any
		mal.collect(&seen, 10*time.Second, func(typ string, _ map[string]any) bool { return typ == "welcome" })
		isAck := func(seq int64) func(string, map[string]any) bool {
			return func(typ string, m map[string]any) bool {
				if typ == "error" {
					t.Fatalf("mallory's operation refused: %v", m)
				}
				return typ == "ack" && num(m, "seq") == seq
			}
		}
		mal.sendText(`{"type":"op","seq":2,"rev":1,"op":["M"]}`) // alice's next seq
		mal.collect(&seen, 10*time.Second, isAck(2))
		mal.sendText(`{"type":"op","seq":1000000000,"rev":2,"op":["m"]}`)
		mal.collect(&seen, 10*time.Second, isAck(1000000000))

		// Alice sees both as someone else's operations and goes on: seqs
		// 2, 3 and 4 are hers, acked to her, none swallowed or refused.
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if err := alice.WaitSynced(wctx, 3); err != nil {
			t.Fatalf("alice after mallory's operations: %v (errors %v)", err, alice.Errors())
		}
		commitInserts(t, wctx, alice, 3)
		acks := alice.Acks()
		if len(acks) != 4 {
			t.Fatalf("alice's acks = %+v, want seqs 1-4", acks)
		}
		for i, a := range acks {
			if a.Seq != int64(i+1) {
				t.Fatalf("alice's acks = %+v, want seqs 1-4 in order", acks)
			}
		}
		if errs := alice.Errors(); len(errs) != 0 {
			t.Fatalf("alice got errors: %+v", errs)
		}
		if got, want := alice.Text(), "mMaabc"; got != want {
			t.Fatalf("alice's text %q, want %q", got, want)
		}

		// Mallory received alice's operations 4-6 as operations; the only
		// acks she ever got are for her own two.
		mal.collect(&seen, 10*time.Second, func(typ string, m map[string]any) bool { return typ == "op" && num(m, "rev") == 6 })
		for _, m := range seen {
			switch m["type"] {
			case "ack":
				if s := num(m, "seq"); s != 2 && s != 1000000000 {
					t.Errorf("mallory received an ack for seq %d: %s", s, asJSON(m))
				}
			case "op":
				if m["user"] != "alice" {
					t.Errorf("mallory was sent an operation not by alice: %s", asJSON(m))
				}
			}
		}
		// A newcomer sees the same text on any replica.
		reader := client.New(client.Options{URL: d.wsURL(1, docID), ClientID: "reader",
			Token: d.token("reader", auth.PermRead, time.Hour, docID)})
		if err := reader.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(reader.Close)
		if err := reader.WaitSynced(wctx, 6); err != nil || reader.Text() != "mMaabc" {
			t.Fatalf("reader: %q (%v), want %q", reader.Text(), err, "mMaabc")
		}
	})
}
