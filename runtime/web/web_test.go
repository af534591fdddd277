package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestHandlerRoutes(t *testing.T) {
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)

	tests := []struct {
		name, method, path string
		wantStatus         int
		wantType           string // prefix of Content-Type; "" = don't care
		wantBody           string // substring; "" = don't care
		wantCache          string // exact Cache-Control; "" = don't care
	}{
		{"start page", "GET", "/", 200, "text/html", `id="open-form"`, "no-cache"},
		{"editor page", "GET", "/d/meeting-notes", 200, "text/html", `id="text"`, "no-cache"},
		{"editor page any id", "GET", "/d/A.b_c-9", 200, "text/html", `id="text"`, "no-cache"},
		{"editor page no id", "GET", "/d/", 404, "", "", ""},
		{"editor page nested", "GET", "/d/a/b", 404, "", "", ""},
		{"editor page dotdot", "GET", "/d/..", 404, "", "", ""},
		{"start module", "GET", "/static/js/start.js", 200, "text/javascript", "function open", "public, max-age=300, must-revalidate"},
		{"editor bundle", "GET", "/static/js/editor.js", 200, "text/javascript", "make web", ""},
		{"css", "GET", "/static/css/tandem.css", 200, "text/css", "", ""},
		{"icon", "GET", "/static/icon.svg", 200, "image/svg+xml", "<svg", ""},
		{"tests not served", "GET", "/static/js/client.test.mjs", 404, "", "", ""},
		{"test helpers not served", "GET", "/static/js/testkit.test-helper.mjs", 404, "", "", ""},
		{"html not under static", "GET", "/static/editor.html", 404, "", "", ""},
		{"missing asset", "GET", "/static/js/nope.js", 404, "", "", ""},
		{"unknown path", "GET", "/nope", 404, "", "", ""},
		{"post refused", "POST", "/", 405, "", "", ""},
		{"head ok", "HEAD", "/static/js/editor.js", 200, "text/javascript", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tc.method, tc.path, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d, want %d (body %q)", resp.StatusCode, tc.wantStatus, body)
			}
			if ct := resp.Header.Get("Content-Type"); tc.wantType != "" && !strings.HasPrefix(ct, tc.wantType) {
				t.Errorf("Content-Type = %q, want prefix %q", ct, tc.wantType)
			}
			if tc.wantBody != "" && !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("body does not contain %q", tc.wantBody)
			}
			if cc := resp.Header.Get("Cache-Control"); tc.wantCache != "" && cc != tc.wantCache {
				t.Errorf("Cache-Control = %q, want %q", cc, tc.wantCache)
			}
			if tc.wantStatus == 200 && !strings.HasPrefix(tc.path, "/d/") && resp.Header.Get("ETag") == "" {
				t.Error("missing ETag")
			}
		})
	}
}

func TestConditionalGet(t *testing.T) {
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)

	resp, err := http.Get(srv.URL + "/static/js/editor.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on first response")
	}

	req, _ := http.NewRequest("GET", srv.URL+"/static/js/editor.js", nil)
	req.Header.Set("If-None-Match", etag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("conditional GET status = %d, want 304", resp.StatusCode)
	}
}

// Every page must be loadable under its own Content-Security-Policy: no
// inline scripts or styles, which the policy would block silently.
func TestPagesHaveNoInlineCode(t *testing.T) {
	for _, page := range []string{"static/index.html", "static/editor.html"} {
		b, err := staticFS.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, bad := range []string{"<script>", "<style", " style=", "onclick=", "oninput="} {
			if strings.Contains(s, bad) {
				t.Errorf("%s contains inline code %q, which the CSP blocks", page, bad)
			}
		}
	}
}

// The editor page allows CodeMirror's <style> element by a nonce that is
// new in every response and handed to the script in a meta tag; scripts
// stay same-origin only.
func TestEditorPageStyleNonce(t *testing.T) {
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)
	seen := map[string]bool{}
	for i := 0; i < 2; i++ {
		resp, err := http.Get(srv.URL + "/d/notes")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		m := regexp.MustCompile(`style-src 'self' 'nonce-([A-Za-z0-9+/=]{24})';`).FindStringSubmatch(csp)
		if m == nil {
			t.Fatalf("CSP %q has no style nonce", csp)
		}
		if !strings.Contains(csp, "script-src 'self';") {
			t.Errorf("CSP %q: scripts must stay same-origin only", csp)
		}
		if !strings.Contains(string(body), `<meta name="tandem-style-nonce" content="`+m[1]+`">`) {
			t.Errorf("page does not carry its nonce %q", m[1])
		}
		if strings.Contains(string(body), nonceMark) {
			t.Error("placeholder left in the page")
		}
		if seen[m[1]] {
			t.Errorf("nonce %q repeated", m[1])
		}
		seen[m[1]] = true
	}
}

// A bad document name gets a page that says why and links back home, with
// status 404 (and 400 for a bad name typed into the start form).
func TestBadDocumentNamePage(t *testing.T) {
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)

	tests := []struct {
		name, path string
		wantStatus int
		wantBody   []string
	}{
		{"space", "/d/has%20space", 404, []string{`id="error-reason"`, "no spaces", `<code id="error-name">has space</code>`}},
		{"dotdot", "/d/..", 404, []string{"no spaces"}},
		{"nested", "/d/a/b", 404, []string{"cannot contain a slash"}},
		{"empty", "/d/", 404, []string{"A document name is needed"}},
		{"too long", "/d/" + strings.Repeat("a", 129), 404, []string{"at most 128"}},
		{"markup escaped", "/d/%3Cscript%3Ealert(1)%3C%2Fscript%3E", 404, []string{"&lt;script&gt;alert(1)&lt;/script&gt;"}},
		{"form bad name", "/new?doc=a%2Fb", 400, []string{"cannot contain a slash"}},
		{"form empty", "/new?doc=", 400, []string{"A document name is needed"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
				t.Errorf("Content-Type = %q, want text/html", ct)
			}
			for _, want := range append(tc.wantBody, `href="/"`) {
				if !strings.Contains(string(body), want) {
					t.Errorf("body does not contain %q:\n%s", want, body)
				}
			}
			if strings.Contains(string(body), "<script>") {
				t.Errorf("body contains unescaped markup:\n%s", body)
			}
		})
	}
}

// The start form works without JavaScript: its action redirects to the
// document with 303.
func TestStartFormRedirects(t *testing.T) {
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	page, err := staticFS.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), `action="/new" method="get"`) {
		t.Fatal(`start form does not submit to /new`)
	}
	tests := []struct{ query, want string }{
		{"doc=meeting-notes", "/d/meeting-notes"},
		{"doc=++meeting+notes++", "/d/meeting-notes"},
		{"doc=A.b_c-9", "/d/A.b_c-9"},
	}
	for _, tc := range tests {
		resp, err := noFollow.Get(srv.URL + "/new?" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Errorf("%s: status = %d, want 303", tc.query, resp.StatusCode)
		}
		if loc := resp.Header.Get("Location"); loc != tc.want {
			t.Errorf("%s: Location = %q, want %q", tc.query, loc, tc.want)
		}
	}
}
