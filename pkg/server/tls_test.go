package server_test

import (
	"crypto/tls"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imagegate/imagegate/pkg/certs"
	"github.com/imagegate/imagegate/pkg/server/servertest"
)

// liveness bounds every wait for the watcher; it is how long a broken
// watcher takes to fail the test, not a time anything is expected within.
const liveness = 60 * time.Second

// secretFixture serves from a Kubernetes-style Secret volume holding
// tls.crt, tls.key and, when clientCA is set, ca.crt.
func secretFixture(t *testing.T, clientCA *servertest.CA, edit func(*certs.Options)) (*fixture, *servertest.SecretVolume, map[string][]byte) {
	t.Helper()
	ca := servertest.NewCA(t, t.TempDir(), "serving")
	crt, key := ca.IssuePEM(t, "localhost", "localhost")
	content := map[string][]byte{"tls.crt": crt, "tls.key": key}
	if clientCA != nil {
		content["ca.crt"] = clientCA.CertPEM
	}
	vol := servertest.NewSecretVolume(t, t.TempDir(), content)
	f := newTLSFixture(t, func(o *certs.Options) {
		o.CertFile, o.KeyFile = vol.Path("tls.crt"), vol.Path("tls.key")
		if clientCA != nil {
			o.ClientCAFile = vol.Path("ca.crt")
		}
		if edit != nil {
			edit(o)
		}
	})
	f.ca = ca // the fixture's own pair is unused
	return f, vol, content
}

// handshake opens a new connection to addr, completes a TLS handshake and
// returns the serial number of the certificate the server presented.
func handshake(addr string, cfg *tls.Config) (*big.Int, error) {
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// waitFor waits until cond holds, re-checking after each certificate
// reload the server performs.
func waitFor(t *testing.T, f *fixture, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(liveness)
	for {
		reloaded := f.certs.Reloaded()
		if cond() {
			return
		}
		select {
		case <-reloaded:
		case <-deadline:
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

// TestRotationUnderHandshakes renews the serving certificate the way the
// kubelet updates a Secret volume (a new ..data directory swapped in by
// rename) while a client opens connection after connection. No handshake
// may fail, and the new certificate must be served without a restart.
func TestRotationUnderHandshakes(t *testing.T) {
	t.Parallel()
	f, vol, content := secretFixture(t, nil, nil)
	addr, _ := f.serve(t)
	old := f.certs.Certificate().Leaf.SerialNumber
	newCrt, newKey := f.ca.IssuePEM(t, "localhost", "localhost")

	const (
		maxHandshakes = 20000 // bounds the loop if the new certificate never shows
		keepGoing     = 100   // handshakes after the first with the new certificate
	)
	var failures atomic.Int64
	var handshakes, afterNew int
	sawOld, sawNew, stop := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		cfg := &tls.Config{RootCAs: f.ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
		var once, onceNew sync.Once
		for handshakes = 0; handshakes < maxHandshakes; handshakes++ {
			select {
			case <-stop:
				return
			default:
			}
			got, err := handshake(addr, cfg)
			if err != nil {
				failures.Add(1)
				t.Errorf("handshake %d failed during rotation: %v", handshakes, err)
				continue
			}
			switch {
			case got.Cmp(old) == 0:
				once.Do(func() { close(sawOld) })
			default:
				onceNew.Do(func() { close(sawNew) })
				if afterNew++; afterNew == keepGoing {
					return
				}
			}
		}
	})
	<-sawOld
	content["tls.crt"], content["tls.key"] = newCrt, newKey
	vol.Update(t, content)
	select {
	case <-sawNew:
	case <-time.After(liveness):
		t.Error("the renewed certificate was never served")
		close(stop)
	}
	wg.Wait()
	if got := f.certs.Certificate().Leaf.SerialNumber; got.Cmp(old) == 0 {
		t.Error("the server still holds the old certificate")
	}
	if err := testutil.GatherAndCompare(f.rec.Registry(), strings.NewReader(`
# HELP imagegate_certificate_reload_failures_total Changed certificate files that could not be used, by certificate; the previous certificate stays in use.
# TYPE imagegate_certificate_reload_failures_total counter
imagegate_certificate_reload_failures_total{certificate="client-ca"} 0
imagegate_certificate_reload_failures_total{certificate="serving"} 0
# HELP imagegate_certificate_reloads_total Certificate files re-read because they changed, by certificate (serving, client-ca), successful or not.
# TYPE imagegate_certificate_reloads_total counter
imagegate_certificate_reloads_total{certificate="client-ca"} 0
imagegate_certificate_reloads_total{certificate="serving"} 1
`), "imagegate_certificate_reloads_total", "imagegate_certificate_reload_failures_total"); err != nil {
		t.Error(err)
	}
	t.Logf("%d handshakes, %d with the new certificate, %d failed", handshakes, afterNew, failures.Load())
}

// A renewal that cannot be used is logged and counted, and the old
// certificate goes on being served until a good one arrives.
func TestBrokenRenewalKeepsServingTheOldCertificate(t *testing.T) {
	t.Parallel()
	f, vol, content := secretFixture(t, nil, nil)
	addr, _ := f.serve(t)
	cfg := &tls.Config{RootCAs: f.ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	old := f.certs.Certificate().Leaf.SerialNumber
	_, otherKey := f.ca.IssuePEM(t, "localhost", "localhost")
	content["tls.key"] = otherKey // does not match tls.crt
	vol.Update(t, content)
	failures := func() float64 {
		return sumCounter(t, f.rec.Registry(), "imagegate_certificate_reload_failures_total")
	}
	waitFor(t, f, "the broken renewal to be counted", func() bool { return failures() >= 1 })
	got, err := handshake(addr, cfg)
	if err != nil {
		t.Fatalf("handshake after a broken renewal: %v", err)
	}
	if got.Cmp(old) != 0 {
		t.Errorf("served serial %s after a broken renewal, want the old %s", got, old)
	}
	if !strings.Contains(f.logged(), "new serving certificate is not usable; keeping the previous one") {
		t.Errorf("the broken renewal was not logged: %s", f.logged())
	}
	crt, key := f.ca.IssuePEM(t, "localhost", "localhost")
	content["tls.crt"], content["tls.key"] = crt, key
	vol.Update(t, content)
	waitFor(t, f, "the good renewal", func() bool {
		got, err := handshake(addr, cfg)
		return err == nil && got.Cmp(old) != 0
	})
}

// clientResult says how a client fared against a server that requires
// client certificates.
func clientResult(addr string, cfg *tls.Config) error {
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	// In TLS 1.3 the client finishes its half of the handshake before the
	// server has checked its certificate; the refusal arrives as an alert
	// on the first read.
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(b), "HTTP/1.1 200 OK") {
		return &net.AddrError{Err: "unexpected answer " + string(b), Addr: addr}
	}
	return nil
}

// TestMutualTLSRefusesAtTheHandshake: with --client-ca-file and
// --allowed-client-names, a client without a certificate, with one from
// another CA, or with a name not on the list never gets an HTTP exchange.
func TestMutualTLSRefusesAtTheHandshake(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	apiserverCA := servertest.NewCA(t, dir, "apiserver")
	otherCA := servertest.NewCA(t, dir, "other")
	f, _, _ := secretFixture(t, apiserverCA, func(o *certs.Options) {
		o.AllowedClientNames = []string{"kube-apiserver", "apiserver.example.com"}
	})
	addr, _ := f.serve(t)
	tests := []struct {
		name string
		// certs is what the client presents.
		certs []tls.Certificate
		// wantErr is a substring of the client's error; empty means served.
		wantErr string
		// rejected says whether imagegate_client_auth_rejections_total counts it.
		rejected bool
	}{
		{name: "no client certificate", wantErr: "tls:"},
		{name: "certificate from another CA with an allowed name", certs: []tls.Certificate{otherCA.KeyPair(t, "kube-apiserver")}, wantErr: "tls:"},
		{name: "certificate from the client CA with a name not allowed", certs: []tls.Certificate{apiserverCA.KeyPair(t, "intruder", "intruder.example.com")}, wantErr: "tls:", rejected: true},
		{name: "allowed by common name", certs: []tls.Certificate{apiserverCA.KeyPair(t, "kube-apiserver")}},
		{name: "allowed by DNS subject alternative name", certs: []tls.Certificate{apiserverCA.KeyPair(t, "apiserver-7f9c", "apiserver.example.com")}},
		{name: "names compare without regard to case", certs: []tls.Certificate{apiserverCA.KeyPair(t, "x", "APIServer.Example.com")}},
	}
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, tc := range tests {
			t.Run(tls.VersionName(version)+"/"+tc.name, func(t *testing.T) {
				before := sumCounter(t, f.rec.Registry(), "imagegate_client_auth_rejections_total")
				err := clientResult(addr, &tls.Config{RootCAs: f.ca.Pool(), ServerName: "localhost", Certificates: tc.certs, MinVersion: version, MaxVersion: version}) //nolint:gosec // version is TLS 1.2 or 1.3
				switch {
				case tc.wantErr == "" && err != nil:
					t.Errorf("got %v, want the client served", err)
				case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
					t.Errorf("got %v, want a TLS error (%q)", err, tc.wantErr)
				}
				after := sumCounter(t, f.rec.Registry(), "imagegate_client_auth_rejections_total")
				if got := after > before; got != tc.rejected {
					t.Errorf("client_auth_rejections_total went from %v to %v, want counted=%v", before, after, tc.rejected)
				}
			})
		}
	}
	// Every refusal is a failed handshake for the server, counted when
	// net/http reports it, which may be just after the client saw it.
	const refusals = 6 // 3 refused clients, in TLS 1.2 and 1.3
	for start := time.Now(); sumCounter(t, f.rec.Registry(), "imagegate_tls_handshake_failures_total") < refusals; {
		if time.Since(start) > liveness {
			t.Fatalf("imagegate_tls_handshake_failures_total = %v, want %d", sumCounter(t, f.rec.Registry(), "imagegate_tls_handshake_failures_total"), refusals)
		}
		time.Sleep(time.Millisecond)
	}
	if !strings.Contains(f.logged(), "refused a client certificate whose names are not allowed") {
		t.Errorf("a refused name was not logged: %s", f.logged())
	}
}

// TestClientCARotation: after the client CA file is replaced, clients of
// the new CA are served and clients of the old one are refused.
func TestClientCARotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	oldCA := servertest.NewCA(t, dir, "old")
	newCA := servertest.NewCA(t, dir, "new")
	f, vol, content := secretFixture(t, oldCA, nil)
	addr, _ := f.serve(t)
	client := func(ca *servertest.CA) *tls.Config {
		return &tls.Config{RootCAs: f.ca.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{ca.KeyPair(t, "kube-apiserver")}, MinVersion: tls.VersionTLS12}
	}
	if err := clientResult(addr, client(oldCA)); err != nil {
		t.Fatalf("client of the old CA before rotation: %v", err)
	}
	if err := clientResult(addr, client(newCA)); err == nil {
		t.Fatal("client of the new CA served before rotation")
	}
	content["ca.crt"] = newCA.CertPEM
	vol.Update(t, content)
	waitFor(t, f, "the new client CA", func() bool { return clientResult(addr, client(newCA)) == nil })
	if err := clientResult(addr, client(oldCA)); err == nil {
		t.Error("client of the old CA still served after rotation")
	}
}

// The per-handshake TLS configuration keeps what http.Server would have
// offered with a static one: HTTP/2 and HTTP/1.1.
func TestServeNegotiatesHTTP2AndHTTP1(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t, nil)
	addr, _ := f.serve(t)
	for _, proto := range []string{"h2", "http/1.1"} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: f.ca.Pool(), NextProtos: []string{proto}, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		if got := conn.ConnectionState().NegotiatedProtocol; got != proto {
			t.Errorf("offered only %s, negotiated %q", proto, got)
		}
		_ = conn.Close()
	}
}
