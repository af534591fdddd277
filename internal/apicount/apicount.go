// Package apicount classifies and counts the requests a Kubernetes client
// sends, by verb and resource, with a wrapping http.RoundTripper. The
// operator exports the counts as a metric, and its tests and benchmark use
// them to prove that a converged cluster costs no writes.
package apicount

import (
	"maps"
	"net/http"
	"strings"
	"sync"
)

// Request is what one API request does.
type Request struct {
	// Verb is the Kubernetes verb: get, list, watch, create, update,
	// patch, apply (a server-side apply patch), delete, deletecollection;
	// for a path outside /api and /apis, the lower-cased HTTP method.
	Verb string
	// Group is the API group; empty for the core group.
	Group string
	// Resource is the resource (deployments), or the path for a
	// non-resource request (/version).
	Resource string
	// Subresource is status, scale and so on; empty for the object.
	Subresource string
	// Namespace is empty for cluster-scoped resources and for lists and
	// watches across all namespaces.
	Namespace string
}

// Write says whether the request asks to change something.
func (r Request) Write() bool {
	switch r.Verb {
	case "create", "update", "patch", "apply", "delete", "deletecollection":
		return true
	}
	return false
}

// Classify reads the verb and resource of a request to the apiserver.
func Classify(req *http.Request) Request {
	path := strings.Trim(req.URL.Path, "/")
	parts := strings.Split(path, "/")
	var r Request
	var rest []string
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		rest = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		r.Group, rest = parts[1], parts[3:]
	default:
		return Request{Verb: strings.ToLower(req.Method), Resource: "/" + path}
	}
	watch := req.URL.Query().Get("watch") == "true" || req.URL.Query().Get("watch") == "1"
	if len(rest) > 0 && rest[0] == "watch" {
		watch, rest = true, rest[1:]
	}
	if len(rest) >= 3 && rest[0] == "namespaces" {
		r.Namespace, rest = rest[1], rest[2:]
	}
	var name string
	if len(rest) > 0 {
		r.Resource = rest[0]
	}
	if len(rest) > 1 {
		name = rest[1]
	}
	if len(rest) > 2 {
		r.Subresource = rest[2]
	}
	if r.Resource == "namespaces" && name != "" {
		// The namespace object itself: /api/v1/namespaces/ns.
		r.Namespace = ""
	}
	switch req.Method {
	case http.MethodGet:
		switch {
		case watch:
			r.Verb = "watch"
		case name == "":
			r.Verb = "list"
		default:
			r.Verb = "get"
		}
	case http.MethodPost:
		r.Verb = "create"
	case http.MethodPut:
		r.Verb = "update"
	case http.MethodPatch:
		r.Verb = "patch"
		if strings.HasPrefix(req.Header.Get("Content-Type"), "application/apply-patch") {
			r.Verb = "apply"
		}
	case http.MethodDelete:
		r.Verb = "delete"
		if name == "" {
			r.Verb = "deletecollection"
		}
	default:
		r.Verb = strings.ToLower(req.Method)
	}
	return r
}

// Wrap returns a RoundTripper that calls observe with every request before
// sending it on. It fits rest.Config.Wrap.
func Wrap(observe func(Request)) func(http.RoundTripper) http.RoundTripper {
	return func(next http.RoundTripper) http.RoundTripper {
		return roundTripper{next: next, observe: observe}
	}
}

type roundTripper struct {
	next    http.RoundTripper
	observe func(Request)
}

func (t roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	t.observe(Classify(req))
	return t.next.RoundTrip(req)
}

// Counter counts requests; the zero value is ready to use.
type Counter struct {
	mu     sync.Mutex
	counts map[Request]int
}

// Observe counts one request; pass it to Wrap.
func (c *Counter) Observe(r Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[Request]int{}
	}
	c.counts[r]++
}

// Snapshot returns a copy of the counts so far.
func (c *Counter) Snapshot() map[Request]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.counts)
}

// Sum adds up the counts of the requests keep accepts (all when nil).
func Sum(counts map[Request]int, keep func(Request) bool) int {
	n := 0
	for r, c := range counts {
		if keep == nil || keep(r) {
			n += c
		}
	}
	return n
}
