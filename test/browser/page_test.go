package browser

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/tandem-dev/tandem/runtime/auth"
)

const textFocused = `!!window.tandem && document.activeElement === window.tandem.view.contentDOM`

// A freshly opened editor has the keyboard focus, and so has one that was
// reconnected with "Retry now" (the button vanishes with the state it
// belongs to, so focus would otherwise fall to the page body).
func TestFocusOnOpenAndRetry(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	tok := rt.Token("hal", "Hal", auth.PermWrite, doc)
	br := newBrowser(t)
	openDoc(t, br, rt, doc, tok)
	waitJS(t, br, 5*time.Second, "focus in the editor on open", textFocused)
	// Typing without clicking anywhere lands in the document.
	typeText(t, br, "hi")
	waitSynced(t, br, "hi")

	rt.Stop()
	// Click "Retry now" while the server is down (the button comes and
	// goes with each automatic attempt, so try a few times): the attempt
	// fails, and the focus is back in the text rather than on the body.
	clicked := false
	for i := 0; i < 5 && !clicked; i++ {
		waitJS(t, br, 15*time.Second, "Retry now offered", `!!document.querySelector('#status [data-action="retry"]')`)
		cctx, cancel := context.WithTimeout(br, 3*time.Second)
		_, err := chromedp.Run(cctx, chromedp.Click(`#status [data-action="retry"]`))
		cancel()
		clicked = err == nil
	}
	if !clicked {
		t.Fatal("could not click Retry now")
	}
	waitJS(t, br, 5*time.Second, "focus in the editor after Retry now (server down)", textFocused)
	rt.Start()
	waitJS(t, br, 45*time.Second, "reconnected", `document.getElementById('status').dataset.state === 'connected'`)
	waitJS(t, br, 5*time.Second, "focus in the editor after Retry now", textFocused)
	typeText(t, br, "!")
	waitSynced(t, br, "hi!")
}

// Leaving the page with unsent edits asks first; with everything sent it
// does not.
func TestBeforeUnloadWhileUnsent(t *testing.T) {
	rt := startRuntime(t)
	doc := docID(t)
	tok := rt.Token("ida", "Ida", auth.PermWrite, doc)
	br := newBrowser(t)
	openDoc(t, br, rt, doc, tok)
	focusAt(t, br, true)
	typeText(t, br, "sent")
	waitSynced(t, br, "sent")

	dialogs := make(chan *page.EventJavascriptDialogOpening, 4)
	if err := chromedp.Listen(br, func(ev any) {
		if d, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			select {
			case dialogs <- d:
			default:
			}
		}
	}); err != nil {
		t.Fatal(err)
	}

	setOnline(t, br, false)
	rt.Stop()
	waitJS(t, br, 10*time.Second, "offline state", `document.getElementById('status').dataset.state === 'offline'`)
	typeText(t, br, "abc")
	waitJS(t, br, 5*time.Second, "unsent edits", `window.tandem.client.unsentEdits() > 0`)

	// Reload from the page; the beforeunload dialog blocks it until the
	// dialog is answered, so do not wait for the evaluation.
	go func() {
		ctx, cancel := context.WithTimeout(br, 10*time.Second)
		defer cancel()
		_, _ = chromedp.Run(ctx, chromedp.Evaluate[bool](`(location.reload(), true)`))
	}()
	select {
	case d := <-dialogs:
		if d.Type != page.DialogTypeBeforeunload {
			t.Fatalf("dialog type = %q, want beforeunload", d.Type)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no beforeunload prompt while edits were unsent")
	}
	// Stay on the page: the unsent edits are still there.
	hctx, cancel := context.WithTimeout(br, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Call(hctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false}); err != nil {
		t.Fatalf("dismiss the prompt: %v", err)
	}
	if got := textOf(t, br); got != "sentabc" {
		t.Fatalf("text after staying = %q, want %q", got, "sentabc")
	}

	rt.Start()
	setOnline(t, br, true)
	waitSynced(t, br, "sentabc")
	run(t, br, 20*time.Second, chromedp.Reload())
	select {
	case d := <-dialogs:
		t.Fatalf("prompt %q with nothing unsent", d.Type)
	default:
	}
	waitJS(t, br, 20*time.Second, "reloaded and connected", `document.getElementById('status').dataset.state === 'connected' && !!window.tandem && window.tandem.text() === 'sentabc'`)
}

// In anonymous mode a browser keeps its name and colour across reloads, and
// the person can change the name; others see the chosen name as text.
func TestAnonymousIdentityIsStable(t *testing.T) {
	rt := startRuntimeAuth(t, "anonymous")
	doc := docID(t)
	a := newBrowser(t)
	openDoc(t, a, rt, doc, "")
	const who = `document.getElementById('me').textContent + ' ' + document.querySelector('#people .avatar.self').style.getPropertyValue('--c')`
	first := eval[string](t, a, who)
	if !strings.HasPrefix(first, "You are ") {
		t.Fatalf("own name line = %q", first)
	}
	for i := 0; i < 2; i++ {
		run(t, a, 20*time.Second, chromedp.Reload())
		waitJS(t, a, 20*time.Second, "reconnected after reload", `document.getElementById('status').dataset.state === 'connected' && !!document.querySelector('#people .avatar.self')`)
		if got := eval[string](t, a, who); got != first {
			t.Fatalf("after reload %d identity = %q, want %q", i+1, got, first)
		}
	}

	// Change the name through the page's prompt.
	const chosen = `<b>Zoë</b> Q`
	prompts := make(chan struct{}, 1)
	if err := chromedp.Listen(a, func(ev any) {
		if d, ok := ev.(*page.EventJavascriptDialogOpening); ok && d.Type == page.DialogTypePrompt {
			select {
			case prompts <- struct{}{}:
			default:
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	go func() {
		ctx, cancel := context.WithTimeout(a, 10*time.Second)
		defer cancel()
		_, _ = chromedp.Run(ctx, chromedp.Evaluate[bool](`(document.getElementById('rename').click(), true)`))
	}()
	select {
	case <-prompts:
	case <-time.After(10 * time.Second):
		t.Fatal("no prompt for the name")
	}
	hctx, cancel := context.WithTimeout(a, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Call(hctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true, PromptText: chosen}); err != nil {
		t.Fatalf("answer the prompt: %v", err)
	}
	waitJS(t, a, 15*time.Second, "new name shown", `document.getElementById('me').textContent === 'You are <b>Zoë</b> Q' && document.getElementById('status').dataset.state === 'connected'`)
	color := eval[string](t, a, `document.querySelector('#people .avatar.self').style.getPropertyValue('--c')`)
	if !strings.HasSuffix(first, " "+color) {
		t.Errorf("colour changed with the name: %q, was %q", color, first)
	}
	run(t, a, 20*time.Second, chromedp.Reload())
	waitJS(t, a, 20*time.Second, "new name kept after reload", `document.getElementById('status').dataset.state === 'connected' && document.getElementById('me').textContent === 'You are <b>Zoë</b> Q'`)

	// Another person sees the chosen name, as text.
	b := newBrowser(t)
	openDoc(t, b, rt, doc, "")
	waitJS(t, b, 15*time.Second, "other person sees the chosen name",
		`[...document.querySelectorAll('#people .avatar:not(.self)')].some(li => li.title === '<b>Zoë</b> Q') && !document.querySelector('#people b')`)
}
