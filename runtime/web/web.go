// Package web serves the collaborative editor: the start page, the editor
// page and its static assets (the start page's module, the editor's bundle built by
// `make web` from runtime/web/src and runtime/web/client, CSS and icons).
// Everything is embedded in the binary so the runtime ships as one file.
package web

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var staticFS embed.FS

// asset is one embedded file ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// site holds the assets read once at construction; it has no mutable state
// after that, so one Handler can serve any number of goroutines.
type site struct {
	assets  map[string]asset // key: path below static/, e.g. "js/client.js"
	modTime time.Time
}

// Handler returns the editor's HTTP handler. It serves
//
//	/            the start page (open or create a document by name)
//	/d/{docId}   the editor page (the same HTML for every document id; the
//	             page reads the id from its own URL)
//	/new?doc=n   the start form's action: 303 to /d/{n}, so the form works
//	             without JavaScript (an invalid name gets the error page)
//	/static/...  ES modules, CSS and icons
//
// A bad document name answers 404 with a page that says why and links back
// to the start page. Anything else below those prefixes is 404. The handler only answers GET
// and HEAD.
func Handler() http.Handler {
	s, err := newSite(staticFS)
	if err != nil {
		// The embedded tree is fixed at compile time and covered by tests; a
		// failure here is a build defect, not a runtime condition.
		panic(fmt.Sprintf("web: load embedded assets: %v", err))
	}
	return s
}

func newSite(fsys fs.FS) (*site, error) {
	s := &site{assets: map[string]asset{}}
	root, err := fs.Sub(fsys, "static")
	if err != nil {
		return nil, fmt.Errorf("open static dir: %w", err)
	}
	err = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		// Tests of the JS library live next to it but are not served.
		if strings.HasSuffix(p, ".test.mjs") || strings.HasSuffix(p, ".test-helper.mjs") {
			return nil
		}
		b, err := fs.ReadFile(root, p)
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		sum := sha256.Sum256(b)
		s.assets[p] = asset{
			body:        b,
			contentType: contentType(p),
			etag:        `"` + hex.EncodeToString(sum[:8]) + `"`,
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk static dir: %w", err)
	}
	for _, need := range []string{"index.html", "editor.html"} {
		if _, ok := s.assets[need]; !ok {
			return nil, fmt.Errorf("missing %s", need)
		}
	}
	return s, nil
}

// contentType maps the few extensions we ship; mime.TypeByExtension depends
// on the host's mime database, and a wrong type for an ES module makes the
// browser refuse to run it.
func contentType(p string) string {
	switch path.Ext(p) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js", ".mjs":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".json":
		return "application/json"
	case ".ico":
		return "image/x-icon"
	case ".png":
		return "image/png"
	}
	if t := mime.TypeByExtension(path.Ext(p)); t != "" {
		return t
	}
	return "application/octet-stream"
}

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	switch {
	case p == "/" || p == "/index.html":
		s.servePage(w, r, "index.html")
	case strings.HasPrefix(p, "/d/"):
		id := strings.TrimPrefix(p, "/d/")
		if reason := docIDProblem(id); reason != "" {
			serveError(w, r, http.StatusNotFound, id, reason)
			return
		}
		s.servePage(w, r, "editor.html")
	case p == "/new":
		// The start form without JavaScript: the same normalisation as
		// start.js (trimmed, inner spaces become dashes), then a redirect.
		name := strings.Join(strings.Fields(r.URL.Query().Get("doc")), "-")
		if reason := docIDProblem(name); reason != "" {
			serveError(w, r, http.StatusBadRequest, name, reason)
			return
		}
		// 303: the browser follows with a GET and shows /d/{name}; a name
		// that passed docIDProblem needs no escaping in a path.
		http.Redirect(w, r, "/d/"+name, http.StatusSeeOther)
	case strings.HasPrefix(p, "/static/"):
		name := strings.TrimPrefix(p, "/static/")
		if name == "" || strings.Contains(name, "..") || strings.HasSuffix(name, ".html") {
			http.NotFound(w, r)
			return
		}
		a, ok := s.assets[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		// Assets are not fingerprinted in their names, so let browsers keep
		// them briefly but revalidate with the ETag; a new binary changes the
		// ETag and the next load picks up the new code.
		w.Header().Set("Cache-Control", "public, max-age=300, must-revalidate")
		s.serveAsset(w, r, a)
	default:
		http.NotFound(w, r)
	}
}

// servePage serves an HTML page. Pages are never cached so that a new
// deployment's asset ETags are seen at once.
func (s *site) servePage(w http.ResponseWriter, r *http.Request, name string) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	a := s.assets[name]
	if !bytes.Contains(a.body, []byte(nonceMark)) {
		// Only our own scripts and styles; the WebSocket goes to the same host.
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'")
		s.serveAsset(w, r, a)
		return
	}
	// The editor (CodeMirror) writes its base styles into a <style> element
	// at run time. A fresh nonce per response allows exactly those, handed
	// to the script in a meta tag; scripts stay 'self' only. The body
	// differs per response, so it has no ETag.
	nonce, err := newNonce()
	if err != nil {
		http.Error(w, "cannot make a CSP nonce", http.StatusInternalServerError)
		return
	}
	h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self' 'nonce-"+nonce+"'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("Content-Type", a.contentType)
	body := bytes.ReplaceAll(a.body, []byte(nonceMark), []byte(nonce))
	h.Set("Content-Length", fmt.Sprint(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

// nonceMark in a page is replaced by the response's CSP style nonce.
const nonceMark = "__CSP_NONCE__"

func newNonce() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

func (s *site) serveAsset(w http.ResponseWriter, r *http.Request, a asset) {
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	// ServeContent handles If-None-Match (304), Range and HEAD for us.
	http.ServeContent(w, r, "", s.modTime, bytes.NewReader(a.body))
}

// errorPage is the friendly page for a bad document name. html/template
// escapes the name and reason, which come from the URL.
var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · Tandem</title>
<link rel="icon" href="/static/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/css/tandem.css">
</head>
<body class="start">
<main class="start-card">
  <h1 class="brand"><span class="brand-mark" aria-hidden="true"></span>Tandem</h1>
  <h2 id="error-title">{{.Title}}</h2>
  {{if .Name}}<p>The name <code id="error-name">{{.Name}}</code> cannot be used for a document.</p>{{end}}
  <p id="error-reason" class="error" role="alert">{{.Reason}}</p>
  <p><a id="error-home" href="/">Go to the start page</a> to open or create a document.</p>
</main>
</body>
</html>
`))

// serveError answers with the friendly error page and the given status.
func serveError(w http.ResponseWriter, r *http.Request, status int, name, reason string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'none'; frame-ancestors 'none'; base-uri 'none'")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	title := "No such document name"
	if status == http.StatusBadRequest {
		title = "That name cannot be used"
	}
	// Show at most a bounded part of what was asked for.
	if r := []rune(name); len(r) > 140 {
		name = string(r[:140]) + "…"
	}
	_ = errorPage.Execute(w, struct{ Title, Name, Reason string }{title, name, reason})
}

// docIDProblem explains why id is not a usable document name ("" when it
// is fine).
func docIDProblem(id string) string {
	switch {
	case id == "":
		return "A document name is needed: type one on the start page."
	case strings.Contains(id, "/"):
		return "A document name is one word: it cannot contain a slash."
	case len(id) > 128:
		return "A document name is at most 128 characters long."
	case !validDocID(id):
		return "A document name uses only letters, digits, dot, dash and underscore (no spaces), and is not \".\" or \"..\"."
	}
	return ""
}

// validDocID accepts the ids the editor can address: one path segment of
// letters, digits and -_. (at most 128 bytes). The server applies its own
// rules; this only keeps obviously broken URLs from rendering an editor.
func validDocID(id string) bool {
	if id == "" || len(id) > 128 || id == "." || id == ".." {
		return false
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '_' || c == '.':
		default:
			return false
		}
	}
	return true
}
