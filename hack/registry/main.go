// Command registry is the registry of hack/e2e.sh's digest_pinning
// scenario: go-containerregistry's in-memory registry (pkg/registry, the
// one pkg/digest's tests use) over HTTPS on a loopback address, with a
// certificate the caller made. It pushes a random image to each -push
// repository:tag through its own HTTPS listener, trusting -ca-file (so the
// certificate is checked as imagegate will check it), logs one JSON line
// per push with the digest, then serves until SIGTERM or -lifetime.
//
//	registry -listen 127.0.0.1:5443 -tls-cert-file tls.crt -tls-key-file tls.key \
//	  -ca-file ca.crt -push team/app:1.0
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// maxBody bounds each request body: the registry keeps blobs in memory, and
// the pushes here are a few KiB.
const maxBody = 16 << 20

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "registry:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("registry", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "HTTPS address, a loopback IP and a port")
	certFile := fs.String("tls-cert-file", "", "serving certificate, PEM")
	keyFile := fs.String("tls-key-file", "", "serving key, PEM")
	caFile := fs.String("ca-file", "", "CA that signed the serving certificate, PEM, trusted for the pushes")
	lifetime := fs.Duration("lifetime", 30*time.Minute, "exit after this long, should the e2e never stop it")
	var pushes []string
	fs.Func("push", "repository:tag to push a random image to (repeatable)", func(s string) error {
		pushes = append(pushes, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if ap, err := netip.ParseAddrPort(*listen); err != nil || !ap.Addr().IsLoopback() {
		return fmt.Errorf("-listen %q: want a loopback IP and port, such as 127.0.0.1:5443", *listen)
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	roots := x509.NewCertPool()
	if pem, err := os.ReadFile(*caFile); err != nil || !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("-ca-file %q: no PEM certificate read (%v)", *caFile, err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stdout, nil))
	srv := &http.Server{
		Handler:           http.MaxBytesHandler(registry.New(registry.Logger(log.New(io.Discard, "", 0))), maxBody),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	logger.Info("serving", "address", ln.Addr().String())

	ctx, cancel := context.WithTimeout(ctx, *lifetime)
	defer cancel()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	for _, p := range pushes {
		if err := push(ctx, ln.Addr().String()+"/"+p, tr, logger); err != nil {
			_ = srv.Close()
			return err
		}
	}
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	// Nothing to drain: the registry is in memory and the e2e stops it
	// only once it is done with it.
	if err := srv.Close(); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// push writes a random single-platform image to ref and logs its digest.
func push(ctx context.Context, ref string, tr http.RoundTripper, logger *slog.Logger) error {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("-push: %w", err)
	}
	img, err := random.Image(1024, 1)
	if err != nil {
		return err
	}
	if err := remote.Write(tag, img, remote.WithContext(ctx), remote.WithTransport(tr)); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	logger.Info("pushed", "ref", ref, "digest", d.String())
	return nil
}
