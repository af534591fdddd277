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

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/tandem-dev/tandem/runtime/auth"
)

// latencyProbe measures, for every key press in the element the selector
// given to it names, the time from the event's timestamp to the end of the
// next frame's work on the page's thread: a requestAnimationFrame callback
// runs before the frame's style, layout and paint, and a message posted
// from it is handled after them. The Event Timing API reports,
// independently, every keydown, keypress and input event whose duration is
// 16 ms or more: input to next paint as the browser measures it for INP,
// from the event's timestamp to the frame's presentation (after raster and
// draw), in 8 ms steps. Each entry is assigned to the key press it belongs
// to; a key press with none took under 16 ms.
//
// Run again on the same page, it starts a new measurement with the
// listeners already there.
const latencyProbe = `((sel) => {
	const again = !!window.perf;
	window.perf = { lat: [], starts: [], slow: [], work: [], acc: -1 };
	if (again) return true;
	// Time spent in the client itself (taking a local edit in, handling the
	// server's frames): the part of a key press that used to grow with the
	// text. The page's and CodeMirror's share does not depend on it.
	const c = window.tandem && window.tandem.client;
	for (const name of c ? ['submit', 'handleFrame'] : []) {
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
	document.querySelector(sel).addEventListener('keydown', (e) => {
		// The client's time since the previous key press: that press's edit
		// and the server's answer to it.
		if (c && window.perf.acc >= 0) window.perf.work.push(window.perf.acc);
		if (c) window.perf.acc = 0;
		const t0 = e.timeStamp;
		window.perf.starts.push(t0);
		requestAnimationFrame(() => { waiting.push(t0); ch.port2.postMessage(0); });
	}, true);
	new PerformanceObserver((list) => {
		for (const e of list.getEntries()) {
			if (['keydown', 'keypress', 'input'].includes(e.name)) {
				window.perf.slow.push({ name: e.name, start: e.startTime, duration: e.duration });
			}
		}
	}).observe({ type: 'event', durationThreshold: 16, buffered: false });
	return true;
})`

type perfResult struct {
	Work   []float64 `json:"work"`
	Lat    []float64 `json:"lat"`
	Starts []float64 `json:"starts"`
	Slow   []struct {
		Name     string  `json:"name"`
		Start    float64 `json:"start"`
		Duration float64 `json:"duration"`
	} `json:"slow"`
}

// typing is one measured run of key presses.
type typing struct {
	lat  []float64 // input to paint (rAF probe), sorted
	et   []float64 // per key press, the longest Event Timing duration of its events; 0 when under 16 ms; sorted
	work float64   // median time in the client a key press (0 without one)
}

func (a typing) plus(b typing) typing {
	lat := append(append([]float64(nil), a.lat...), b.lat...)
	et := append(append([]float64(nil), a.et...), b.et...)
	sort.Float64s(lat)
	sort.Float64s(et)
	return typing{lat: lat, et: et, work: (a.work + b.work) / 2}
}

// slow is how many key presses the Event Timing API saw at 16 ms or more.
func (m typing) slow() int {
	n := 0
	for _, d := range m.et {
		if d > 0 {
			n++
		}
	}
	return n
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted)-1) + 0.5)
	return sorted[i]
}

// pressKey presses the key of an ASCII letter or space as a keyboard does:
// key down with its text (keydown, keypress, beforeinput and input in one
// go), then key up. chromedp.KeyEvent sends the text as a separate char
// event after the key down has been acknowledged, which puts a DevTools
// round trip (several milliseconds on a loaded machine) between keydown and
// the text being typed; Puppeteer's keyboard.press sends it like this.
func pressKey(t *testing.T, p context.Context, r rune) {
	t.Helper()
	k, ok := kb.Keys[r]
	if !ok || !k.Print {
		t.Fatalf("pressKey: no printable key for %q", r)
	}
	down := input.DispatchKeyEventParams{
		Type: kb.KeyDown, Key: k.Key, Code: k.Code, Text: k.Text, UnmodifiedText: k.Unmodified,
		WindowsVirtualKeyCode: k.Windows, NativeVirtualKeyCode: k.Native,
	}
	if k.Shift {
		down.Modifiers = int64(kb.ModifierShift)
	}
	up := down
	up.Type, up.Text, up.UnmodifiedText = kb.KeyUp, "", ""
	run(t, p, 10*time.Second, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, input.DispatchKeyEvent, down); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, input.DispatchKeyEvent, up)
		return err
	}))
}

// typeAndMeasure presses keys in the element sel names (focused, the caret
// at its end) about as fast as a quick typist (each press is painted before
// the next one comes) and measures them.
func typeAndMeasure(t *testing.T, p context.Context, sel string, presses int, letters string) typing {
	t.Helper()
	eval[bool](t, p, fmt.Sprintf("%s(%q)", latencyProbe, sel))
	for i := 0; i < presses; i++ {
		pressKey(t, p, rune(letters[i%len(letters)]))
		time.Sleep(80 * time.Millisecond)
	}
	// The last press's Event Timing entries come after its frame.
	time.Sleep(200 * time.Millisecond)
	raw := eval[string](t, p, `JSON.stringify(window.perf)`)
	var res perfResult
	if err := json.Unmarshal([]byte(raw), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Lat) < presses*9/10 || len(res.Starts) != presses {
		t.Fatalf("measured %d of %d key presses (%d keydown events)", len(res.Lat), presses, len(res.Starts))
	}
	m := typing{lat: append([]float64(nil), res.Lat...), et: make([]float64, len(res.Starts))}
	sort.Float64s(m.lat)
	// Each entry belongs to the last key press that started at or before it.
	for _, s := range res.Slow {
		i := sort.Search(len(res.Starts), func(i int) bool { return res.Starts[i] > s.Start+0.5 }) - 1
		if i >= 0 && s.Duration > m.et[i] {
			m.et[i] = s.Duration
		}
	}
	sort.Float64s(m.et)
	work := append([]float64(nil), res.Work...)
	sort.Float64s(work)
	m.work = percentile(work, 0.5)
	return m
}

// etValue says an Event Timing figure, which is "under 16" when the API
// reported nothing for that key press.
func etValue(d float64) string {
	if d == 0 {
		return "<16"
	}
	return fmt.Sprintf("%.0f", d)
}

func latencySummary(what string, m typing) string {
	s := fmt.Sprintf("%s, %d key presses: input to paint median %.1f ms, p95 %.1f ms, p99 %.1f ms, max %.1f ms; Event Timing median %s ms, p95 %s ms, %d at 16 ms or more",
		what, len(m.et), percentile(m.lat, 0.5), percentile(m.lat, 0.95), percentile(m.lat, 0.99), m.lat[len(m.lat)-1],
		etValue(percentile(m.et, 0.5)), etValue(percentile(m.et, 0.95)), m.slow())
	if m.work > 0 {
		s += fmt.Sprintf("; in the client %.2f ms a key press (median)", m.work)
	}
	return s
}

// measureTextarea measures typing into a bare <textarea> on a blank page in
// the same browser: what this machine's headless Chromium needs to paint a
// key press at all, with no script on the page but the probe.
func measureTextarea(t *testing.T, p context.Context, presses int, letters string) typing {
	t.Helper()
	run(t, p, 10*time.Second, chromedp.Navigate("about:blank"))
	eval[bool](t, p, `(() => {
		document.body.innerHTML = '<textarea id="bare" rows="30" cols="90" spellcheck="false" style="font: 16px/1.6 monospace"></textarea>';
		const el = document.getElementById('bare');
		el.value = 'The quick brown fox jumps over the lazy dog.\n'.repeat(3);
		el.focus();
		el.setSelectionRange(el.value.length, el.value.length);
		return true;
	})()`)
	time.Sleep(300 * time.Millisecond)
	return typeAndMeasure(t, p, "#bare", presses, letters)
}

// Typing into a 1 MiB document, measured in the page with the Performance
// API, against typing into a small one on the same page and machine
// (measured before and after it), and into a bare <textarea> in the same
// browser (before and after everything). The target is a key press painted
// within a frame (16 ms). How fast a page paints depends on the machine:
// input to paint waits for the next frame (up to 16.7 ms at 60 Hz, half of
// that on average) and then for the frame's work, and on two cores shared
// with other test runs even the bare textarea takes about 10 ms; it moves in
// whole frames, so a few milliseconds of work more per key press hardly
// move its median. What the test holds the editor to is the client's time
// per key press (taking the edit in, handling the server's answer), which
// work that grows with the text (a copy of it, a scan) shows at once: with
// 1 MiB it must stay within 1 ms of the time with a few hundred bytes (with
// the text kept as a string it was 1.6 ms more). Input to paint is
// reported, and fails the test above 64 ms. The numbers go to the log and,
// with TANDEM_PERF_OUT set, to that file (make bench puts them in
// docs/benchmarks.md).
func TestTypingLatencyInOneMebibyteDocument(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	tok := rt.Token("pia", "Pia", auth.PermWrite, doc)
	p := newBrowser(t)
	const letters = "typing into a large document "
	bare := measureTextarea(t, p, 60, letters)

	openDoc(t, p, rt, doc, tok)
	focusAt(t, p, true)

	// The same page with a few hundred bytes first.
	const line = "The quick brown fox jumps over the lazy dog; déjà vu, naïve café.\n"
	small := strings.Repeat(line, 3)
	paste(t, p, fmt.Sprintf("%q", small))
	waitSyncedWithin(t, p, small, 30*time.Second)
	focusAt(t, p, true)
	time.Sleep(500 * time.Millisecond)
	smallRun := typeAndMeasure(t, p, editorContent, 60, letters)
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
	large := typeAndMeasure(t, p, editorContent, presses, letters)
	waitSyncedWithin(t, p, want+strings.Repeat(letters, 5)[:presses], 30*time.Second)

	// The small document again (everything replaced by it), so that the
	// two measurements of it bracket the large one and a machine whose
	// load changes meanwhile weighs on both sides alike.
	run(t, p, 10*time.Second, chromedp.KeyEvent("a", chromedp.KeyModifiers(chromedp.ModifierCtrl)))
	paste(t, p, fmt.Sprintf("%q", small))
	waitSyncedWithin(t, p, small, 30*time.Second)
	focusAt(t, p, true)
	time.Sleep(500 * time.Millisecond)
	smallRun = smallRun.plus(typeAndMeasure(t, p, editorContent, 60, letters))
	waitSyncedWithin(t, p, small+typed, 30*time.Second)

	bare = bare.plus(measureTextarea(t, p, 60, letters))

	summary := latencySummary(fmt.Sprintf("document %d bytes", len(want)), large) + "\n" +
		latencySummary(fmt.Sprintf("the same page with %d bytes", len(small)), smallRun) + "\n" +
		latencySummary("a bare <textarea> in the same browser", bare)
	t.Log(summary)
	if out := os.Getenv("TANDEM_PERF_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(summary+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, ms, mb := percentile(large.lat, 0.5), percentile(smallRun.lat, 0.5), percentile(bare.lat, 0.5)
	if large.work-smallRun.work > 1 {
		t.Errorf("the client spends %.2f ms a key press in 1 MiB, %.2f ms in %d bytes: the document's size costs %.2f ms, want under 1", large.work, smallRun.work, len(small), large.work-smallRun.work)
	}
	if m >= 64 {
		t.Errorf("median input-to-paint %.1f ms, want under 64 ms (target 16 ms)", m)
	} else if m >= 16 {
		t.Logf("median input-to-paint %.1f ms: over the 16 ms target on this machine (with %d bytes: %.1f ms; a bare textarea: %.1f ms)", m, len(small), ms, mb)
	}
}

// With someone else's caret in the document, a key press elsewhere updates
// the editor once: the edit moves the other caret's decoration with it, to
// where the client places it too, so the binding has nothing to redraw.
// (It used to dispatch a second update per key press to draw the carets
// again.) Counted, not timed: the same on any machine.
func TestKeyPressUpdatesTheEditorOnce(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	c := newBrowser(t)
	d := newBrowser(t)
	openDoc(t, c, rt, doc, rt.Token("cat", "Cat", auth.PermWrite, doc))
	openDoc(t, d, rt, doc, rt.Token("dan", "Dan", auth.PermWrite, doc))
	focusAt(t, c, true)
	typeText(t, c, "start\n")
	waitSynced(t, d, "start\n")
	focusAt(t, d, false)
	waitJS(t, c, 10*time.Second, "Dan's caret drawn at the start", remoteCaretAt("dan")+` === 0`)
	focusAt(t, c, true)
	time.Sleep(300 * time.Millisecond)
	eval[bool](t, c, `(() => {
		window.updates = 0;
		const v = window.tandem.view;
		const update = v.update;
		v.update = function (...args) { window.updates++; return update.apply(this, args); };
		return true;
	})()`)
	const presses = 20
	for i := 0; i < presses; i++ {
		pressKey(t, c, 'x')
		time.Sleep(50 * time.Millisecond)
	}
	want := "start\n" + strings.Repeat("x", presses)
	waitSynced(t, c, want)
	waitSynced(t, d, want)
	time.Sleep(300 * time.Millisecond)
	if n := eval[int](t, c, `window.updates`); n != presses {
		t.Errorf("%d key presses updated the editor %d times, want one each", presses, n)
	}
	if at := eval[int](t, c, remoteCaretAt("dan")); at != 0 {
		t.Errorf("Dan's caret drawn at %d, want 0 (where Dan is)", at)
	}
	// Dan's page draws Cat's caret where Cat typed to.
	waitJS(t, d, 10*time.Second, "Cat's caret drawn at the end", fmt.Sprintf(`%s === %d`, remoteCaretAt("cat"), len(want)))
}
