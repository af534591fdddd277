package web

import (
	"io"
	"net/http"
	"net/http/httptest"
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
		{"client module", "GET", "/static/js/client.js", 200, "text/javascript", "export class Client", "public, max-age=300, must-revalidate"},
		{"editor module", "GET", "/static/js/editor.js", 200, "text/javascript", "import", ""},
		{"css", "GET", "/static/css/tandem.css", 200, "text/css", "", ""},
		{"icon", "GET", "/static/icon.svg", 200, "image/svg+xml", "<svg", ""},
		{"tests not served", "GET", "/static/js/client.test.mjs", 404, "", "", ""},
		{"test helpers not served", "GET", "/static/js/testkit.test-helper.mjs", 404, "", "", ""},
		{"html not under static", "GET", "/static/editor.html", 404, "", "", ""},
		{"missing asset", "GET", "/static/js/nope.js", 404, "", "", ""},
		{"unknown path", "GET", "/nope", 404, "", "", ""},
		{"post refused", "POST", "/", 405, "", "", ""},
		{"head ok", "HEAD", "/static/js/client.js", 200, "text/javascript", "", ""},
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
			if tc.wantStatus == 200 && resp.Header.Get("ETag") == "" {
				t.Error("missing ETag")
			}
		})
	}
}

func TestConditionalGet(t *testing.T) {
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)

	resp, err := http.Get(srv.URL + "/static/js/client.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on first response")
	}

	req, _ := http.NewRequest("GET", srv.URL+"/static/js/client.js", nil)
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
