package kv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/raftbus/raftbus/node"
)

// Error codes of the HTTP API, the "code" field of every error body.
const (
	codeBadRequest       = "bad_request"
	codeBadKey           = "bad_key"
	codeNotFound         = "not_found"
	codeMethodNotAllowed = "method_not_allowed"
	codeTooLarge         = "too_large"
	codeNoLeader         = "no_leader"
	codeProposalDropped  = "proposal_dropped"
	codeStopped          = "stopped"
	codeTimeout          = "timeout"
	codeInternal         = "internal"
)

// retryAfterSeconds is the Retry-After of transient failures: an election
// takes about an election timeout, so one second is a polite first back-off.
const retryAfterSeconds = "1"

type errorResponse struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// fail answers a request whose Propose or ReadIndex failed; logAttrs are
// added to its log record (which shard failed).
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error, logAttrs ...any) {
	status, code, retry := classify(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		// Internal details go to the log, not to the client.
		h.log.Error("request failed", append([]any{"method", r.Method, "path", r.URL.Path, "err", err}, logAttrs...)...)
		msg = "internal error"
	} else {
		h.log.Debug("request failed", append([]any{"method", r.Method, "path", r.URL.Path, "code", code, "err", err}, logAttrs...)...)
	}
	if retry {
		w.Header().Set("Retry-After", retryAfterSeconds)
	}
	writeError(w, status, code, msg)
}

// classify maps an error of the node (or of the request context) to an
// HTTP status, an error code and whether the client should retry later.
func classify(err error) (status int, code string, retry bool) {
	switch {
	case errors.Is(err, node.ErrNoLeader):
		return http.StatusServiceUnavailable, codeNoLeader, true
	case errors.Is(err, node.ErrProposalDropped):
		return http.StatusServiceUnavailable, codeProposalDropped, true
	case errors.Is(err, node.ErrStopped), errors.Is(err, node.ErrRemoved):
		return http.StatusServiceUnavailable, codeStopped, false
	case errors.Is(err, node.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, codeTooLarge, false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// A write that timed out may still commit: the outcome is unknown.
		return http.StatusGatewayTimeout, codeTimeout, false
	default:
		return http.StatusInternalServerError, codeInternal, false
	}
}

// methodNotAllowed answers with 405 and the methods the path supports;
// ServeMux's own 405 has a text body.
func methodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, codeMethodNotAllowed,
			"method "+r.Method+" not allowed; allowed: "+allow)
	})
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorResponse{Error: msg, Code: code})
}

// writeJSON writes v with status. It encodes before writing the header so
// that a value that cannot be encoded becomes a 500, not a truncated 200.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		buf.Reset()
		status = http.StatusInternalServerError
		_ = json.NewEncoder(&buf).Encode(errorResponse{Error: "encoding the response: " + err.Error(), Code: codeInternal})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes()) // the client may be gone; nothing to do about it
}
