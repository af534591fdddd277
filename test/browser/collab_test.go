package browser

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/tandem-dev/tandem/runtime/auth"
)

// paste fires a paste event at the editor with the text jsText evaluates
// to, as Ctrl+V with that text on the clipboard does; the editor's own
// paste handling takes it from there.
func paste(t testing.TB, ctx context.Context, jsText string) {
	t.Helper()
	eval[bool](t, ctx, fmt.Sprintf(`(() => {
		const dt = new DataTransfer();
		dt.setData('text/plain', %s);
		window.tandem.view.focus();
		return window.tandem.view.contentDOM.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true})) === false;
	})()`, jsText))
}

// countConnects starts counting the page's connection attempts (each is a
// hello) in window.connects.
func countConnects(t testing.TB, ctx context.Context) {
	t.Helper()
	eval[bool](t, ctx, `(() => { window.connects = 0; window.tandem.client.on('state', (e) => { if (e.state === 'connecting') window.connects++; }); return true; })()`)
}

// remoteCaretAt is the editor position (UTF-16) where the page draws
// user's caret, or -1 when it draws none.
func remoteCaretAt(user string) string {
	return fmt.Sprintf(`(() => { const el = document.querySelector('#text .cm-remote-caret[data-user=%q]'); return el ? window.tandem.view.posAtDOM(el) : -1; })()`, user)
}

// Two people type at the same spot at the same moment. Afterwards each
// page draws the other's caret exactly where the other person's own caret
// is, and keeps doing so as one of them goes on typing (issue: the caret
// was drawn before the other's insert and stayed there).
func TestCaretsMeetAtTheSameSpot(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	cat := rt.Token("cat", "Cat", auth.PermWrite, doc)
	dan := rt.Token("dan", "Dan", auth.PermWrite, doc)
	c := newBrowser(t)
	d := newBrowser(t)
	openDoc(t, c, rt, doc, cat)
	openDoc(t, d, rt, doc, dan)
	focusAt(t, c, true)
	typeText(t, c, "start")
	waitSynced(t, d, "start")

	// Each page's caret must be where the other page draws it.
	check := func(round string) {
		t.Helper()
		for _, p := range []struct {
			name        string
			self, other context.Context
			user        string
		}{{"dan sees cat", d, c, "cat"}, {"cat sees dan", c, d, "dan"}} {
			want := eval[int](t, p.other, `window.tandem.selection().head`)
			expr := fmt.Sprintf(`%s === %d`, remoteCaretAt(p.user), want)
			deadline := time.Now().Add(10 * time.Second)
			for !eval[bool](t, p.self, expr) {
				if time.Now().After(deadline) {
					t.Fatalf("%s, %s: %s's own caret is at %d, drawn at %d (decorations %s, presence %s)", round, p.name, p.user, want,
						eval[int](t, p.self, remoteCaretAt(p.user)), eval[string](t, p.self, `JSON.stringify(window.tandem.remoteCarets())`),
						eval[string](t, p.self, `JSON.stringify([...window.tandem.client.others.values()].map((o) => ({user: o.user.id, srv: o.srv, cursor: o.cursor})))`))
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}

	for round := 0; round < 3; round++ {
		focusAt(t, c, true)
		focusAt(t, d, true)
		before := textOf(t, c)
		// Both type one character at the end at once.
		var wg sync.WaitGroup
		for _, tc := range []struct {
			ctx context.Context
			s   string
		}{{c, "a"}, {d, "b"}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tctx, cancel := context.WithTimeout(tc.ctx, 20*time.Second)
				defer cancel()
				_ = chromedp.Do(tctx, chromedp.KeyEvent(tc.s))
			}()
		}
		wg.Wait()
		waitJS(t, c, 20*time.Second, "both letters everywhere", fmt.Sprintf(`window.tandem.client.synchronized() && window.tandem.text().length === %d`, len(before)+2))
		want := textOf(t, c)
		waitSynced(t, d, want)
		check(fmt.Sprintf("round %d after the tie (%q)", round, want))

		// Cat keeps typing: Dan draws Cat's caret moving with it.
		typeText(t, c, "xyz")
		want = textOf(t, c)
		waitSynced(t, c, want)
		waitSynced(t, d, want)
		check(fmt.Sprintf("round %d after cat typed on (%q)", round, want))
	}
	screenshot(t, d, "editor-carets-meet.png")
}

// Undo and redo take back and put back the person's own edits only, at
// the right place after the other person edited, and never touch the
// other person's text.
func TestUndoRedoOwnEditsOnly(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	una := rt.Token("una", "Una", auth.PermWrite, doc)
	vic := rt.Token("vic", "Vic", auth.PermWrite, doc)
	u := newBrowser(t)
	v := newBrowser(t)
	openDoc(t, u, rt, doc, una)
	openDoc(t, v, rt, doc, vic)

	focusAt(t, v, true)
	typeText(t, v, "shared line\n")
	waitSynced(t, u, "shared line\n")
	// Each person's edit is one paste, so it is one undo step however
	// slowly a loaded machine delivers key events.
	focusAt(t, u, true)
	paste(t, u, `'una wrote this'`)
	waitSynced(t, v, "shared line\nuna wrote this")
	focusAt(t, v, false)
	paste(t, v, `'VIC> '`)
	focusAt(t, v, true)
	paste(t, v, `' <VIC'`)
	want := "VIC> shared line\nuna wrote this <VIC"
	waitSynced(t, v, want)
	waitSynced(t, u, want)

	ctrl := chromedp.KeyModifiers(chromedp.ModifierCtrl)
	run(t, u, 10*time.Second, chromedp.KeyEvent("z", ctrl))
	want = "VIC> shared line\n <VIC"
	waitSynced(t, u, want)
	waitSynced(t, v, want)
	// Nothing of Vic's is Una's to undo.
	run(t, u, 10*time.Second, chromedp.KeyEvent("z", ctrl))
	time.Sleep(300 * time.Millisecond)
	waitSynced(t, u, want)

	run(t, u, 10*time.Second, chromedp.KeyEvent("y", ctrl))
	want = "VIC> shared line\nuna wrote this <VIC"
	waitSynced(t, u, want)
	waitSynced(t, v, want)

	// Vic's undo takes back Vic's last edit only.
	run(t, v, 10*time.Second, chromedp.KeyEvent("z", ctrl))
	want = "VIC> shared line\nuna wrote this"
	waitSynced(t, v, want)
	waitSynced(t, u, want)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := rt.Doc(ctx, doc, una)
	if err != nil {
		t.Fatal(err)
	}
	if got.Text != want {
		t.Fatalf("server text = %q, want %q", got.Text, want)
	}
}

// A 1 MB paste just works: it reaches the other person and the server
// (as several operations within the server's limits), and typing goes on.
func TestOneMegabytePaste(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	wes := rt.Token("wes", "Wes", auth.PermWrite, doc)
	xia := rt.Token("xia", "Xia", auth.PermWrite, doc)
	w := newBrowser(t)
	x := newBrowser(t)
	openDoc(t, w, rt, doc, wes)
	openDoc(t, x, rt, doc, xia)
	focusAt(t, w, true)
	typeText(t, w, "before ")
	waitSynced(t, w, "before ")
	countConnects(t, w)
	bctx, bcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer bcancel()
	before, err := rt.Doc(bctx, doc, wes)
	if err != nil {
		t.Fatal(err)
	}

	const line = `pasted line with some text, é and 😀 in it\n`
	n := (1<<20)/len(line) + 1
	paste(t, w, fmt.Sprintf("%q.repeat(%d)", line, n))
	typeText(t, w, "after")
	want := "before " + strings.Repeat(line, n) + "after"
	waitSyncedWithin(t, w, want, 90*time.Second)
	waitSyncedWithin(t, x, want, 60*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := rt.Doc(ctx, doc, wes)
	if err != nil {
		t.Fatal(err)
	}
	if got.Text != want {
		t.Fatalf("server text: %d bytes, want %d", len(got.Text), len(want))
	}
	// 64 KiB per operation at most: the paste took at least 16.
	if got.Rev < before.Rev+16 {
		t.Errorf("server at rev %d: the paste should have arrived as several operations", got.Rev)
	}
	if c := eval[int](t, w, `window.connects`); c != 0 {
		t.Errorf("the page reconnected %d times during the paste", c)
	}
	if shown := eval[bool](t, w, `!document.getElementById('banner').hidden`); shown {
		t.Errorf("banner shown: %q", eval[string](t, w, `document.getElementById('banner-text').textContent`))
	}
}

// With the server's message limit lowered, a 300 KB paste still arrives
// whole (in smaller frames): no reconnect loop, no message.
func TestPasteUnderLoweredMessageLimit(t *testing.T) {
	rt := startRuntimeAuth(t, "jwt", "--max-message-bytes", "65536")
	doc := docID(t)
	tok := rt.Token("yan", "Yan", auth.PermWrite, doc)
	y := newBrowser(t)
	openDoc(t, y, rt, doc, tok)
	focusAt(t, y, true)
	countConnects(t, y)
	paste(t, y, `'0123456789abcdef'.repeat(19200)`)
	typeText(t, y, "!")
	want := strings.Repeat("0123456789abcdef", 19200) + "!"
	waitSyncedWithin(t, y, want, 60*time.Second)
	// A runtime that announces its limits needs no reconnect; one that
	// does not closes with 1009 once, and the client halves its frames.
	if c := eval[int](t, y, `window.connects`); c > 2 {
		t.Errorf("%d reconnects for one paste: a reconnect loop", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := rt.Doc(ctx, doc, tok)
	if err != nil {
		t.Fatal(err)
	}
	if got.Text != want {
		t.Fatalf("server text: %d bytes, want %d", len(got.Text), len(want))
	}
}

// A 300 KB paste into a document the server keeps under 200 KB is refused
// with one clear message; nothing else is lost, there is no reconnect,
// and typing goes on.
func TestOversizedPasteIsExplained(t *testing.T) {
	rt := startRuntimeAuth(t, "jwt", "--max-doc-bytes", "200000")
	doc := docID(t)
	tok := rt.Token("gus", "Gus", auth.PermWrite, doc)
	g := newBrowser(t)
	openDoc(t, g, rt, doc, tok)
	focusAt(t, g, true)
	typeText(t, g, "small ")
	waitSynced(t, g, "small ")
	countConnects(t, g)

	paste(t, g, `'x'.repeat(300000)`)
	waitJS(t, g, 30*time.Second, "too-large message",
		`!document.getElementById('banner').hidden && /too large/.test(document.getElementById('banner-text').textContent)`)
	typeText(t, g, "ok")
	waitSynced(t, g, "small ok")
	time.Sleep(2 * time.Second) // a loop would show by now
	if c := eval[int](t, g, `window.connects`); c != 0 {
		t.Errorf("the page reconnected %d times", c)
	}
	msg := eval[string](t, g, `document.getElementById('banner-text').textContent`)
	t.Logf("message: %s", msg)
	if !strings.Contains(msg, "Everything else you typed is kept") {
		t.Errorf("message %q does not say the rest is kept", msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := rt.Doc(ctx, doc, tok)
	if err != nil {
		t.Fatal(err)
	}
	if got.Text != "small ok" {
		t.Fatalf("server text = %q, want %q", got.Text, "small ok")
	}
}

// Edits made offline survive closing the page: they wait in the browser's
// storage, come back when the document is opened again, and reach the
// server once it is back, exactly once.
func TestOfflineEditsSurviveReload(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	tok := rt.Token("zed", "Zed", auth.PermWrite, doc)
	z := newBrowser(t)
	openDoc(t, z, rt, doc, tok)
	focusAt(t, z, true)
	typeText(t, z, "online. ")
	waitSynced(t, z, "online. ")

	// Leave the page without answering its beforeunload prompt by hand.
	if err := chromedp.Listen(z, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			go func() {
				ctx, cancel := context.WithTimeout(z, 10*time.Second)
				defer cancel()
				_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
			}()
		}
	}); err != nil {
		t.Fatal(err)
	}

	setOnline(t, z, false)
	rt.Stop()
	waitJS(t, z, 10*time.Second, "offline state", `document.getElementById('status').dataset.state === 'offline'`)
	typeText(t, z, "typed offline 😀")
	waitJS(t, z, 5*time.Second, "kept in storage", `Object.keys(localStorage).some((k) => k.startsWith('tandem.pending:') && localStorage.getItem(k).includes('typed offline'))`)

	// The tab goes away; later the server and the network are back and the
	// person opens the document again.
	run(t, z, 30*time.Second, chromedp.Navigate("about:blank"))
	rt.Start()
	setOnline(t, z, true)
	want := "online. typed offline 😀"
	openDoc(t, z, rt, doc, tok)
	waitSyncedWithin(t, z, want, 30*time.Second)
	waitJS(t, z, 10*time.Second, "storage emptied once acknowledged", `!Object.keys(localStorage).some((k) => k.startsWith('tandem.pending:'))`)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got, err := rt.Doc(ctx, doc, tok)
	if err != nil {
		t.Fatal(err)
	}
	if got.Text != want {
		t.Fatalf("server text = %q, want %q (each edit exactly once)", got.Text, want)
	}

	// Sent but never acknowledged: the server committed the edit, the page
	// went away before the ack. Reopened, the page resubmits it under the
	// same client id and seq, and the server does not apply it twice.
	focusAt(t, z, true)
	eval[bool](t, z, `(() => {
		// Stop reading the socket from now on: acks never arrive.
		const c = window.tandem.client;
		c.socket.onmessage = null;
		return true;
	})()`)
	paste(t, z, `' once'`) // one operation
	waitJS(t, z, 10*time.Second, "sent, not acknowledged", `window.tandem.client.inflight?.everSent === true`)
	want += " once"
	for deadline := time.Now().Add(15 * time.Second); ; {
		if d, err := rt.Doc(ctx, doc, tok); err == nil && d.Text == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server never committed %q", want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Closing the tab writes the unacknowledged edit down (pagehide).
	eval[bool](t, z, `(dispatchEvent(new PageTransitionEvent('pagehide')), true)`)
	waitJS(t, z, 5*time.Second, "stored", `Object.keys(localStorage).some((k) => k.startsWith('tandem.pending:') && localStorage.getItem(k).includes(' once'))`)
	run(t, z, 30*time.Second, chromedp.Navigate("about:blank"))
	openDoc(t, z, rt, doc, tok)
	waitSyncedWithin(t, z, want, 30*time.Second)
	got, err = rt.Doc(ctx, doc, tok)
	if err != nil {
		t.Fatal(err)
	}
	if got.Text != want {
		t.Fatalf("server text = %q, want %q (each edit exactly once)", got.Text, want)
	}
}

// Unsent edits are written down while connected, as they are made: a tab
// whose renderer crashes (no pagehide, no close) with edits the server has
// not acknowledged loses none of them, and reopened, each arrives once.
func TestUnsentEditsSurviveACrashWhileConnected(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	tok := rt.Token("kai", "Kai", auth.PermWrite, doc)
	k := newBrowser(t)
	openDoc(t, k, rt, doc, tok)
	focusAt(t, k, true)
	typeText(t, k, "online. ")
	waitSynced(t, k, "online. ")
	waitJS(t, k, 10*time.Second, "the text kept for unsent edits", `Object.keys(localStorage).some((k) => k.startsWith('tandem.base:'))`)

	// The connection stays up but acks never arrive: the first edit is
	// sent (and committed), the rest wait behind it.
	eval[bool](t, k, `(window.tandem.client.socket.onmessage = null, true)`)
	typeText(t, k, "kept 😀 too")
	waitJS(t, k, 10*time.Second, "sent, not acknowledged", `window.tandem.client.inflight?.everSent === true && window.tandem.client.unsentEdits() > 1`)
	if st := eval[string](t, k, `window.tandem.client.state`); st != "connected" {
		t.Fatalf("client state %q, want connected", st)
	}
	// Written once the frame showing it is painted.
	waitJS(t, k, time.Second, "the last edit in storage", `Object.keys(localStorage).some((k) => k.startsWith('tandem.pending:') && localStorage.getItem(k).includes('too'))`)

	// The tab dies as in a crash: none of the page's pagehide or
	// beforeunload handlers runs (they are taken off the window with the
	// DevTools command line API), so only what was written while connected
	// is there.
	ectx, cancelEval := context.WithTimeout(k, 10*time.Second)
	removed, err := chromedp.Run(ectx, chromedp.Evaluate[int](`(() => {
		let n = 0;
		for (const type of ['pagehide', 'beforeunload', 'visibilitychange', 'freeze', 'unload']) {
			for (const l of getEventListeners(window)[type] || []) {
				window.removeEventListener(type, l.listener, l.useCapture);
				n++;
			}
		}
		return n;
	})()`, chromedp.EvalWithCommandLineAPI))
	cancelEval()
	if err != nil || removed < 2 {
		t.Fatalf("removing the page's unload handlers: %d removed, %v", removed, err)
	}
	prompted := make(chan struct{}, 1)
	if err := chromedp.Listen(k, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			prompted <- struct{}{}
			go func() {
				ctx, cancel := context.WithTimeout(k, 10*time.Second)
				defer cancel()
				_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
			}()
		}
	}); err != nil {
		t.Fatal(err)
	}
	run(t, k, 30*time.Second, chromedp.Navigate("about:blank"))
	select {
	case <-prompted:
		t.Fatal("the page's beforeunload handler ran: not a crash")
	default:
	}
	k2 := k
	want := "online. kept 😀 too"
	openDoc(t, k2, rt, doc, tok)
	waitSyncedWithin(t, k2, want, 30*time.Second)
	ctx, cancelDoc := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelDoc()
	got, err := rt.Doc(ctx, doc, tok)
	if err != nil {
		t.Fatal(err)
	}
	if got.Text != want {
		t.Fatalf("server text = %q, want %q (each edit exactly once)", got.Text, want)
	}
	waitJS(t, k2, 10*time.Second, "storage emptied once acknowledged", `!Object.keys(localStorage).some((k) => k.startsWith('tandem.pending:'))`)
}
