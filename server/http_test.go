package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/raftbus/raftbus/internal/testnats"
	"github.com/raftbus/raftbus/membership"
)

// TestProbes: /healthz says alive without a leader; /readyz says why a node
// cannot serve; a data directory that takes no write fails /healthz.
func TestProbes(t *testing.T) {
	c := newTestCluster(t, 2, 1, nil) // one of two voters: no quorum, no leader
	s := c.servers[0]
	if code, body := get(t, nil, s.URL()+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz without a leader: %d %q, want 200 ok", code, body)
	}
	if code, body := get(t, nil, s.URL()+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no leader") {
		t.Errorf("/readyz without a leader: %d %q, want 503 no leader", code, body)
	}
	// A directory where the probe file goes makes the write fail.
	if err := os.MkdirAll(filepath.Join(c.dirs[0], probeFile, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, nil, s.URL()+"/healthz"); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "storage not writable") ||
		strings.Count(body, "\n") != 1 {
		t.Errorf("/healthz on unwritable storage: %d %q, want 503 and one line", code, body)
	}
	if code, _ := do(t, nil, http.MethodPost, s.URL()+"/healthz", "x"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz: %d", code)
	}

	one := newTestCluster(t, 1, 1, nil)
	one.leader()
	testnats.Eventually(t, 5*time.Second, func() error {
		if code, body := get(t, nil, one.servers[0].URL()+"/readyz"); code != http.StatusOK {
			return &probeErr{code, body}
		}
		return nil
	})
}

type probeErr struct {
	code int
	body string
}

func (e *probeErr) Error() string { return e.body }

// TestStatusForOperators: /status and the NATS status answer carry what
// 'raftbus endpoint status' shows.
func TestStatusForOperators(t *testing.T) {
	c := newTestCluster(t, 1, 1, nil)
	s := c.leader()
	put(t, s, "a", "b")
	code, body := get(t, nil, s.URL()+"/status")
	if code != http.StatusOK {
		t.Fatalf("/status: %d %s", code, body)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "term", "leader", "commit_index", "applied_index", "storage_bytes", "snapshot_index",
		"transport_dropped", "transport_dropped_messages", "transport_dropped_envelopes"} {
		if _, ok := st[k]; !ok {
			t.Errorf("/status has no %q: %s", k, body)
		}
	}
	if st["storage_bytes"].(float64) <= 0 {
		t.Errorf("storage_bytes %v", st["storage_bytes"])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := membership.QueryStatus(ctx, testnats.Connect(t, c.ns), "raftbus", s.Identity().ClusterID, time.Second)
	if err != nil || len(got) != 1 {
		t.Fatalf("status query: %v %v", got, err)
	}
	if ns := got[0]; ns.Version == "" || ns.StorageBytes <= 0 || ns.Commit == 0 || len(ns.Voters) != 1 {
		t.Errorf("NATS status answer lacks operator fields: %+v", ns)
	}
}

// TestHTTPSecurity: with TLS, a client CA and a token, the probes stay
// open and everything else needs the token or a verified client
// certificate.
func TestHTTPSecurity(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	tokenFile := filepath.Join(dir, "token")
	const token = "s3cret-token"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newTestCluster(t, 1, 1, func(cfg *Config) {
		cfg.TLSCertFile, cfg.TLSKeyFile, cfg.ClientCAFile, cfg.HTTPTokenFile = pki.serverCert, pki.serverKey, pki.caFile, tokenFile
	})
	s := c.leader()
	if !strings.HasPrefix(s.URL(), "https://") {
		t.Fatalf("URL %s is not https", s.URL())
	}
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}}}
	withCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}}}}
	t.Cleanup(anon.CloseIdleConnections)
	t.Cleanup(withCert.CloseIdleConnections)

	if code, _ := get(t, anon, s.URL()+"/healthz"); code != http.StatusOK {
		t.Errorf("anonymous /healthz: %d", code)
	}
	if code, _ := get(t, anon, s.URL()+"/readyz"); code != http.StatusOK {
		t.Errorf("anonymous /readyz: %d", code)
	}
	for _, r := range [][2]string{{"GET", "/status"}, {"GET", "/metrics"}, {"PUT", "/kv/a"}, {"DELETE", "/kv/a"}, {"GET", "/kv/a"}, {"GET", "/kv"}} {
		code, body := do(t, anon, r[0], s.URL()+r[1], "v")
		if code != http.StatusUnauthorized || !strings.Contains(body, `"unauthorized"`) {
			t.Errorf("anonymous %s %s: %d %s, want 401", r[0], r[1], code, body)
		}
		if code, _ := do(t, anon, r[0], s.URL()+r[1], "v", "Authorization", "Bearer wrong"); code != http.StatusUnauthorized {
			t.Errorf("%s %s with a wrong token: %d, want 401", r[0], r[1], code)
		}
	}
	if code, body := do(t, anon, "PUT", s.URL()+"/kv/a", "v", "Authorization", "Bearer "+token); code != http.StatusOK {
		t.Errorf("PUT with the token: %d %s", code, body)
	}
	if code, body := get(t, anon, s.URL()+"/status", "Authorization", "bearer "+token); code != http.StatusOK {
		t.Errorf("/status with the token: %d %s", code, body)
	}
	if code, body := get(t, withCert, s.URL()+"/kv/a"); code != http.StatusOK || !strings.Contains(body, `"value":"v"`) {
		t.Errorf("GET with a client certificate: %d %s", code, body)
	}
	if code, body := do(t, withCert, "DELETE", s.URL()+"/kv/a", ""); code != http.StatusOK {
		t.Errorf("DELETE with a client certificate: %d %s", code, body)
	}
}

func TestHTTPSecurityConfigErrors(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	empty, long := filepath.Join(dir, "empty"), filepath.Join(dir, "two-words")
	_ = os.WriteFile(empty, []byte(" \n"), 0o600)
	_ = os.WriteFile(long, []byte("secret-one secret-two\n"), 0o600)
	c := newTestCluster(t, 1, 0, nil)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"cert without key", Config{TLSCertFile: pki.serverCert}, "needs its key"},
		{"client CA without TLS", Config{ClientCAFile: pki.caFile}, "needs TLS"},
		{"missing token file", Config{HTTPTokenFile: filepath.Join(dir, "nope")}, "token file"},
		{"empty token file", Config{HTTPTokenFile: empty}, "is empty"},
		{"token with spaces", Config{HTTPTokenFile: long}, "one token"},
		{"bad client CA", Config{TLSCertFile: pki.serverCert, TLSKeyFile: pki.serverKey, ClientCAFile: empty}, "no PEM certificate"},
		{"bad key", Config{TLSCertFile: pki.serverCert, TLSKeyFile: pki.caFile}, "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.DataDir, cfg.Conn, cfg.Bootstrap = c.dirs[0], testnats.Connect(t, c.ns), c.boot
			s, err := Start(cfg)
			if err == nil {
				s.Stop()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "secret-one") {
				t.Errorf("error %q, want it to say %q (and never the token)", err, tc.want)
			}
		})
	}
}

type testPKI struct {
	caFile, serverCert, serverKey string
	pool                          *x509.CertPool
	client                        tls.Certificate
}

// newTestPKI writes a CA, a server certificate for 127.0.0.1 and returns a
// client certificate, all signed by the CA.
func newTestPKI(t *testing.T, dir string) *testPKI {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := &testPKI{pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.caFile = write("ca.pem", "CERTIFICATE", caDER)
	sDER, sKey := issue(2, x509.ExtKeyUsageServerAuth)
	p.serverCert = write("server.pem", "CERTIFICATE", sDER)
	sKeyDER, _ := x509.MarshalECPrivateKey(sKey)
	p.serverKey = write("server-key.pem", "EC PRIVATE KEY", sKeyDER)
	cDER, cKey := issue(3, x509.ExtKeyUsageClientAuth)
	p.client = tls.Certificate{Certificate: [][]byte{cDER}, PrivateKey: cKey}
	return p
}
