// Package digest resolves image tags to the digest their registry serves,
// so the mutating webhook can pin "repo:tag" to "repo:tag@sha256:…": what
// was admitted is then exactly what every node pulls.
//
// A [Resolver] asks the registry named in the reference (after any mirror
// rewrite, so the one that will be pulled from) with go-containerregistry:
// a HEAD of the manifest, falling back to a GET for registries that answer
// HEAD without a digest. A multi-arch tag resolves to its index digest,
// never one platform's. Lookups are bounded (a deadline each), collapsed
// (one lookup per reference however many reviews ask at once) and cached
// per reference, failures briefly, so a registry that is down is not
// hammered. Registries are reached over HTTPS only, trusting the system
// roots and an optional CA bundle; credentials come from a Docker
// config.json, re-read when it changes.
package digest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/singleflight"

	"github.com/imagegate/imagegate/pkg/metrics"
	"github.com/imagegate/imagegate/pkg/version"
)

// Defaults of [Options].
const (
	DefaultTimeout    = 2 * time.Second
	DefaultTTL        = 5 * time.Minute
	DefaultFailureTTL = 15 * time.Second
	DefaultMaxEntries = 4096
)

// Options configure a Resolver. Zero values take the defaults above.
type Options struct {
	// Timeout bounds one lookup (--registry-timeout).
	Timeout time.Duration
	// TTL is how long a resolved digest is reused (--digest-cache-ttl);
	// FailureTTL how long a failed lookup is.
	TTL, FailureTTL time.Duration
	// MaxEntries bounds the cache.
	MaxEntries int
	// CAFile is a PEM bundle trusted besides the system roots
	// (--registry-ca-file).
	CAFile string
	// CredentialsFile is a Docker config.json (--registry-credentials);
	// empty means anonymous.
	CredentialsFile string
	// Metrics records lookups; nil records nothing.
	Metrics *metrics.Recorder
	// Log receives credential reload failures; nil discards them.
	Log *slog.Logger
	// Now is the clock of the cache; nil is time.Now.
	Now func() time.Time
}

// Resolver resolves tags to digests. It is safe for concurrent use.
type Resolver struct {
	opts      Options
	transport http.RoundTripper
	keychain  *keychain
	flight    singleflight.Group
	mu        sync.Mutex
	cache     map[string]entry
}

type entry struct {
	digest  string
	err     error
	expires time.Time
}

// New returns a Resolver, or an error when the CA bundle or the
// credentials file cannot be read.
func New(o Options) (*Resolver, error) {
	o.Timeout = cmpOr(o.Timeout, DefaultTimeout)
	o.TTL = cmpOr(o.TTL, DefaultTTL)
	o.FailureTTL = cmpOr(o.FailureTTL, DefaultFailureTTL)
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--registry-ca-file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--registry-ca-file %s: no PEM certificate in it", o.CAFile)
		}
	}
	t := remote.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	kc, err := newKeychain(o.CredentialsFile, o.Log)
	if err != nil {
		return nil, fmt.Errorf("--registry-credentials: %w", err)
	}
	return &Resolver{opts: o, transport: httpsOnly{t}, keychain: kc, cache: map[string]entry{}}, nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// httpsOnly refuses plain HTTP, which go-containerregistry would try for
// a registry on a private or loopback address: a digest read over HTTP
// could be anybody's, and pinning it would be worse than not pinning.
type httpsOnly struct{ next http.RoundTripper }

func (h httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		return nil, fmt.Errorf("imagegate asks registries over HTTPS only, not %s", req.URL.Scheme)
	}
	return h.next.RoundTrip(req)
}

// Error is a lookup that did not give a digest. Outcome is its metrics
// label (metrics.Digest*): not-found, unauthorized, timeout or error.
type Error struct {
	Ref     string
	Outcome string
	Err     error
}

func (e *Error) Error() string {
	switch e.Outcome {
	case metrics.DigestNotFound:
		return fmt.Sprintf("the registry has no manifest for %s (%v)", e.Ref, e.Err)
	case metrics.DigestUnauthorized:
		return fmt.Sprintf("the registry refused to show %s to imagegate's credentials (%v)", e.Ref, e.Err)
	case metrics.DigestTimeout:
		return fmt.Sprintf("the registry did not answer for %s in time (%v)", e.Ref, e.Err)
	}
	return fmt.Sprintf("resolve %s: %v", e.Ref, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Resolve returns the digest ("sha256:…") the registry serves for ref, a
// reference with a tag. A result less than its TTL old is reused, and
// concurrent calls for one reference share one lookup. The lookup runs
// under the Resolver's own deadline whatever ctx says, so a caller that
// gives up does not fail the others waiting on it; ctx bounds only this
// caller's wait. An error is an *[Error].
func (r *Resolver) Resolve(ctx context.Context, ref string) (string, error) {
	if d, ok, err := r.Cached(ref); ok {
		return d, err
	}
	ch := r.flight.DoChan(ref, func() (any, error) {
		if e, ok := r.cached(ref); ok { // a lookup just finished
			return e, nil
		}
		e := r.lookup(context.WithoutCancel(ctx), ref)
		r.store(ref, e)
		return e, nil
	})
	select {
	case res := <-ch:
		e := res.Val.(entry)
		return e.digest, e.err
	case <-ctx.Done():
		return "", &Error{Ref: ref, Outcome: metrics.DigestTimeout, Err: fmt.Errorf("the review's deadline passed: %w", ctx.Err())}
	}
}

// Cached returns what Resolve would answer for ref from the cache alone,
// a digest or a failure less than its TTL old, counted as a cache hit; ok
// is false when the cache holds no fresh answer. It never waits on a
// registry or on another caller's lookup, so the mutating webhook answers
// a review whose tags are all cached without starting a goroutine.
func (r *Resolver) Cached(ref string) (digest string, ok bool, err error) {
	e, ok := r.cached(ref)
	if !ok {
		return "", false, nil
	}
	r.opts.Metrics.DigestCacheHit()
	return e.digest, true, e.err
}

func (r *Resolver) cached(ref string) (entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[ref]
	if !ok || !r.opts.Now().Before(e.expires) {
		return entry{}, false
	}
	return e, true
}

func (r *Resolver) store(ref string, e entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.opts.Now()
	if len(r.cache) >= r.opts.MaxEntries {
		for k, old := range r.cache {
			if !now.Before(old.expires) {
				delete(r.cache, k)
			}
		}
	}
	for k := range r.cache { // still full: drop any one, as maps iterate
		if len(r.cache) < r.opts.MaxEntries {
			break
		}
		delete(r.cache, k)
	}
	e.expires = now.Add(r.opts.TTL)
	if e.err != nil {
		e.expires = now.Add(r.opts.FailureTTL)
	}
	r.cache[ref] = e
}

// lookup asks the registry, recording the outcome and its latency.
func (r *Resolver) lookup(ctx context.Context, ref string) entry {
	start := time.Now()
	d, err := r.ask(ctx, ref)
	outcome := metrics.DigestPinned
	if err != nil {
		outcome = classify(err)
		err = &Error{Ref: ref, Outcome: outcome, Err: err}
	}
	r.opts.Metrics.DigestLookup(outcome, time.Since(start))
	return entry{digest: d, err: err}
}

func (r *Resolver) ask(ctx context.Context, ref string) (string, error) {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return "", fmt.Errorf("parse: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(r.transport), remote.WithAuthFromKeychain(r.keychain), remote.WithUserAgent(userAgent)}
	desc, err := remote.Head(tag, opts...)
	if err == nil {
		return desc.Digest.String(), nil
	}
	if c := classify(err); c != metrics.DigestError {
		return "", err
	}
	// Some registries answer HEAD without Docker-Content-Digest; the
	// manifest's own bytes then say which digest it has.
	got, gerr := remote.Get(tag, opts...)
	if gerr != nil {
		return "", gerr
	}
	return got.Digest.String(), nil
}

// userAgent names imagegate to registries, so their logs say who asks.
var userAgent = "imagegate/" + version.Version

// classify names the outcome of a failed lookup.
func classify(err error) string {
	var te *transport.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return metrics.DigestTimeout
	case errors.As(err, &te) && te.StatusCode == http.StatusNotFound:
		return metrics.DigestNotFound
	case errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden):
		return metrics.DigestUnauthorized
	}
	return metrics.DigestError
}
