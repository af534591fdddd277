package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tandem-dev/tandem/runtime/auth"
)

// latencyProbe measures, for every key press in the editor, the time from
// the event's timestamp to just after the next paint: a requestAnimationFrame
// callback runs before the frame is painted, and a message posted from it
// is handled after. The Event Timing API reports, independently, every
// keyboard event whose duration (input to next paint, 8 ms granularity)
// is 16 ms or more.
//
// Run again, it starts a new measurement with the listeners already there.
const latencyProbe = `(() => {
	const again = !!window.perf;
	window.perf = { lat: [], slow: [], work: [], acc: -1 };
	if (again) return true;
	// Time spent in the client itself (taking a local edit in, handling the
	// server's frames): the part of a key press that used to grow with the
	// text. The page's and CodeMirror's share does not depend on it.
	const c = window.tandem.client;
	for (const name of ['submit', 'handleFrame']) {
		const f = c[name];
		c[name] = function (...args) {
			const t0 = performance.now();
			try {
				return f.apply(this, args);
			} finally {
				if (window.perf.acc >= 0) window.perf.acc += performance.now() - t0;
			}
		};
	}
	const ch = new MessageChannel();
	const waiting = [];
	ch.port1.onmessage = () => {
		const now = performance.now();
		for (const t0 of waiting.splice(0)) window.perf.lat.push(now - t0);
	};
	window.tandem.view.contentDOM.addEventListener('keydown', (e) => {
		// The client's time since the previous key press: that press's edit
		// and the server's answer to it.
		if (window.perf.acc >= 0) window.perf.work.push(window.perf.acc);
		window.perf.acc = 0;
		const t0 = e.timeStamp;
		requestAnimationFrame(() => { waiting.push(t0); ch.port2.postMessage(0); });
	}, true);
	new PerformanceObserver((list) => {
		for (const e of list.getEntries()) {
			if (['keydown', 'keypress', 'keyup', 'beforeinput', 'input'].includes(e.name)) {
				window.perf.slow.push({ name: e.name, duration: e.duration, processing: e.processingEnd - e.processingStart });
			}
		}
	}).observe({ type: 'event', durationThreshold: 16, buffered: false });
	return true;
})()`

type perfResult struct {
	Work []float64 `json:"work"`
	Lat  []float64 `json:"lat"`
	Slow []struct {
		Name       string  `json:"name"`
		Duration   float64 `json:"duration"`
		Processing float64 `json:"processing"`
	} `json:"slow"`
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted)-1) + 0.5)
	return sorted[i]
}

// typeAndMeasure presses keys at the end of the document about as fast as a
// quick typist (each press is painted before the next one comes) and
// returns the input-to-paint latencies, sorted, and how many keydown
// events the Event Timing API saw at 16 ms or more.
func typeAndMeasure(t *testing.T, p context.Context, presses int, letters string) ([]float64, int, float64) {
	t.Helper()
	eval[bool](t, p, latencyProbe)
	for i := 0; i < presses; i++ {
		run(t, p, 10*time.Second, chromedp.KeyEvent(string(letters[i%len(letters)])))
		time.Sleep(80 * time.Millisecond)
	}
	raw := eval[string](t, p, `JSON.stringify(window.perf)`)
	var res perfResult
	if err := json.Unmarshal([]byte(raw), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Lat) < presses*9/10 {
		t.Fatalf("measured %d of %d key presses", len(res.Lat), presses)
	}
	lat := append([]float64(nil), res.Lat...)
	sort.Float64s(lat)
	slow := 0
	for _, s := range res.Slow {
		if s.Name == "keydown" {
			slow++
		}
	}
	work := append([]float64(nil), res.Work...)
	sort.Float64s(work)
	return lat, slow, percentile(work, 0.5)
}

func latencySummary(what string, lat []float64, slow int, work float64) string {
	return fmt.Sprintf("%s, %d key presses at the end: input to paint median %.1f ms, p95 %.1f ms, p99 %.1f ms, max %.1f ms; in the client %.2f ms a key press (median); Event Timing: %d keydown events at 16 ms or more",
		what, len(lat), percentile(lat, 0.5), percentile(lat, 0.95), percentile(lat, 0.99), lat[len(lat)-1], work, slow)
}

// Typing into a 1 MiB document, measured in the page with the Performance
// API, against typing into a small one on the same page and machine
// (measured before and after it). The target is a key press painted within
// a frame (16 ms). How fast a page paints depends on the machine (on two
// cores shared with other test runs even a bare textarea takes about
// 10 ms) and input to paint moves in whole frames, so a few milliseconds of
// work more per key press hardly move its median. What the test holds the
// editor to is the client's time per key press (taking the edit in,
// handling the server's answer), which work that grows with the text (a
// copy of it, a scan) shows at once: with 1 MiB it must stay within 1 ms
// of the time with a few hundred bytes (with the text kept as a string it
// was 1.6 ms more). Input to paint is reported, and fails the test above
// 64 ms. The numbers go to the log and, with TANDEM_PERF_OUT set, to that
// file (make bench puts them in docs/benchmarks.md).
func TestTypingLatencyInOneMebibyteDocument(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	tok := rt.Token("pia", "Pia", auth.PermWrite, doc)
	p := newBrowser(t)
	openDoc(t, p, rt, doc, tok)
	focusAt(t, p, true)

	// The same page with a few hundred bytes first.
	const line = "The quick brown fox jumps over the lazy dog; déjà vu, naïve café.\n"
	small := strings.Repeat(line, 3)
	paste(t, p, fmt.Sprintf("%q", small))
	waitSyncedWithin(t, p, small, 30*time.Second)
	focusAt(t, p, true)
	time.Sleep(500 * time.Millisecond)
	const letters = "typing into a large document "
	smallLat, smallSlow, smallWork := typeAndMeasure(t, p, 60, letters)
	typed := strings.Repeat(letters, 3)[:60]
	waitSyncedWithin(t, p, small+typed, 30*time.Second)

	// 1 MiB of prose-like lines, mostly ASCII with some accents.
	n := (1 << 20) / len(line)
	paste(t, p, fmt.Sprintf("'\\n' + %q.repeat(%d)", line, n))
	want := small + typed + "\n" + strings.Repeat(line, n)
	waitSyncedWithin(t, p, want, 90*time.Second)
	focusAt(t, p, true)
	// The text is written for unsent edits once, in idle time after it
	// arrives: not part of typing.
	time.Sleep(1500 * time.Millisecond)

	const presses = 120
	lat, slow, work := typeAndMeasure(t, p, presses, letters)
	waitSyncedWithin(t, p, want+strings.Repeat(letters, 5)[:presses], 30*time.Second)

	// The small document again (everything replaced by it), so that the
	// two measurements of it bracket the large one and a machine whose
	// load changes meanwhile weighs on both sides alike.
	run(t, p, 10*time.Second, chromedp.KeyEvent("a", chromedp.KeyModifiers(chromedp.ModifierCtrl)))
	paste(t, p, fmt.Sprintf("%q", small))
	waitSyncedWithin(t, p, small, 30*time.Second)
	focusAt(t, p, true)
	time.Sleep(500 * time.Millisecond)
	after, afterSlow, afterWork := typeAndMeasure(t, p, 60, letters)
	waitSyncedWithin(t, p, small+typed, 30*time.Second)
	smallLat = append(smallLat, after...)
	sort.Float64s(smallLat)
	smallSlow += afterSlow
	smallWork = (smallWork + afterWork) / 2

	summary := latencySummary(fmt.Sprintf("document %d bytes", len(want)), lat, slow, work) + "\n" +
		latencySummary(fmt.Sprintf("the same page with %d bytes", len(small)), smallLat, smallSlow, smallWork)
	t.Log(summary)
	if out := os.Getenv("TANDEM_PERF_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(summary+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, ms := percentile(lat, 0.5), percentile(smallLat, 0.5)
	if work-smallWork > 1 {
		t.Errorf("the client spends %.2f ms a key press in 1 MiB, %.2f ms in %d bytes: the document's size costs %.2f ms, want under 1", work, smallWork, len(small), work-smallWork)
	}
	if m >= 64 {
		t.Errorf("median input-to-paint %.1f ms, want under 64 ms (target 16 ms)", m)
	} else if m >= 16 {
		t.Logf("median input-to-paint %.1f ms: over the 16 ms target on this machine (with %d bytes: %.1f ms)", m, len(small), ms)
	}
}
