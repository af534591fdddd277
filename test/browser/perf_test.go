package browser

import (
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
const latencyProbe = `(() => {
	window.perf = { lat: [], slow: [] };
	const ch = new MessageChannel();
	const waiting = [];
	ch.port1.onmessage = () => {
		const now = performance.now();
		for (const t0 of waiting.splice(0)) window.perf.lat.push(now - t0);
	};
	window.tandem.view.contentDOM.addEventListener('keydown', (e) => {
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

// Typing into a 1 MiB document, measured in the page with the Performance
// API. The target is a key press painted within a frame (16 ms); the
// numbers go to the log and, with TANDEM_PERF_OUT set, to that file
// (make bench puts them in docs/benchmarks.md). The test fails on a gross
// regression only (a median over 64 ms): the 16 ms target is not met yet,
// see docs/benchmarks.md.
func TestTypingLatencyInOneMebibyteDocument(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	tok := rt.Token("pia", "Pia", auth.PermWrite, doc)
	p := newBrowser(t)
	openDoc(t, p, rt, doc, tok)
	focusAt(t, p, true)

	// 1 MiB of prose-like lines, mostly ASCII with some accents.
	const line = "The quick brown fox jumps over the lazy dog; déjà vu, naïve café.\n"
	n := (1 << 20) / len(line)
	paste(t, p, fmt.Sprintf("%q.repeat(%d)", line, n))
	want := strings.Repeat(line, n)
	waitSyncedWithin(t, p, want, 90*time.Second)
	focusAt(t, p, true)
	time.Sleep(500 * time.Millisecond)

	eval[bool](t, p, latencyProbe)
	const presses = 120
	typed := ""
	for i := 0; i < presses; i++ {
		ch := string("typing into a large document "[i%29])
		run(t, p, 10*time.Second, chromedp.KeyEvent(ch))
		typed += ch
		// About 12 characters a second, a fast typist: each press is
		// painted before the next one comes.
		time.Sleep(80 * time.Millisecond)
	}
	waitSyncedWithin(t, p, want+typed, 30*time.Second)

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
	slowKeys := 0
	for _, s := range res.Slow {
		if s.Name == "keydown" {
			slowKeys++
		}
	}
	summary := fmt.Sprintf("document %d bytes, %d key presses at the end: input to paint median %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms; Event Timing: %d of %d keydown events at 16 ms or more",
		len(want), len(lat), percentile(lat, 0.5), percentile(lat, 0.9), percentile(lat, 0.99), lat[len(lat)-1], slowKeys, presses)
	t.Log(summary)
	if out := os.Getenv("TANDEM_PERF_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(summary+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The median is robust to a busy machine's occasional stall; work that
	// grows on every key press (a copy of the text too many, a storage
	// write) is not.
	if m := percentile(lat, 0.5); m >= 64 {
		t.Errorf("median input-to-paint %.1f ms, want under 64 ms (target 16 ms)", m)
	} else if m >= 16 {
		t.Logf("median input-to-paint %.1f ms: over the 16 ms target", m)
	}
}
