// Package certs keeps imagegate's TLS material current: the serving
// certificate and the client CA bundle are re-read when their files change,
// so cert-manager (or anyone) can renew them in place without a restart.
//
// Each handshake takes the material in force at that moment, so a rotation
// never fails a handshake; connections already open keep the certificates
// they were set up with. A changed file that cannot be used (unreadable,
// not PEM, key not matching, expired) is logged and counted, and the
// previous material stays in use until a good one arrives.
//
// Changes are found two ways: fsnotify events on the files' directories
// (which is what sees a Kubernetes Secret volume swap its "..data" symlink:
// the files themselves are symlinks through it and are never written), and a
// poll as a backstop for file systems without events. Only events naming
// the files or the "..data" link count, so a busy neighbour in the same
// directory cannot hold a reload back. Content is compared by checksum, so
// neither a touch nor a repeated event counts as a reload.
package certs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Certificate names given to the Observer.
const (
	Serving  = "serving"
	ClientCA = "client-ca"
)

// ReasonNameNotAllowed is the reason given to Observer.ClientRejected when
// a verified client certificate carries none of the allowed names.
const ReasonNameNotAllowed = "name-not-allowed"

// DefaultPollInterval is how often the files are re-read when no event says
// they changed.
const DefaultPollInterval = 30 * time.Second

// settleTime lets a writer finish a burst of changes (certificate, then key)
// before they are read; maxWait bounds how long a writer that never stops
// can put the reload off.
const (
	settleTime = 100 * time.Millisecond
	maxWait    = time.Second
)

// Observer is told about certificate changes and refused clients;
// *metrics.Recorder is one.
type Observer interface {
	// CertificateLoaded: name is in use and expires at notAfter.
	CertificateLoaded(name string, notAfter time.Time)
	// CertificateReloaded: name's files changed and were used (ok) or not.
	CertificateReloaded(name string, ok bool, notAfter time.Time)
	// ClientRejected: a handshake was refused for reason.
	ClientRejected(reason string)
}

// Options say where the TLS material is and who to tell about it.
type Options struct {
	// CertFile and KeyFile hold the serving certificate (with any
	// intermediates) and its key, PEM.
	CertFile, KeyFile string
	// ClientCAFile, when set, holds the CAs a client certificate must chain
	// to; clients without one are refused at the handshake.
	ClientCAFile string
	// AllowedClientNames, when set with ClientCAFile, also requires the
	// client certificate to carry one of these names (subject common name,
	// or a DNS, email or URI subject alternative name).
	AllowedClientNames []string
	// Log receives reloads and failures; nil discards them.
	Log *slog.Logger
	// Observer, when set, is told about loads, reloads and rejections.
	Observer Observer
	// PollInterval is how often to re-read the files without an event;
	// zero means DefaultPollInterval.
	PollInterval time.Duration
}

// Reloader holds the TLS material in force and replaces it when its files
// change. Use TLSConfig for the server and Start to keep it current.
type Reloader struct {
	opts Options
	log  *slog.Logger

	// config is the server configuration handed to each handshake; it is
	// rebuilt, never modified, when the material changes.
	config atomic.Pointer[tls.Config]

	mu       sync.Mutex // serialises reloads and guards the fields below
	cert     *tls.Certificate
	pool     *x509.CertPool
	pairSum  [sha256.Size]byte // checksum of the last serving files read, used or not
	caSum    [sha256.Size]byte
	reloaded chan struct{} // closed and replaced after each Reload, for tests
}

// New reads the TLS material and returns a Reloader serving it. Unlike a
// reload, a first read that fails is an error: there is nothing to keep.
func New(opts Options) (*Reloader, error) {
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	r := &Reloader{opts: opts, log: opts.Log, reloaded: make(chan struct{})}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	certPEM, keyPEM, err := r.readPair()
	if err == nil {
		r.pairSum = pairSum(certPEM, keyPEM)
		r.cert, err = parsePair(certPEM, keyPEM)
	}
	if err != nil {
		return nil, fmt.Errorf("load serving certificate %s and key %s: %w", opts.CertFile, opts.KeyFile, err)
	}
	r.observeLoaded(Serving, r.cert.Leaf.NotAfter)
	if opts.ClientCAFile != "" {
		caPEM, err := os.ReadFile(opts.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("load client CA: %w", err)
		}
		r.caSum = sha256.Sum256(caPEM)
		pool, notAfter, err := parseCAs(caPEM)
		if err != nil {
			return nil, fmt.Errorf("load client CA %s: %w", opts.ClientCAFile, err)
		}
		r.pool = pool
		r.observeLoaded(ClientCA, notAfter)
	}
	r.publish()
	return r, nil
}

// TLSConfig returns the server TLS configuration: TLS 1.2 at least, the
// serving certificate in force at each handshake and, with a client CA,
// client certificates required and verified against the CAs in force.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c := r.config.Load()
			if len(r.opts.AllowedClientNames) == 0 {
				return c, nil
			}
			// A copy per handshake so a refusal can name the caller.
			c = c.Clone()
			remote := ""
			if hello.Conn != nil {
				remote = hello.Conn.RemoteAddr().String()
			}
			c.VerifyConnection = func(cs tls.ConnectionState) error { return r.verifyName(cs, remote) }
			return c, nil
		},
	}
}

// publish builds the per-handshake configuration from the material in
// force. Callers hold r.mu, or own r exclusively.
func (r *Reloader) publish() {
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*r.cert},
		// http.Server would add these to a static config; a config from
		// GetConfigForClient must say them itself to keep HTTP/2.
		NextProtos: []string{"h2", "http/1.1"},
	}
	if r.pool != nil {
		c.ClientCAs = r.pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
		// A resumed session skips certificate verification; without
		// tickets every new connection is checked against the CAs in force.
		c.SessionTicketsDisabled = true
	}
	r.config.Store(c)
}

// verifyName refuses a verified client certificate that carries none of the
// allowed names.
func (r *Reloader) verifyName(cs tls.ConnectionState, remote string) error {
	if len(cs.PeerCertificates) == 0 { // RequireAndVerifyClientCert refused it already
		return errors.New("no client certificate")
	}
	leaf := cs.PeerCertificates[0]
	names := CertificateNames(leaf)
	for _, n := range names {
		if nameAllowed(n, r.opts.AllowedClientNames) {
			return nil
		}
	}
	r.log.Warn("refused a client certificate whose names are not allowed", "remote", remote, "names", names, "allowedClientNames", r.opts.AllowedClientNames)
	if r.opts.Observer != nil {
		r.opts.Observer.ClientRejected(ReasonNameNotAllowed)
	}
	return fmt.Errorf("client certificate names %q: none is in --allowed-client-names", names)
}

// CertificateNames returns the names a client certificate can be allowed
// by: its subject common name, then its DNS, email and URI subject
// alternative names.
func CertificateNames(c *x509.Certificate) []string {
	var names []string
	if c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	names = append(names, c.DNSNames...)
	names = append(names, c.EmailAddresses...)
	for _, u := range c.URIs {
		names = append(names, u.String())
	}
	return names
}

// nameAllowed compares names without regard to case, as DNS does: client
// names are host names or service-account style identifiers in practice.
func nameAllowed(name string, allowed []string) bool {
	return slices.ContainsFunc(allowed, func(a string) bool { return strings.EqualFold(a, name) })
}

// Certificate returns the serving certificate in force.
func (r *Reloader) Certificate() *tls.Certificate {
	return &r.config.Load().Certificates[0]
}

// Reload re-reads every file whose content changed since it was last read
// and uses what is valid; what is not is logged and counted, and the
// previous material stays.
func (r *Reloader) Reload() {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := r.reloadPair()
	if r.opts.ClientCAFile != "" && r.reloadCA() {
		changed = true
	}
	if changed {
		r.publish()
	}
	close(r.reloaded)
	r.reloaded = make(chan struct{})
}

// Reloaded returns a channel closed when the next Reload finishes, checked
// or not, so a test can wait for the watcher without sleeping.
func (r *Reloader) Reloaded() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloaded
}

func (r *Reloader) reloadPair() (changed bool) {
	certPEM, keyPEM, err := r.readPair()
	if err != nil {
		// A missing file is usually a writer half-way through replacing
		// it; the event that completes the change brings us back.
		r.log.Error("serving certificate unreadable; keeping the previous one", "certFile", r.opts.CertFile, "keyFile", r.opts.KeyFile, "err", err)
		r.observeReloaded(Serving, false, time.Time{})
		r.pairSum = [sha256.Size]byte{}
		return false
	}
	sum := pairSum(certPEM, keyPEM)
	if sum == r.pairSum {
		return false
	}
	r.pairSum = sum
	cert, err := parsePair(certPEM, keyPEM)
	if err == nil && time.Now().After(cert.Leaf.NotAfter) {
		err = fmt.Errorf("the certificate expired at %s", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if err != nil {
		r.log.Error("new serving certificate is not usable; keeping the previous one", "certFile", r.opts.CertFile, "keyFile", r.opts.KeyFile,
			"err", err, "serial", r.cert.Leaf.SerialNumber.String(), "notAfter", r.cert.Leaf.NotAfter)
		r.observeReloaded(Serving, false, time.Time{})
		return false
	}
	r.cert = cert
	r.log.Info("serving certificate reloaded", "certFile", r.opts.CertFile, "subject", cert.Leaf.Subject.String(),
		"serial", cert.Leaf.SerialNumber.String(), "notAfter", cert.Leaf.NotAfter)
	r.observeReloaded(Serving, true, cert.Leaf.NotAfter)
	return true
}

func (r *Reloader) reloadCA() (changed bool) {
	caPEM, err := os.ReadFile(r.opts.ClientCAFile)
	if err != nil {
		r.log.Error("client CA unreadable; keeping the previous one", "caFile", r.opts.ClientCAFile, "err", err)
		r.observeReloaded(ClientCA, false, time.Time{})
		r.caSum = [sha256.Size]byte{}
		return false
	}
	sum := sha256.Sum256(caPEM)
	if sum == r.caSum {
		return false
	}
	r.caSum = sum
	pool, notAfter, err := parseCAs(caPEM)
	if err != nil {
		r.log.Error("new client CA is not usable; keeping the previous one", "caFile", r.opts.ClientCAFile, "err", err)
		r.observeReloaded(ClientCA, false, time.Time{})
		return false
	}
	r.pool = pool
	r.log.Info("client CA reloaded", "caFile", r.opts.ClientCAFile, "notAfter", notAfter)
	r.observeReloaded(ClientCA, true, notAfter)
	return true
}

// readFile reads the TLS files; tests replace it to interleave a writer.
var readFile = os.ReadFile

// maxPairReads bounds how often readPair starts over while a writer keeps
// replacing the files.
const maxPairReads = 3

// readPair reads the serving certificate and its key. A writer replaces
// both at once (a Secret volume swaps its ..data link), but they are read
// one after the other, so the certificate is read again after the key and
// the pair read anew if it changed: a reload that straddles a swap must not
// pair the new certificate with the old key and report a broken renewal.
func (r *Reloader) readPair() (certPEM, keyPEM []byte, err error) {
	for attempt := 1; ; attempt++ {
		if certPEM, err = readFile(r.opts.CertFile); err != nil {
			return nil, nil, err
		}
		if keyPEM, err = readFile(r.opts.KeyFile); err != nil {
			return nil, nil, err
		}
		again, err := readFile(r.opts.CertFile)
		if err != nil {
			return nil, nil, err
		}
		if bytes.Equal(certPEM, again) || attempt == maxPairReads {
			return certPEM, keyPEM, nil
		}
	}
}

func pairSum(certPEM, keyPEM []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

func parsePair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if cert.Leaf == nil { // set by X509KeyPair since Go 1.23
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &cert, nil
}

// parseCAs parses a PEM bundle strictly: every block must be a certificate,
// so a truncated or mixed-up file is an error rather than a smaller pool.
// notAfter is the earliest expiry in the bundle.
func parseCAs(data []byte) (pool *x509.CertPool, notAfter time.Time, err error) {
	pool = x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, time.Time{}, fmt.Errorf("PEM block %d is a %q, want only CERTIFICATE blocks", n+1, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		pool.AddCert(c)
		if n == 0 || c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
		n++
	}
	if n == 0 {
		return nil, time.Time{}, errors.New("no PEM certificate found")
	}
	return pool, notAfter, nil
}

func (r *Reloader) observeLoaded(name string, notAfter time.Time) {
	if r.opts.Observer != nil {
		r.opts.Observer.CertificateLoaded(name, notAfter)
	}
}

func (r *Reloader) observeReloaded(name string, ok bool, notAfter time.Time) {
	if r.opts.Observer != nil {
		r.opts.Observer.CertificateReloaded(name, ok, notAfter)
	}
}

// Start keeps the material current until ctx is done: it reloads shortly
// after the files or the Secret volume's "..data" link change, and every
// PollInterval. The watch is in place when Start returns, and anything that
// changed since New read the files is picked up at once, so no change is
// missed.
func (r *Reloader) Start(ctx context.Context) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	w, err := r.watcher()
	if err != nil {
		r.log.Warn("cannot watch certificate files; polling only", "interval", r.opts.PollInterval, "err", err)
	} else {
		events, errs = w.Events, w.Errors
	}
	relevant := relevantTo(r.opts.CertFile, r.opts.KeyFile, r.opts.ClientCAFile)
	r.Reload()
	go func() {
		if w != nil {
			defer func() { _ = w.Close() }()
		}
		poll := time.NewTicker(r.opts.PollInterval)
		defer poll.Stop()
		settle := time.NewTimer(time.Hour)
		settle.Stop()
		defer settle.Stop()
		d := debouncer{settle: settleTime, maxWait: maxWait}
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-events:
				if relevant(ev.Name) {
					settle.Reset(time.Until(d.event(time.Now())))
				}
			case err := <-errs:
				r.log.Warn("certificate file watcher", "err", err)
				if errors.Is(err, fsnotify.ErrEventOverflow) { // the event that mattered may be among those lost
					settle.Reset(time.Until(d.event(time.Now())))
				}
			case <-settle.C:
				d.fired()
				r.Reload()
			case <-poll.C:
				r.Reload()
			}
		}
	}()
}

// debouncer decides when to reload after a run of events: settle after the
// last one, but never later than maxWait after the first, so a stream of
// events cannot postpone a rotation indefinitely.
type debouncer struct {
	settle, maxWait time.Duration
	first           time.Time // of the pending run; zero when none is
}

// event records an event at now and returns when to reload.
func (d *debouncer) event(now time.Time) (fireAt time.Time) {
	if d.first.IsZero() {
		d.first = now
	}
	fireAt = now.Add(d.settle)
	if deadline := d.first.Add(d.maxWait); fireAt.After(deadline) {
		return deadline
	}
	return fireAt
}

// fired ends the pending run: the next event starts a new one.
func (d *debouncer) fired() { d.first = time.Time{} }

// relevantTo returns a test of whether an event's path may mean the files
// changed: it names one of the files (written in place, or replaced by a
// rename), or, beside one, the "..data" link a Secret or ConfigMap volume
// swaps or the "..data_tmp" link renamed over it. In such a volume the files
// are symlinks through "..data", so their content changes only with the
// swap; the kubelet creates the timestamped directory before it and removes
// the old one after, so neither tells anything the swap does not.
func relevantTo(files ...string) func(path string) bool {
	paths := map[string]bool{}
	for _, f := range files {
		if f == "" {
			continue
		}
		dir := filepath.Dir(f)
		paths[filepath.Clean(f)] = true
		paths[filepath.Join(dir, "..data")] = true
		paths[filepath.Join(dir, "..data_tmp")] = true
	}
	return func(path string) bool { return paths[filepath.Clean(path)] }
}

// watcher watches the directories of the files rather than the files: a
// Secret volume replaces its "..data" symlink, and an editor or cert-manager
// writing outside Kubernetes may rename a new file over the old, and in both
// cases a watch on the old file would see nothing more.
func (r *Reloader) watcher() (*fsnotify.Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, f := range []string{r.opts.CertFile, r.opts.KeyFile, r.opts.ClientCAFile} {
		if f == "" {
			continue
		}
		if d := filepath.Dir(f); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	for _, d := range dirs {
		if err := w.Add(d); err != nil {
			_ = w.Close()
			return nil, fmt.Errorf("watch %s: %w", d, err)
		}
	}
	return w, nil
}
