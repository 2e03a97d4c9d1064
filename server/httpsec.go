package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/raftbus/raftbus/kv"
)

// maxTokenBytes bounds the token file: a token is a line, not a document.
const maxTokenBytes = 4096

// loadHTTPSecurity reads the HTTP API's TLS material and bearer token as
// Config names them. It returns a nil tls.Config for plain HTTP and a nil
// Auth for an open API.
func loadHTTPSecurity(cfg *Config) (*tls.Config, *kv.Auth, error) {
	var tc *tls.Config
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("server: HTTP TLS certificate %s and key %s: %w", cfg.TLSCertFile, cfg.TLSKeyFile, err)
		}
		tc = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	var auth *kv.Auth
	if cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("server: HTTP client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("server: HTTP client CA %s holds no PEM certificate", cfg.ClientCAFile)
		}
		tc.ClientCAs = pool
		// Verify a certificate when one is presented, but let clients
		// without one connect: the probes need no credentials, and the
		// rest is refused by kv.Auth.
		tc.ClientAuth = tls.VerifyClientCertIfGiven
		auth = &kv.Auth{ClientCert: true}
	}
	if cfg.HTTPTokenFile != "" {
		tok, err := readToken(cfg.HTTPTokenFile)
		if err != nil {
			return nil, nil, err
		}
		if auth == nil {
			auth = &kv.Auth{}
		}
		auth.Token = tok
	}
	return tc, auth, nil
}

// readToken reads a bearer token file. Errors name the file, never its
// content.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("server: HTTP token file: %w", err)
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("server: HTTP token file %s: %w", path, err)
	}
	if len(buf) > maxTokenBytes {
		return "", fmt.Errorf("server: HTTP token file %s is larger than %d bytes", path, maxTokenBytes)
	}
	tok := strings.TrimSpace(string(buf))
	switch {
	case tok == "":
		return "", fmt.Errorf("server: HTTP token file %s is empty", path)
	case strings.ContainsAny(tok, "\r\n\t "):
		return "", errors.New("server: HTTP token file " + path + " must hold one token on one line, without spaces")
	}
	return tok, nil
}

// warnExposure warns about an HTTP API that anyone who reaches it can
// write to, or whose token crosses the network in clear text.
func (s *Server) warnExposure(addr net.Addr, auth *kv.Auth) {
	if ta, ok := addr.(*net.TCPAddr); ok && ta.IP.IsLoopback() {
		return
	}
	switch {
	case auth == nil:
		s.log.Warn("the HTTP API is open to anyone who can reach it: it accepts writes without authentication; bind it to 127.0.0.1 or set --http-token-file / --listen-client-ca",
			"listen", addr.String())
	case auth.Token != "" && !s.tls:
		s.log.Warn("the HTTP bearer token travels in clear text: serve the API over TLS (--listen-tls-cert, --listen-tls-key)",
			"listen", addr.String())
	}
}
