package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tandem-dev/tandem/runtime/auth"
	"github.com/tandem-dev/tandem/runtime/doc"
	"github.com/tandem-dev/tandem/runtime/protocol"
	"github.com/tandem-dev/tandem/runtime/store"
)

// Listing pages: GET /v1/docs returns at most limit documents (default
// DefaultListLimit, at most MaxListLimit).
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// authorizeAdmin authenticates an admin API request; docID, when not
// empty, must be granted by the token's patterns. It writes the error
// response and returns false when refused.
func (s *Server) authorizeAdmin(w http.ResponseWriter, r *http.Request, docID string) (auth.Admin, bool) {
	if docID != "" && !ValidDocID(docID) {
		s.writeError(w, http.StatusBadRequest, protocol.CodeBadMessage, "invalid document id")
		return auth.Admin{}, false
	}
	aa, ok := s.opts.Auth.(auth.AdminAuthenticator)
	if !ok {
		s.writeError(w, http.StatusForbidden, protocol.CodeForbidden,
			"the admin API needs token authentication (--jwt-key); it is off in anonymous mode")
		return auth.Admin{}, false
	}
	adm, err := aa.AuthenticateAdmin(bearer(r))
	if err != nil {
		var ae *auth.Error
		if errors.As(err, &ae) && ae.Code == auth.CodeForbidden {
			s.writeError(w, http.StatusForbidden, protocol.CodeForbidden, ae.Error())
		} else {
			s.writeError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, err.Error())
		}
		return auth.Admin{}, false
	}
	if docID != "" && !adm.Allows(docID) {
		s.writeError(w, http.StatusForbidden, protocol.CodeForbidden, fmt.Sprintf("token does not grant document %q", docID))
		return auth.Admin{}, false
	}
	return adm, true
}

// archive returns the durable store's archive or answers 501.
func (s *Server) archive(w http.ResponseWriter) store.Archive {
	a := s.opts.Manager.Archive()
	if a == nil {
		s.writeError(w, http.StatusNotImplemented, protocol.CodeUnavailable, "this runtime has no durable store with an archive")
	}
	return a
}

// listResponse is the answer of GET /v1/docs.
type listResponse struct {
	Documents []store.DocInfo `json:"documents"`
	// Next is the cursor of the next page; empty on the last one.
	Next string `json:"next,omitempty"`
}

func (s *Server) serveList(w http.ResponseWriter, r *http.Request) {
	adm, ok := s.authorizeAdmin(w, r, "")
	if !ok {
		return
	}
	q := r.URL.Query()
	prefix, cursor := q.Get("prefix"), q.Get("cursor")
	limit := DefaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListLimit {
			s.writeError(w, http.StatusBadRequest, protocol.CodeBadMessage, fmt.Sprintf("limit must be between 1 and %d", MaxListLimit))
			return
		}
		limit = n
	}
	a := s.archive(w)
	if a == nil {
		return
	}
	// Documents the token does not grant are skipped; a page is filled
	// from further rows, reading at most a few pages' worth per request.
	out := listResponse{Documents: []store.DocInfo{}}
	after := cursor
	for range 10 {
		docs, err := a.List(r.Context(), prefix, after, limit)
		if err != nil {
			s.log.Warn("list documents", "err", err)
			s.writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "listing unavailable, retry")
			return
		}
		for _, d := range docs {
			after = d.ID
			if adm.Allows(d.ID) {
				out.Documents = append(out.Documents, d)
				if len(out.Documents) == limit {
					break
				}
			}
		}
		if len(docs) < limit {
			after = "" // the store has no more
			break
		}
		if len(out.Documents) == limit {
			break
		}
	}
	out.Next = after
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) serveDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("docId")
	adm, ok := s.authorizeAdmin(w, r, id)
	if !ok {
		return
	}
	// Finish even if the client goes away: a half-done delete is retried
	// by calling again, but there is no reason to leave one.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), time.Minute)
	defer cancel()
	if err := s.opts.Manager.Delete(ctx, id); err != nil {
		if errors.Is(err, doc.ErrNotSupported) {
			s.writeError(w, http.StatusNotImplemented, protocol.CodeUnavailable, err.Error())
			return
		}
		s.log.Warn("delete document", "doc", id, "err", err)
		s.writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "delete failed, retry")
		return
	}
	s.log.Info("document deleted", "doc", id, "by", adm.User.ID)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// exportLine is one line of a history export.
type exportLine struct {
	Type   string     `json:"type"` // "snapshot" (first line) or "op"
	Rev    int64      `json:"rev"`
	Text   *string    `json:"text,omitempty"`
	Op     any        `json:"op,omitempty"`
	Client string     `json:"client,omitempty"`
	Seq    int64      `json:"seq,omitempty"`
	User   string     `json:"user,omitempty"`
	Time   *time.Time `json:"time,omitempty"`
}

func (s *Server) serveExport(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("docId")
	if _, ok := s.authorizeAdmin(w, r, id); !ok {
		return
	}
	switch format := r.URL.Query().Get("format"); format {
	case "", "text":
		s.exportText(w, r, id)
	case "history":
		s.exportHistory(w, r, id)
	default:
		s.writeError(w, http.StatusBadRequest, protocol.CodeBadMessage, `format must be "text" or "history"`)
	}
}

func (s *Server) exportText(w http.ResponseWriter, r *http.Request, id string) {
	head, err := s.opts.Manager.Head(r.Context(), id)
	if err != nil {
		s.log.Warn("export", "doc", id, "err", err)
		s.writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "document unavailable, retry")
		return
	}
	snap, ok := s.textAt(w, r, id, head)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", id+".txt"))
	w.Header().Set("X-Tandem-Rev", strconv.FormatInt(snap.Rev, 10))
	_, _ = w.Write([]byte(snap.Text))
}

// exportHistory writes the retained history as JSON lines: the snapshot it
// starts from, then every operation after it, up to the head when the
// export began.
func (s *Server) exportHistory(w http.ResponseWriter, r *http.Request, id string) {
	ctx := r.Context()
	head, err := s.opts.Manager.Head(ctx, id)
	if err != nil {
		s.log.Warn("export", "doc", id, "err", err)
		s.writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "document unavailable, retry")
		return
	}
	start := store.Snapshot{Doc: id}
	if a := s.opts.Manager.Archive(); a != nil {
		if start, err = a.Oldest(ctx, id); err != nil {
			s.log.Warn("export", "doc", id, "err", err)
			s.writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "document unavailable, retry")
			return
		}
	}
	if start.Rev > head {
		// The durable store is ahead of a log that was reset: start there.
		head = start.Rev
	}
	w.Header().Set("X-Tandem-Rev", strconv.FormatInt(head, 10))
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", id+".jsonl"))
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 32<<10)
	defer bw.Flush()
	enc := json.NewEncoder(bw)
	text := start.Text
	if err := enc.Encode(exportLine{Type: "snapshot", Rev: start.Rev, Text: &text}); err != nil {
		return
	}
	for last := start.Rev; last < head; {
		upto := min(head, last+historyChunk*4)
		chunk, err := s.opts.Manager.History(ctx, id, last, upto)
		if err != nil || len(chunk) == 0 {
			// Headers are sent: the stream ends early, and a last line
			// below X-Tandem-Rev tells the reader to try again.
			s.log.Warn("export history", "doc", id, "after", last, "err", err)
			return
		}
		for _, e := range chunk {
			t := e.Time
			if err := enc.Encode(exportLine{Type: "op", Rev: e.Rev, Op: e.Op, Client: e.Client, Seq: e.Seq, User: e.User, Time: &t}); err != nil {
				return
			}
			last = e.Rev
		}
	}
}

// textAt answers the text of id at rev, writing the error response and
// returning false when it cannot.
func (s *Server) textAt(w http.ResponseWriter, r *http.Request, id string, rev int64) (store.Snapshot, bool) {
	snap, err := s.opts.Manager.TextAt(r.Context(), id, rev)
	switch {
	case err == nil:
		return snap, true
	case errors.Is(err, doc.ErrNoRevision):
		s.writeError(w, http.StatusNotFound, protocol.CodeNotFound, fmt.Sprintf("revision %d is after the document's head", rev))
	case errors.Is(err, store.ErrCompacted):
		s.writeError(w, http.StatusGone, protocol.CodeGone, fmt.Sprintf("revision %d is older than the retained history", rev))
	default:
		s.log.Warn("text at revision", "doc", id, "rev", rev, "err", err)
		s.writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "document unavailable, retry")
	}
	return store.Snapshot{}, false
}
