package browser

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/tandem-dev/tandem/runtime/auth"
)

// editorContent is the editable element of the CodeMirror editor.
const editorContent = "#text .cm-content"

// focusAt focuses the editor and moves the caret with real key presses:
// Ctrl+Home for the start, Ctrl+End for the end.
func focusAt(t testing.TB, ctx context.Context, end bool) {
	t.Helper()
	focusAtNoCheck(t, ctx, end)
	want := "0"
	if end {
		want = "window.tandem.text().length"
	}
	waitJS(t, ctx, 5*time.Second, "caret moved by the key press",
		fmt.Sprintf(`window.tandem.selection().anchor === %s && window.tandem.selection().head === %s`, want, want))
}

// focusAtNoCheck is focusAt for a read-only field, where the caret may not move.
func focusAtNoCheck(t testing.TB, ctx context.Context, end bool) {
	t.Helper()
	key := kb.Home
	if end {
		key = kb.End
	}
	run(t, ctx, 10*time.Second,
		chromedp.Focus(editorContent),
		chromedp.KeyEvent(key, chromedp.KeyModifiers(chromedp.ModifierCtrl)),
	)
}

// typeText sends real key events for every character of s. A newline is
// the Enter key as a keyboard sends it (key down, key up): chromedp's
// encoding adds a "\r" char event, which a browser never sends after the
// editor has handled the key down.
func typeText(t testing.TB, ctx context.Context, s string) {
	t.Helper()
	var acts []chromedp.Action[chromedp.Void]
	for i, part := range strings.Split(s, "\n") {
		if i > 0 {
			acts = append(acts, pressEnter())
		}
		if part != "" {
			acts = append(acts, chromedp.KeyEvent(part))
		}
	}
	run(t, ctx, 20*time.Second, acts...)
}

// pressEnter is a key down and key up of Enter without a char event.
func pressEnter() chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeKeyDown, input.DispatchKeyEventTypeKeyUp} {
			p := input.DispatchKeyEventParams{Type: typ, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13}
			if _, err := cdp.Call(ctx, tg, input.DispatchKeyEvent, p); err != nil {
				return fmt.Errorf("dispatch Enter: %w", err)
			}
		}
		return nil
	})
}

func TestTwoBrowsersConverge(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	alice := rt.Token("alice", "Alice Liddell", auth.PermWrite, doc)
	bob := rt.Token("bob", "Bob Builder", auth.PermWrite, doc)

	a := newBrowser(t)
	b := newBrowser(t)
	openDoc(t, a, rt, doc, alice)
	openDoc(t, b, rt, doc, bob)

	// Alice writes a middle line; then both type in turns, Bob at the
	// start and Alice at the end, each with real key events.
	focusAt(t, a, true)
	typeText(t, a, "middle\n")
	waitSynced(t, a, "middle\n")
	waitSynced(t, b, "middle\n")
	focusAt(t, b, false)
	focusAt(t, a, true)

	chunksA := []string{"Alice one ", "😀 two ", "three"}
	chunksB := []string{"Bob 1 ", "😎 2 ", "3\n"}
	for i := range chunksA {
		typeText(t, a, chunksA[i])
		typeText(t, b, chunksB[i])
	}
	want := strings.Join(chunksB, "") + "middle\n" + strings.Join(chunksA, "")
	waitSynced(t, a, want)
	waitSynced(t, b, want)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := rt.Doc(ctx, doc, alice)
	if err != nil {
		t.Fatal(err)
	}
	if d.Text != want {
		t.Fatalf("server text = %q, want %q", d.Text, want)
	}
	revA := eval[int64](t, a, `window.tandem.client.rev`)
	if revA != d.Rev {
		t.Errorf("alice's page is at rev %d, server at %d", revA, d.Rev)
	}
	// The label follows the revision once the frame after the ack is painted.
	waitJS(t, a, 5*time.Second, fmt.Sprintf("revision label rev %d", d.Rev),
		fmt.Sprintf(`document.getElementById('revision').textContent === 'rev %d'`, d.Rev))

	// Each page shows the other's avatar and caret, with the right name,
	// and the caret is where the other person is typing.
	for _, tc := range []struct {
		name  string
		ctx   context.Context
		other string
		label string
	}{
		{"alice sees bob", a, "bob", "Bob Builder"},
		{"bob sees alice", b, "alice", "Alice Liddell"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			waitJS(t, tc.ctx, 10*time.Second, "the other's avatar",
				fmt.Sprintf(`!!document.querySelector('#people .avatar[data-user=%q]')`, tc.other))
			waitJS(t, tc.ctx, 10*time.Second, "the other's caret",
				fmt.Sprintf(`!!document.querySelector('#text .cm-remote-caret[data-user=%q]')`, tc.other))
			flag := eval[string](t, tc.ctx, fmt.Sprintf(`document.querySelector('#text .cm-remote-caret[data-user=%q] .cm-remote-flag').textContent`, tc.other))
			if flag != tc.label {
				t.Errorf("caret label = %q, want %q", flag, tc.label)
			}
			title := eval[string](t, tc.ctx, fmt.Sprintf(`document.querySelector('#people .avatar[data-user=%q]').title`, tc.other))
			if title != tc.label {
				t.Errorf("avatar title = %q, want %q", title, tc.label)
			}
		})
	}
	// Bob's caret is at the end of his text on the first lines, Alice's on
	// the last line: their vertical order on screen must say so.
	bobY := eval[float64](t, a, `document.querySelector('#text .cm-remote-caret[data-user="bob"]').getBoundingClientRect().top`)
	aliceY := eval[float64](t, b, `document.querySelector('#text .cm-remote-caret[data-user="alice"]').getBoundingClientRect().top`)
	if !(bobY < aliceY) {
		t.Errorf("bob's caret (y=%v on alice's page) should be above alice's (y=%v on bob's page)", bobY, aliceY)
	}

	// Select a word on Bob's side so the screenshot shows a remote selection.
	run(t, b, 10*time.Second, chromedp.KeyEvent(kb.ArrowLeft+kb.ArrowLeft+kb.ArrowLeft+kb.ArrowLeft, chromedp.KeyModifiers(chromedp.ModifierShift)))
	// Four characters back from the start of "middle": "2 3\n" is selected.
	waitJS(t, a, 10*time.Second, "bob's selection highlighted on alice's page",
		`[...document.querySelectorAll('#text .cm-remote-selection[data-user="bob"]')].map(e => e.textContent).join('') === '2 3'`)
	screenshot(t, a, "editor-two-people.png")
}

// screenshot saves the page as a PNG under the artifacts directory.
func screenshot(t testing.TB, ctx context.Context, name string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	shot, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	t.Logf("screenshot: %s", writeArtifact(t, name, shot))
}

func TestRestartWhileTyping(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	tok := rt.Token("carol", "Carol", auth.PermWrite, doc)

	c := newBrowser(t)
	openDoc(t, c, rt, doc, tok)
	focusAt(t, c, true)
	typeText(t, c, "before restart. ")
	waitSynced(t, c, "before restart. ")

	rt.Stop()
	waitJS(t, c, 10*time.Second, "page shows reconnecting",
		`['reconnecting','connecting'].includes(document.getElementById('status').dataset.state) && /Reconnect/.test(document.getElementById('status-text').textContent)`)
	// Keep typing while the server is down: the edits wait in the page.
	typeText(t, c, "typed while down 😀 ")
	waitJS(t, c, 5*time.Second, "unsent edits counted", `Number(document.getElementById('status').dataset.unsent) > 0`)
	label := eval[string](t, c, `document.getElementById('status-text').textContent`)
	if !strings.Contains(label, "unsent") {
		t.Errorf("status while down = %q, want it to count unsent edits", label)
	}
	screenshot(t, c, "editor-reconnecting.png")

	rt.Start()
	want := "before restart. typed while down 😀 "
	// The next attempt comes by the backoff schedule, up to 30 s apart.
	waitSyncedWithin(t, c, want, 45*time.Second)
	typeText(t, c, "after.")
	want += "after."
	waitSynced(t, c, want)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := rt.Doc(ctx, doc, tok)
	if err != nil {
		t.Fatal(err)
	}
	if d.Text != want {
		t.Fatalf("server text = %q, want %q (each edit exactly once)", d.Text, want)
	}
}

func TestReadOnlyToken(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	writer := rt.Token("wendy", "Wendy", auth.PermWrite, doc)
	reader := rt.Token("rita", "Rita", auth.PermRead, doc)

	w := newBrowser(t)
	r := newBrowser(t)
	openDoc(t, w, rt, doc, writer)
	focusAt(t, w, true)
	typeText(t, w, "shared text")
	waitSynced(t, w, "shared text")

	openDoc(t, r, rt, doc, reader)
	waitSynced(t, r, "shared text")
	mode := eval[string](t, r, `document.getElementById('mode').textContent`)
	if !strings.Contains(mode, "Read only") {
		t.Errorf("mode line = %q, want it to say read only", mode)
	}

	// The reader types: nothing changes, locally or on the server.
	focusAtNoCheck(t, r, true)
	typeText(t, r, "XYZ")
	run(t, r, 5*time.Second, chromedp.KeyEvent(kb.Backspace))
	if got := textOf(t, r); got != "shared text" {
		t.Errorf("reader's editor changed to %q", got)
	}

	// The writer's edits keep arriving live.
	typeText(t, w, " grows")
	waitSynced(t, w, "shared text grows")
	waitSynced(t, r, "shared text grows")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := rt.Doc(ctx, doc, writer)
	if err != nil {
		t.Fatal(err)
	}
	if d.Text != "shared text grows" {
		t.Fatalf("server text = %q, want %q", d.Text, "shared text grows")
	}
}

func TestAuthErrorIsShown(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	other := rt.Token("mallory", "Mallory", auth.PermWrite, "some-other-doc")

	tests := []struct {
		name, token, wantBanner string
	}{
		{"no token", "", "access token"},
		{"garbage token", "not-a-jwt", "access token"},
		{"token for another document", other, "does not grant"},
	}
	br := newBrowser(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := rt.URL() + "/d/" + doc
			if tc.token != "" {
				u += "#token=" + tc.token
			}
			// A fragment-only change does not reload the page: go via blank.
			run(t, br, 20*time.Second, chromedp.Navigate("about:blank"), chromedp.Navigate(u))
			waitJS(t, br, 15*time.Second, "failed state", `document.getElementById('status').dataset.state === 'failed'`)
			banner := eval[string](t, br, `document.getElementById('banner').hidden ? '' : document.getElementById('banner-text').textContent`)
			if !strings.Contains(banner, tc.wantBanner) {
				t.Errorf("banner = %q, want it to mention %q", banner, tc.wantBanner)
			}
		})
	}
}

func TestStartPageOpensDocument(t *testing.T) {
	rt := startRuntime(t)
	br := newBrowser(t)
	tok := rt.Token("sam", "Sam", auth.PermWrite, "team-*")
	run(t, br, 20*time.Second,
		chromedp.Navigate(rt.URL()+"/#token="+tok),
		chromedp.WaitVisible(chromedp.ID("doc-name")),
		chromedp.KeyEvent("team notes"),
		chromedp.KeyEvent(kb.Enter),
	)
	waitJS(t, br, 15*time.Second, "editor for team-notes", `location.pathname === '/d/team-notes' && document.getElementById('status').dataset.state === 'connected'`)
	title := eval[string](t, br, `document.getElementById('doc-title').textContent`)
	if title != "team-notes" {
		t.Errorf("title = %q, want team-notes", title)
	}
}

// Remote edits must not move the local caret or drop the local selection:
// Dana selects a word, Eve types before and after it, and the same word
// stays selected in Dana's editor, which keeps the focus.
func TestRemoteEditKeepsLocalSelection(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	dana := rt.Token("dana", "Dana", auth.PermWrite, doc)
	eve := rt.Token("eve", "Eve", auth.PermWrite, doc)

	d := newBrowser(t)
	e := newBrowser(t)
	openDoc(t, d, rt, doc, dana)
	openDoc(t, e, rt, doc, eve)

	focusAt(t, d, true)
	typeText(t, d, "alpha beta gamma")
	waitSynced(t, e, "alpha beta gamma")

	// Select "gamma" backwards with Shift+Left, then "beta " too.
	run(t, d, 10*time.Second, chromedp.KeyEvent(strings.Repeat(kb.ArrowLeft, 5), chromedp.KeyModifiers(chromedp.ModifierShift)))
	selected := `(() => { const t = window.tandem; const s = t.view.state.selection.main; return t.text().slice(s.from, s.to) + '|' + (s.head < s.anchor ? 'backward' : 'forward') + '|' + (document.activeElement === t.view.contentDOM); })()`
	if got := eval[string](t, d, selected); got != "gamma|backward|true" {
		t.Fatalf("selection before = %q", got)
	}

	focusAt(t, e, false)
	typeText(t, e, "😀 start ")
	focusAt(t, e, true)
	typeText(t, e, " end")
	want := "😀 start alpha beta gamma end"
	waitSynced(t, e, want)
	waitSynced(t, d, want)
	if got := eval[string](t, d, selected); got != "gamma|backward|true" {
		t.Errorf("selection after remote edits = %q, want gamma still selected backwards with focus", got)
	}

	// Typing replaces the selection where it now is.
	typeText(t, d, "delta")
	want = "😀 start alpha beta delta end"
	waitSynced(t, d, want)
	waitSynced(t, e, want)
}

// setOnline flips the browser's idea of the network (navigator.onLine and
// the online/offline events) the way a laptop losing Wi-Fi would.
func setOnline(t testing.TB, ctx context.Context, online bool) {
	t.Helper()
	run(t, ctx, 10*time.Second, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return fmt.Errorf("network.enable: %w", err)
		}
		_, err := cdp.Call(ctx, tg, network.OverrideNetworkState, network.OverrideNetworkStateParams{
			Offline: !online, Latency: 0, DownloadThroughput: -1, UploadThroughput: -1,
		})
		if err != nil {
			return fmt.Errorf("override network state: %w", err)
		}
		return nil
	}))
}

// While the browser is offline the page says so, counts the edits waiting,
// and makes no attempts; back online it reconnects at once and sends them.
func TestOfflineShowsUnsentEdits(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	tok := rt.Token("fay", "Fay", auth.PermWrite, doc)

	f := newBrowser(t)
	openDoc(t, f, rt, doc, tok)
	focusAt(t, f, true)
	typeText(t, f, "online. ")
	waitSynced(t, f, "online. ")

	setOnline(t, f, false)
	rt.Stop()
	waitJS(t, f, 10*time.Second, "offline state", `document.getElementById('status').dataset.state === 'offline'`)
	typeText(t, f, "abc")
	waitJS(t, f, 5*time.Second, "three unsent edits shown",
		`document.getElementById('status-text').textContent === 'Offline · 3 unsent edits'`)
	screenshot(t, f, "editor-offline.png")

	rt.Start()
	setOnline(t, f, true)
	want := "online. abc"
	waitSynced(t, f, want)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := rt.Doc(ctx, doc, tok)
	if err != nil {
		t.Fatal(err)
	}
	if d.Text != want {
		t.Fatalf("server text = %q, want %q", d.Text, want)
	}
}

// In anonymous mode the editor needs no token: each visitor gets a
// generated name, and two of them see each other.
func TestAnonymousMode(t *testing.T) {
	rt := startRuntimeAuth(t, "anonymous")
	doc := docID(t)
	a := newBrowser(t)
	b := newBrowser(t)
	openDoc(t, a, rt, doc, "")
	openDoc(t, b, rt, doc, "")
	focusAt(t, a, true)
	typeText(t, a, "no token needed")
	waitSynced(t, b, "no token needed")
	me := eval[string](t, a, `document.getElementById('me').textContent`)
	if !strings.HasPrefix(me, "You are ") || len(me) <= len("You are ") {
		t.Errorf("own name line = %q", me)
	}
	waitJS(t, a, 10*time.Second, "two avatars", `document.querySelectorAll('#people .avatar').length === 2`)

	// Five more visitors (tabs of b's browser): seven people do not fit,
	// so a shows five avatars and a "+2" chip.
	for i := 0; i < 5; i++ {
		tab, cancel := chromedp.NewContext(b)
		t.Cleanup(cancel)
		// The first run opens the tab; it must not carry a timeout.
		if err := chromedp.Do(tab); err != nil {
			t.Fatalf("open tab: %v", err)
		}
		openDoc(t, tab, rt, doc, "")
	}
	waitJS(t, a, 15*time.Second, "five avatars and +2",
		`document.querySelectorAll('#people .avatar:not(.more)').length === 5 && document.querySelector('#people .avatar.more')?.textContent === '+2'`)
}

// An edit over the server's operation size limit is sent as several
// operations within it (the welcome announces the limit): nothing is
// refused, and editing goes on.
func TestEditOverOpLimitIsSplit(t *testing.T) {
	rt := startRuntimeAuth(t, "jwt", "--max-op-bytes", "64")
	doc := docID(t)
	tok := rt.Token("gus", "Gus", auth.PermWrite, doc)
	g := newBrowser(t)
	openDoc(t, g, rt, doc, tok)
	focusAt(t, g, true)
	typeText(t, g, "small ")
	waitSynced(t, g, "small ")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d0, err := rt.Doc(ctx, doc, tok)
	if err != nil {
		t.Fatal(err)
	}

	// A paste of 200 characters: one edit, 64 bytes per operation at most.
	paste(t, g, `'x'.repeat(200)`)
	typeText(t, g, "ok")
	want := "small " + strings.Repeat("x", 200) + "ok"
	waitSynced(t, g, want)
	if shown := eval[bool](t, g, `!document.getElementById('banner').hidden`); shown {
		t.Errorf("banner shown: %q", eval[string](t, g, `document.getElementById('banner-text').textContent`))
	}
	d, err := rt.Doc(ctx, doc, tok)
	if err != nil {
		t.Fatal(err)
	}
	if d.Text != want {
		t.Fatalf("server text = %q, want %q", d.Text, want)
	}
	if d.Rev < d0.Rev+4 {
		t.Errorf("server at rev %d: the paste should have taken at least 4 operations", d.Rev)
	}
}
