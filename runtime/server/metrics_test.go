package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/metrics"
)

// The metrics operators alert on (docs/operations.md) count what happened:
// acks and their latency, submissions by route, refused handshakes by
// reason, closes by code and by who closed, connections by state.
func TestMetricsCountWhatHappened(t *testing.T) {
	s := newStack(t, stackOptions{jwt: true, limits: highLimits()})
	ctx := testContext(t)
	m := s.metrics

	c := s.client(ctx, "metered", "writer")
	commitInserts(t, ctx, c, 5)
	if got := testutil.ToFloat64(m.Acks.WithLabelValues(metrics.AckCommit)); got != 5 {
		t.Errorf("tandem_acks_total{kind=commit} = %v, want 5", got)
	}
	if got := testutil.ToFloat64(m.Submissions.WithLabelValues(metrics.RouteLocal)); got != 5 {
		t.Errorf("tandem_submissions_total{route=local} = %v, want 5", got)
	}
	if got := testutil.ToFloat64(m.Submissions.WithLabelValues(metrics.RouteForwarded)); got != 0 {
		t.Errorf("tandem_submissions_total{route=forwarded} = %v, want 0 in one process", got)
	}
	if got := testutil.CollectAndCount(m.AckTime); got != 2 {
		t.Errorf("tandem_ack_seconds has %d series, want 2 (local, forwarded)", got)
	}
	scraped := scrape(t, s)
	if !strings.Contains(scraped, `tandem_ack_seconds_count{route="local"} 5`) {
		t.Errorf("ack latency histogram lacks its 5 local acks:\n%s", grepLines(scraped, "tandem_ack_seconds_count"))
	}

	// Refused handshakes, each with its reason.
	bad := s.raw("metered", nil)
	bad.hello("not-a-token", "intruder")
	if _, _, code := bad.next(5 * time.Second); code == 0 {
		for {
			if _, _, code = bad.next(5 * time.Second); code != 0 {
				break
			}
		}
	}
	other := s.raw("metered", nil)
	other.hello(s.token("eve", auth.PermWrite, "another-doc"), "eve")
	for {
		if _, _, code := other.next(5 * time.Second); code != 0 {
			break
		}
	}
	if _, resp, err := wsDial(strings.Replace(s.wsURL("metered"), "metered", "bad%20id", 1), nil); err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("dial with a bad document id: err %v, want HTTP 400", err)
	}
	waitCounter(t, "refused unauthorized", func() float64 {
		return testutil.ToFloat64(m.HandshakesRefused.WithLabelValues(metrics.RefusedUnauthorized))
	}, 1)
	waitCounter(t, "refused forbidden", func() float64 {
		return testutil.ToFloat64(m.HandshakesRefused.WithLabelValues(metrics.RefusedForbidden))
	}, 1)
	waitCounter(t, "refused invalid document", func() float64 {
		return testutil.ToFloat64(m.HandshakesRefused.WithLabelValues(metrics.RefusedInvalidDocument))
	}, 1)
	// The server closed both refused connections with its own codes.
	waitCounter(t, "server closes 4001", func() float64 {
		return testutil.ToFloat64(m.Closes.WithLabelValues("4001", metrics.ClosedByServer))
	}, 1)
	waitCounter(t, "server closes 4003", func() float64 {
		return testutil.ToFloat64(m.Closes.WithLabelValues("4003", metrics.ClosedByServer))
	}, 1)

	// An idle, joined connection is parked on the poller (Linux); a
	// client's close is counted under its code, a non-standard one as
	// "other".
	idle := s.raw("metered", nil)
	idle.hello(s.token("ida", auth.PermWrite, "metered"), "ida")
	idle.expect("welcome")
	waitScrape(t, s, `tandem_connections_by_state{state="idle"} `, func(v float64) bool { return v >= 1 })
	if err := idle.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, "client closes 1000", func() float64 {
		return testutil.ToFloat64(m.Closes.WithLabelValues("1000", metrics.ClosedByClient))
	}, 1)
	odd := s.raw("metered", nil)
	odd.hello(s.token("oda", auth.PermWrite, "metered"), "oda")
	odd.expect("welcome")
	if err := odd.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4777, "mine"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	waitCounter(t, "client closes other", func() float64 {
		return testutil.ToFloat64(m.Closes.WithLabelValues("other", metrics.ClosedByClient))
	}, 1)
	if n := testutil.CollectAndCount(m.Closes); n > 8 {
		t.Errorf("tandem_websocket_closes_total has %d series after a handful of closes", n)
	}
}

// /readyz names each dependency and which one fails.
func TestReadyzNamesDependencies(t *testing.T) {
	s := newStack(t, stackOptions{})
	resp, err := http.Get(s.http.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "[+]sqlite ok\n") {
		t.Fatalf("/readyz = %d %q, want 200 naming sqlite", resp.StatusCode, body)
	}
	if err := s.durable.Close(); err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(s.http.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body = readAll(t, resp)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "[-]sqlite failed: ") || !strings.Contains(body, "not ready: sqlite\n") {
		t.Fatalf("/readyz with the database closed = %d %q, want 503 naming sqlite", resp.StatusCode, body)
	}
}

func scrape(t *testing.T, s *stack) string {
	t.Helper()
	resp, err := http.Get(s.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return readAll(t, resp)
}

func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func waitCounter(t *testing.T, what string, read func() float64, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := read()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", what, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitScrape waits until the sample whose line starts with prefix has a
// value ok accepts.
func waitScrape(t *testing.T, s *stack, prefix string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		body := scrape(t, s)
		for _, l := range strings.Split(body, "\n") {
			if v, found := strings.CutPrefix(l, prefix); found {
				var f float64
				if _, err := fmt.Sscan(v, &f); err == nil && ok(f) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sample %q with the wanted value:\n%s", prefix, grepLines(body, strings.SplitN(prefix, "{", 2)[0]))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
