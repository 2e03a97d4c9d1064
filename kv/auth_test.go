package kv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Issue 11: the HTTP API had no authentication. With Auth, everything but
// the probes needs the token or a verified client certificate.
func TestAuthGuardsAllButProbes(t *testing.T) {
	h := newTestHandler(t, HandlerConfig{
		Auth:    &Auth{Token: "tok", ClientCert: true},
		Status:  func() any { return map[string]string{"ok": "yes"} },
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}),
		Healthz: func(context.Context) error { return nil },
		Readyz:  func(context.Context) error { return errors.New("no leader\nsecond line") },
	})
	call := func(method, target string, header ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, target, strings.NewReader("v"))
		for i := 0; i+1 < len(header); i += 2 {
			r.Header.Set(header[i], header[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for _, tc := range []struct{ method, target string }{
		{"PUT", "/kv/a"}, {"DELETE", "/kv/a"}, {"GET", "/kv/a"}, {"GET", "/kv"}, {"GET", "/status"}, {"GET", "/metrics"}, {"GET", "/nope"},
	} {
		if w := call(tc.method, tc.target); w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s without credentials: %d", tc.method, tc.target, w.Code)
		}
		for _, bad := range []string{"Bearer tokk", "Bearer to", "Basic tok", "tok", "Bearer "} {
			if w := call(tc.method, tc.target, "Authorization", bad); w.Code != http.StatusUnauthorized {
				t.Errorf("%s %s with %q: %d", tc.method, tc.target, bad, w.Code)
			}
		}
	}
	if w := call("PUT", "/kv/a", "Authorization", "Bearer tok"); w.Code != http.StatusOK {
		t.Errorf("PUT with the token: %d %s", w.Code, w.Body)
	}
	if w := call("GET", "/status", "Authorization", "bearer tok"); w.Code != http.StatusOK {
		t.Errorf("GET /status with the token (lower-case scheme): %d", w.Code)
	}
	if w := call("GET", "/healthz"); w.Code != http.StatusOK || w.Body.String() != "ok\n" {
		t.Errorf("/healthz without credentials: %d %q", w.Code, w.Body)
	}
	if w := call("GET", "/readyz"); w.Code != http.StatusServiceUnavailable || w.Body.String() != "no leader\n" ||
		!strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		t.Errorf("/readyz: %d %q, want 503 and the first line of the reason", w.Code, w.Body)
	}

	// A connection whose client certificate the TLS server verified.
	r := httptest.NewRequest("GET", "/kv/a", nil)
	r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Errorf("GET with a verified client certificate: %d %s", w.Code, w.Body)
	}
	// A TLS connection without a verified certificate is not enough.
	r = httptest.NewRequest("GET", "/kv/a", nil)
	r.TLS = &tls.ConnectionState{}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusUnauthorized {
		t.Errorf("GET over TLS without a client certificate: %d", w.Code)
	}
}

func TestAuthValidate(t *testing.T) {
	for _, a := range []*Auth{{}, {Token: " tok"}, {Token: "a\nb"}} {
		if _, err := NewHandler(HandlerConfig{Store: NewStore(), Cluster: errCluster{}, Auth: a}); err == nil {
			t.Errorf("Auth %+v accepted", *a)
		}
	}
}
