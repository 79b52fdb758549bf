// Package metrics is imagegate's Prometheus instrumentation: what it
// decided, how fast, which rules fired, which policy and certificates are
// live, and the Go runtime.
//
// Everything is registered on a Recorder's own registry, never the global
// one, so tests (and parallel servers in one process) do not share counters.
// A nil *Recorder is valid and records nothing, so code that may run without
// metrics (imagegate check, unit tests) needs no guard.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/version"
)

// Namespace prefixes every imagegate metric.
const Namespace = "imagegate"

// DecisionError is the decision label of a request that got no policy
// decision: not a review, unreadable, too large, wrong content type.
const DecisionError = "error"

// DecisionMutated is the decision label of a mutate review answered with a
// patch; one answered without a patch is "allowed".
const DecisionMutated = "mutated"

// Label values of imagegate_image_rewrites_total: an image rewritten to a
// mirror, or one a rewrite rule matched but could not rewrite into a valid
// reference (it is left alone, and the validating path judges it as it is).
const (
	RewriteRewritten = "rewritten"
	RewriteFailed    = "failed"
)

// Label values of imagegate_digest_lookups_total: a tag resolved to its
// digest, or why not.
const (
	DigestPinned       = "pinned"
	DigestNotFound     = "not-found"
	DigestUnauthorized = "unauthorized"
	DigestTimeout      = "timeout"
	DigestError        = "error"
)

// DigestResults are the result label's values of imagegate_digest_lookups_total.
var DigestResults = []string{DigestPinned, DigestNotFound, DigestUnauthorized, DigestTimeout, DigestError}

// Certificate names, the certificate label of the certificate metrics.
const (
	CertServing  = "serving"
	CertClientCA = "client-ca"
)

// Label values of imagegate_client_auth_rejections_total.
const (
	RejectNameNotAllowed = "name-not-allowed"
)

// LatencyBuckets are the review latency histogram's upper bounds, in
// seconds: a review is decided in-process in tens of microseconds, so the
// buckets start at 50µs and reach the apiserver's 10s webhook limit.
var LatencyBuckets = []float64{
	0.00005, 0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// Recorder records imagegate's metrics. Its methods are safe for concurrent
// use, and do nothing on a nil *Recorder.
type Recorder struct {
	reg *prometheus.Registry

	reviews    *prometheus.CounterVec
	violations *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	rewrites   *prometheus.CounterVec

	digestLookups   *prometheus.CounterVec
	digestCacheHits prometheus.Counter
	digestDuration  prometheus.Histogram

	policyReloads        prometheus.Counter
	policyReloadFailures prometheus.Counter
	policyLastReloadOK   prometheus.Gauge
	policyLastReloadTime prometheus.Gauge
	policyInfo           *prometheus.GaugeVec

	certReloads        *prometheus.CounterVec
	certReloadFailures *prometheus.CounterVec
	certNotAfter       *prometheus.GaugeVec

	clientRejections *prometheus.CounterVec
	handshakeErrors  prometheus.Counter

	mu         sync.Mutex // orders policyInfo updates
	policyHash string
}

// New returns a Recorder with every imagegate metric registered on a new
// registry, together with the Go runtime and process collectors and
// imagegate_build_info.
func New() *Recorder {
	r := &Recorder{
		reg: prometheus.NewRegistry(),
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "reviews_total",
			Help: "Reviews answered, by endpoint (image-policy, validate, mutate) and decision (allowed, denied, break-glass, warned, error; mutate: mutated or allowed).",
		}, []string{"endpoint", "decision"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "violations_total",
			Help: "Policy violations found, by endpoint and rule, whatever the decision (denied, overridden by break-glass, or only warned).",
		}, []string{"endpoint", "rule"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "review_duration_seconds",
			Help:    "Time from reading a review's body to writing its answer, by endpoint.",
			Buckets: LatencyBuckets,
		}, []string{"endpoint"}),
		rewrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "image_rewrites_total",
			Help: "Images the mutating webhook rewrote to a mirror (rewritten), or matched by a rewrite rule but left alone because the result would not be a valid reference (failed).",
		}, []string{"result"}),
		digestLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "digest_lookups_total",
			Help: "Tags the mutating webhook asked a registry to resolve to a digest, by result (pinned, not-found, unauthorized, timeout, error); cache hits are not lookups.",
		}, []string{"result"}),
		digestCacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "digest_cache_hits_total",
			Help: "Tags resolved from the digest cache (a digest, or a recent failure) without asking the registry.",
		}),
		digestDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "digest_lookup_duration_seconds",
			Help:    "Time a registry took to resolve a tag, or to fail to.",
			Buckets: LatencyBuckets,
		}),
		policyReloads: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "policy_reloads_total",
			Help: "Policy reloads attempted, successful or not.",
		}),
		policyReloadFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "policy_reload_failures_total",
			Help: "Policy reloads that failed; the previous policy stays in force.",
		}),
		policyLastReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "policy_last_reload_successful",
			Help: "1 if the last policy load or reload succeeded, else 0.",
		}),
		policyLastReloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "policy_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful policy load or reload.",
		}),
		policyInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "policy_info",
			Help: "Always 1; its hash label identifies the policy in force (the same hash as in decision logs).",
		}, []string{"hash"}),
		certReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "certificate_reloads_total",
			Help: "Certificate files re-read because they changed, by certificate (serving, client-ca), successful or not.",
		}, []string{"certificate"}),
		certReloadFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "certificate_reload_failures_total",
			Help: "Changed certificate files that could not be used, by certificate; the previous certificate stays in use.",
		}, []string{"certificate"}),
		certNotAfter: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "certificate_expiry_timestamp_seconds",
			Help: "Unix time when the certificate in use expires, by certificate (for client-ca, the first CA of the bundle to expire).",
		}, []string{"certificate"}),
		clientRejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "client_auth_rejections_total",
			Help: "TLS handshakes refused after the client certificate verified, by reason (name-not-allowed).",
		}, []string{"reason"}),
		handshakeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "tls_handshake_failures_total",
			Help: "TLS handshakes on the review listener that failed: no or untrusted client certificate, a name not allowed, or a client that hung up.",
		}),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help: "Always 1; labels say which imagegate build is running.",
	}, []string{"version", "commit"})
	build.WithLabelValues(version.Version, commitLabel()).Set(1)

	r.reg.MustRegister(
		r.reviews, r.violations, r.duration, r.rewrites, r.digestLookups, r.digestCacheHits, r.digestDuration,
		r.policyReloads, r.policyReloadFailures, r.policyLastReloadOK, r.policyLastReloadTime, r.policyInfo,
		r.certReloads, r.certReloadFailures, r.certNotAfter, r.clientRejections, r.handshakeErrors,
		build,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Start every series a dashboard or alert divides by at zero, so rate()
	// works from the first scrape instead of after the first event.
	for _, endpoint := range []string{EndpointImagePolicy, EndpointValidate} {
		for _, d := range Decisions {
			r.reviews.WithLabelValues(endpoint, d)
		}
		for _, rule := range Rules {
			r.violations.WithLabelValues(endpoint, string(rule))
		}
	}
	for _, d := range []string{string(policy.OutcomeAllowed), DecisionMutated, DecisionError} {
		r.reviews.WithLabelValues(EndpointMutate, d)
	}
	r.rewrites.WithLabelValues(RewriteRewritten)
	r.rewrites.WithLabelValues(RewriteFailed)
	for _, res := range DigestResults {
		r.digestLookups.WithLabelValues(res)
	}
	for _, c := range []string{CertServing, CertClientCA} {
		r.certReloads.WithLabelValues(c)
		r.certReloadFailures.WithLabelValues(c)
	}
	r.clientRejections.WithLabelValues(RejectNameNotAllowed)
	return r
}

// Endpoint label values.
const (
	EndpointImagePolicy = "image-policy"
	EndpointValidate    = "validate"
	EndpointMutate      = "mutate"
)

// Rules are the rule label's values, started at zero: every policy check.
var Rules = policy.Checks()

// Decisions are the decision label's values.
var Decisions = []string{
	string(policy.OutcomeAllowed), string(policy.OutcomeDenied), string(policy.OutcomeBreakGlass),
	string(policy.OutcomeWarned), DecisionError,
}

func commitLabel() string {
	if version.Commit == "" {
		return "unknown"
	}
	return version.Commit
}

// Registry returns the registry the metrics are on, for tests
// (prometheus/testutil) and for anyone adding collectors of their own.
func (r *Recorder) Registry() *prometheus.Registry {
	if r == nil {
		return nil
	}
	return r.reg
}

// Handler serves the metrics in the Prometheus exposition formats.
func (r *Recorder) Handler() http.Handler {
	if r == nil {
		return http.NotFoundHandler()
	}
	return promhttp.InstrumentMetricHandler(r.reg, promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg}))
}

// Review records one decided review: its outcome, every violation's rule
// and how long it took.
func (r *Recorder) Review(endpoint string, d *policy.Decision, elapsed time.Duration) {
	if r == nil {
		return
	}
	r.reviews.WithLabelValues(endpoint, string(d.Outcome)).Inc()
	for i := range d.Violations {
		r.violations.WithLabelValues(endpoint, string(d.Violations[i].Check)).Inc()
	}
	r.duration.WithLabelValues(endpoint).Observe(elapsed.Seconds())
}

// Mutation records one answered mutate review: whether it carried a patch,
// how many images it rewrote and how many a rule matched but could not
// rewrite, and how long it took.
func (r *Recorder) Mutation(patched bool, rewritten, failed int, elapsed time.Duration) {
	if r == nil {
		return
	}
	decision := string(policy.OutcomeAllowed)
	if patched {
		decision = DecisionMutated
	}
	r.reviews.WithLabelValues(EndpointMutate, decision).Inc()
	r.rewrites.WithLabelValues(RewriteRewritten).Add(float64(rewritten))
	r.rewrites.WithLabelValues(RewriteFailed).Add(float64(failed))
	r.duration.WithLabelValues(EndpointMutate).Observe(elapsed.Seconds())
}

// DigestLookup records one registry lookup of a tag: its result
// (DigestPinned, DigestNotFound, ...) and how long it took.
func (r *Recorder) DigestLookup(result string, elapsed time.Duration) {
	if r == nil {
		return
	}
	r.digestLookups.WithLabelValues(result).Inc()
	r.digestDuration.Observe(elapsed.Seconds())
}

// DigestCacheHit records a tag resolved from the digest cache.
func (r *Recorder) DigestCacheHit() {
	if r == nil {
		return
	}
	r.digestCacheHits.Inc()
}

// ReviewError records a request that got an error instead of a decision.
func (r *Recorder) ReviewError(endpoint string, elapsed time.Duration) {
	if r == nil {
		return
	}
	r.reviews.WithLabelValues(endpoint, DecisionError).Inc()
	r.duration.WithLabelValues(endpoint).Observe(elapsed.Seconds())
}

// PolicyLoaded records the policy loaded at start-up: it becomes the
// policy_info series, without counting a reload.
func (r *Recorder) PolicyLoaded(hash string) {
	if r == nil {
		return
	}
	r.setPolicy(hash)
}

// PolicyReloaded records a policy reload attempt. When ok, hash names the
// policy now in force; when not, the previous policy stays in force and hash
// is ignored.
func (r *Recorder) PolicyReloaded(ok bool, hash string) {
	if r == nil {
		return
	}
	r.policyReloads.Inc()
	if !ok {
		r.policyReloadFailures.Inc()
		r.policyLastReloadOK.Set(0)
		return
	}
	r.setPolicy(hash)
}

func (r *Recorder) setPolicy(hash string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.policyHash != hash {
		r.policyInfo.DeleteLabelValues(r.policyHash)
		r.policyHash = hash
	}
	r.policyInfo.WithLabelValues(hash).Set(1)
	r.policyLastReloadOK.Set(1)
	r.policyLastReloadTime.SetToCurrentTime()
}

// CertificateLoaded records the certificate (CertServing or CertClientCA)
// now in use and when it expires, without counting a reload.
func (r *Recorder) CertificateLoaded(name string, notAfter time.Time) {
	if r == nil {
		return
	}
	r.certNotAfter.WithLabelValues(name).Set(float64(notAfter.Unix()))
}

// CertificateReloaded records an attempt to use changed certificate files.
// When ok, notAfter is the new certificate's expiry; when not, the previous
// certificate stays in use.
func (r *Recorder) CertificateReloaded(name string, ok bool, notAfter time.Time) {
	if r == nil {
		return
	}
	r.certReloads.WithLabelValues(name).Inc()
	if !ok {
		r.certReloadFailures.WithLabelValues(name).Inc()
		return
	}
	r.CertificateLoaded(name, notAfter)
}

// ClientRejected records a TLS handshake refused after the client's
// certificate verified, for reason (RejectNameNotAllowed).
func (r *Recorder) ClientRejected(reason string) {
	if r == nil {
		return
	}
	r.clientRejections.WithLabelValues(reason).Inc()
}

// TLSHandshakeFailed records a failed TLS handshake on the review listener.
func (r *Recorder) TLSHandshakeFailed() {
	if r == nil {
		return
	}
	r.handshakeErrors.Inc()
}
