package apicount

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		method, url, contentType string
		want                     Request
	}{
		{"GET", "/api/v1/namespaces/a/secrets/s", "", Request{Verb: "get", Resource: "secrets", Namespace: "a"}},
		{"GET", "/api/v1/namespaces/a/secrets", "", Request{Verb: "list", Resource: "secrets", Namespace: "a"}},
		{"GET", "/api/v1/secrets?labelSelector=x", "", Request{Verb: "list", Resource: "secrets"}},
		{"GET", "/api/v1/secrets?watch=true&resourceVersion=5", "", Request{Verb: "watch", Resource: "secrets"}},
		{"GET", "/api/v1/watch/namespaces/a/pods", "", Request{Verb: "watch", Resource: "pods", Namespace: "a"}},
		{"GET", "/api/v1/namespaces/a", "", Request{Verb: "get", Resource: "namespaces"}},
		{"POST", "/api/v1/namespaces", "", Request{Verb: "create", Resource: "namespaces"}},
		{"PATCH", "/apis/apps/v1/namespaces/a/deployments/d?fieldManager=m&force=true", "application/apply-patch+yaml",
			Request{Verb: "apply", Group: "apps", Resource: "deployments", Namespace: "a"}},
		{"PATCH", "/apis/collab.tandem.dev/v1alpha1/namespaces/a/collabclusters/c/status", "application/merge-patch+json",
			Request{Verb: "patch", Group: "collab.tandem.dev", Resource: "collabclusters", Subresource: "status", Namespace: "a"}},
		{"PUT", "/api/v1/namespaces/a/secrets/s", "application/json", Request{Verb: "update", Resource: "secrets", Namespace: "a"}},
		{"POST", "/apis/events.k8s.io/v1/namespaces/a/events", "application/json",
			Request{Verb: "create", Group: "events.k8s.io", Resource: "events", Namespace: "a"}},
		{"DELETE", "/apis/policy/v1/namespaces/a/poddisruptionbudgets/p", "", Request{Verb: "delete", Group: "policy", Resource: "poddisruptionbudgets", Namespace: "a"}},
		{"DELETE", "/api/v1/namespaces/a/pods", "", Request{Verb: "deletecollection", Resource: "pods", Namespace: "a"}},
		{"POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "application/json",
			Request{Verb: "create", Group: "authorization.k8s.io", Resource: "selfsubjectaccessreviews"}},
		{"GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.y", "",
			Request{Verb: "get", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"}},
		{"GET", "/apis", "", Request{Verb: "get", Resource: "/apis"}},
		{"GET", "/version", "", Request{Verb: "get", Resource: "/version"}},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.url, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.url, nil)
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			if got := Classify(req); got != tc.want {
				t.Errorf("Classify = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestWrite(t *testing.T) {
	for verb, want := range map[string]bool{"get": false, "list": false, "watch": false, "create": true,
		"update": true, "patch": true, "apply": true, "delete": true, "deletecollection": true} {
		if got := (Request{Verb: verb}).Write(); got != want {
			t.Errorf("%s: Write = %v, want %v", verb, got, want)
		}
	}
}

func TestCounterCountsThroughWrap(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	var c Counter
	client := &http.Client{Transport: Wrap(c.Observe)(http.DefaultTransport)}
	for _, m := range []string{"GET", "POST", "POST"} {
		req, err := http.NewRequest(m, srv.URL+"/api/v1/namespaces/a/configmaps", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	counts := c.Snapshot()
	if got := Sum(counts, Request.Write); got != 2 {
		t.Errorf("writes %d, want 2 (%v)", got, counts)
	}
	if got := Sum(counts, nil); got != 3 {
		t.Errorf("requests %d, want 3 (%v)", got, counts)
	}
}
