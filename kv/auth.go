package kv

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
)

// codeUnauthorized is the error code of a request without credentials.
const codeUnauthorized = "unauthorized"

// Auth guards the HTTP API. With an Auth in HandlerConfig every endpoint
// but the health probes (/healthz, /readyz) requires a request that proves
// one of the configured credentials: a bearer token ("Authorization:
// Bearer <token>"), or a client certificate that the TLS server verified
// against its client CA. A request without them gets 401 {"code":
// "unauthorized"} and nothing else: the probes stay open so that
// Kubernetes and load balancers need no secret.
type Auth struct {
	// Token, if set, is the bearer token that authorises a request. It is
	// compared in constant time and never logged.
	Token string
	// ClientCert, if true, authorises a request whose TLS connection
	// presented a client certificate verified by the server (the TLS
	// server's ClientCAs and ClientAuth decide what is verified).
	ClientCert bool
}

// validate rejects an Auth that would authorise nothing or everything.
func (a *Auth) validate() error {
	if a.Token == "" && !a.ClientCert {
		return errors.New("kv: Auth needs a Token or ClientCert (a nil Auth leaves the API open)")
	}
	if strings.TrimSpace(a.Token) != a.Token || strings.ContainsAny(a.Token, "\r\n") {
		return errors.New("kv: Auth.Token must not contain whitespace at its ends or line breaks")
	}
	return nil
}

// authorised reports whether r proves a configured credential.
func (a *Auth) authorised(r *http.Request) bool {
	if a.ClientCert && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return true
	}
	if a.Token == "" {
		return false
	}
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	// Hash both sides so that the comparison's time depends on neither
	// the token's length nor its content.
	want, got := sha256.Sum256([]byte(a.Token)), sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(want[:], got[:]) == 1
}

// refuse answers a request that is not authorised.
func (a *Auth) refuse(w http.ResponseWriter) {
	if a.Token != "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="raftbus"`)
	}
	writeError(w, http.StatusUnauthorized, codeUnauthorized,
		"authentication required: a bearer token or a verified client certificate")
}

// isProbe reports whether path is a health probe, which Auth leaves open.
func isProbe(path string) bool { return path == "/healthz" || path == "/readyz" }

// Probe is a health check behind /healthz or /readyz: nil means healthy;
// an error's text becomes the short body of the 503 answer, so it must say
// why in one line and hold no secret.
type Probe func(ctx context.Context) error

// serveProbe answers a probe as Kubernetes expects: 200 "ok", or 503 with
// the reason, as plain text.
func serveProbe(p Probe) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := p(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(oneLine(err.Error()) + "\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	}
}

// oneLine keeps a probe's answer short: the first line, at most 256 bytes.
func oneLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 256 {
		s = s[:256]
	}
	return s
}
