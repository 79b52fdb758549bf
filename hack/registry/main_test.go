package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/digest"
)

// The pushed tag resolves, through imagegate's own resolver trusting the
// CA file, to the digest the program logged.
func TestThePushedTagResolvesToTheLoggedDigest(t *testing.T) {
	t.Parallel()
	cert, key, ca := testCertificate(t)
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-tls-cert-file", cert, "-tls-key-file", key,
			"-ca-file", ca, "-push", "team/app:1.0"}, pw)
		_ = pw.Close()
	}()
	var pushed struct{ Msg, Ref, Digest string }
	for sc := bufio.NewScanner(pr); pushed.Msg != "pushed" && sc.Scan(); {
		if err := json.Unmarshal(sc.Bytes(), &pushed); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if pushed.Msg != "pushed" || !strings.HasSuffix(pushed.Ref, "/team/app:1.0") {
		cancel()
		t.Fatalf("got %+v (exit: %v), want a pushed line for team/app:1.0", pushed, <-done)
	}
	res, err := digest.New(digest.Options{CAFile: ca, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	got, err := res.Resolve(t.Context(), pushed.Ref)
	if err != nil || got != pushed.Digest {
		t.Errorf("Resolve(%s) = %q, %v; want %q", pushed.Ref, got, err, pushed.Digest)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("after the context ended: got %v, want a clean exit", err)
	}
}

func TestAnAddressThatIsNotLoopbackIsRefused(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:5443", "[::]:5443", "192.168.1.1:5443", "localhost:5443", ":5443"} {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			err := run(t.Context(), []string{"-listen", addr}, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "loopback") {
				t.Errorf("got %v, want a refusal naming loopback", err)
			}
		})
	}
}

// testCertificate writes net/http/httptest's self-signed certificate for
// 127.0.0.1 and its key, and returns their paths and the CA file (the
// certificate itself).
func testCertificate(t *testing.T) (cert, key, ca string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	c := srv.TLS.Certificates[0]
	srv.Close()
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for name, block := range map[string]*pem.Block{cert: {Type: "CERTIFICATE", Bytes: c.Certificate[0]}, key: {Type: "PRIVATE KEY", Bytes: der}} {
		if err := os.WriteFile(name, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, cert
}
