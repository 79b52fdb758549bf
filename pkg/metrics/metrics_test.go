package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imagegate/imagegate/pkg/metrics"
	"github.com/imagegate/imagegate/pkg/policy"
)

// A nil Recorder is how code without metrics (check, tests) records: every
// method must be a no-op, not a panic.
func TestNilRecorderRecordsNothing(t *testing.T) {
	t.Parallel()
	var r *metrics.Recorder
	d := policy.Decision{Outcome: policy.OutcomeDenied, Violations: []policy.Violation{{Check: policy.CheckRegistry}}}
	r.Review(metrics.EndpointValidate, &d, time.Millisecond)
	r.ReviewError(metrics.EndpointValidate, time.Millisecond)
	r.Mutation(true, 1, 0, time.Millisecond)
	r.PolicyLoaded("a")
	r.PolicyReloaded(true, "b")
	r.CertificateLoaded(metrics.CertServing, time.Now())
	r.CertificateReloaded(metrics.CertClientCA, false, time.Time{})
	r.ClientRejected(metrics.RejectNameNotAllowed)
	r.DigestLookup(metrics.DigestPinned, time.Millisecond)
	r.DigestCacheHit()
	if r.Registry() != nil {
		t.Error("nil Recorder has a registry")
	}
}

// A mutate review counts as mutated when it carries a patch, allowed when
// not, and adds its images to the rewrite counters; both start at zero.
func TestMutationMetrics(t *testing.T) {
	t.Parallel()
	r := metrics.New()
	r.Mutation(true, 2, 1, time.Millisecond)
	r.Mutation(false, 0, 0, time.Millisecond)
	r.Mutation(false, 0, 1, time.Millisecond)
	r.ReviewError(metrics.EndpointMutate, time.Millisecond)
	want := `
# HELP imagegate_image_rewrites_total Images the mutating webhook rewrote to a mirror (rewritten), or matched by a rewrite rule but left alone because the result would not be a valid reference (failed).
# TYPE imagegate_image_rewrites_total counter
imagegate_image_rewrites_total{result="failed"} 2
imagegate_image_rewrites_total{result="rewritten"} 2
`
	if err := testutil.GatherAndCompare(r.Registry(), strings.NewReader(want), "imagegate_image_rewrites_total"); err != nil {
		t.Error(err)
	}
	for decision, n := range map[string]float64{"mutated": 1, "allowed": 2, "error": 1} {
		if got := counterValue(t, r, "imagegate_reviews_total", map[string]string{"endpoint": "mutate", "decision": decision}); got != n {
			t.Errorf("imagegate_reviews_total{endpoint=mutate,decision=%s} = %v, want %v", decision, got, n)
		}
	}
}

// Digest lookups count by result, every result's series from zero, and
// cache hits apart: a hit is not a lookup.
func TestDigestMetrics(t *testing.T) {
	t.Parallel()
	r := metrics.New()
	r.DigestLookup(metrics.DigestPinned, time.Millisecond)
	r.DigestLookup(metrics.DigestTimeout, 2*time.Second)
	r.DigestCacheHit()
	want := `
# HELP imagegate_digest_cache_hits_total Tags resolved from the digest cache (a digest, or a recent failure) without asking the registry.
# TYPE imagegate_digest_cache_hits_total counter
imagegate_digest_cache_hits_total 1
# HELP imagegate_digest_lookups_total Tags the mutating webhook asked a registry to resolve to a digest, by result (pinned, not-found, unauthorized, timeout, error); cache hits are not lookups.
# TYPE imagegate_digest_lookups_total counter
imagegate_digest_lookups_total{result="error"} 0
imagegate_digest_lookups_total{result="not-found"} 0
imagegate_digest_lookups_total{result="pinned"} 1
imagegate_digest_lookups_total{result="timeout"} 1
imagegate_digest_lookups_total{result="unauthorized"} 0
`
	if err := testutil.GatherAndCompare(r.Registry(), strings.NewReader(want), "imagegate_digest_cache_hits_total", "imagegate_digest_lookups_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(r.Registry(), "imagegate_digest_lookup_duration_seconds"); n != 1 {
		t.Errorf("got %d latency histograms, want 1", n)
	}
}

// counterValue returns the value of the series of name with exactly
// labels, failing the test when there is none.
func counterValue(t *testing.T, r *metrics.Recorder, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func TestCertificateMetrics(t *testing.T) {
	t.Parallel()
	r := metrics.New()
	notAfter := time.Unix(1900000000, 0)
	r.CertificateLoaded(metrics.CertServing, time.Unix(1800000000, 0))
	r.CertificateReloaded(metrics.CertServing, false, time.Time{})
	r.CertificateReloaded(metrics.CertServing, true, notAfter)
	want := `
# HELP imagegate_certificate_expiry_timestamp_seconds Unix time when the certificate in use expires, by certificate (for client-ca, the first CA of the bundle to expire).
# TYPE imagegate_certificate_expiry_timestamp_seconds gauge
imagegate_certificate_expiry_timestamp_seconds{certificate="serving"} 1.9e+09
# HELP imagegate_certificate_reload_failures_total Changed certificate files that could not be used, by certificate; the previous certificate stays in use.
# TYPE imagegate_certificate_reload_failures_total counter
imagegate_certificate_reload_failures_total{certificate="client-ca"} 0
imagegate_certificate_reload_failures_total{certificate="serving"} 1
# HELP imagegate_certificate_reloads_total Certificate files re-read because they changed, by certificate (serving, client-ca), successful or not.
# TYPE imagegate_certificate_reloads_total counter
imagegate_certificate_reloads_total{certificate="client-ca"} 0
imagegate_certificate_reloads_total{certificate="serving"} 2
`
	if err := testutil.GatherAndCompare(r.Registry(), strings.NewReader(want),
		"imagegate_certificate_expiry_timestamp_seconds", "imagegate_certificate_reload_failures_total", "imagegate_certificate_reloads_total"); err != nil {
		t.Error(err)
	}
}

// Every metric name follows the Prometheus conventions the issue names.
func TestMetricNamesFollowConventions(t *testing.T) {
	t.Parallel()
	families, err := metrics.New().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		name := mf.GetName()
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") {
			continue
		}
		if !strings.HasPrefix(name, "imagegate_") {
			t.Errorf("%s: want the imagegate_ prefix", name)
		}
		if mf.GetType().String() == "COUNTER" && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s: want a _total suffix", name)
		}
		if strings.Contains(name, "duration") && !strings.HasSuffix(name, "_seconds") {
			t.Errorf("%s: durations are in _seconds", name)
		}
	}
}
