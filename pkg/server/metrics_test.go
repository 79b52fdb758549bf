package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/server"
)

// serveMetrics starts the fixture's plain-HTTP metrics listener on loopback
// and returns its base URL.
func (f *fixture) serveMetrics(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.srv.ServeMetrics(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeMetrics returned %v after shutdown, want nil", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// breakGlass is the inside of an annotations object, for imageReview.
const breakGlass = `"ops.image-policy.k8s.io/break-glass":"true","ops.image-policy.k8s.io/ticket":"INC-9"`

// TestMetricsCountEveryReviewByEndpointDecisionAndRule sends reviews of
// every kind through the handler, then scrapes the metrics listener as
// Prometheus would.
func TestMetricsCountEveryReviewByEndpointDecisionAndRule(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t, nil)
	h := f.srv.Handler()
	base := f.serveMetrics(t)
	readFile := func(name string) []byte {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	reviews := []struct {
		path, contentType string
		body              []byte
		wantCode          int
	}{
		{server.PathImagePolicy, "application/json", imageReview("", "registry.my.com/app:1"), 200},                        // allowed
		{server.PathImagePolicy, "application/json", imageReview("", "registry.my.com/app:2", "registry.my.com/b:1"), 200}, // allowed
		{server.PathImagePolicy, "application/json", imageReview("", "prometheus:2.6.1"), 200},                             // denied: registry
		{server.PathImagePolicy, "application/json", imageReview("", "nginx"), 200},                                        // denied: registry, latest-tag
		{server.PathImagePolicy, "application/json", imageReview(breakGlass, "prometheus:2.6.1"), 200},                     // break-glass: registry
		{server.PathImagePolicy, "text/plain", imageReview("", "registry.my.com/app:1"), 415},                              // error
		{server.PathImagePolicyBouncer, "application/json", []byte(`{"apiVersion":`), 400},                                 // error, same endpoint
		{server.PathValidate, "application/json", readFile("../../examples/admission/deployment-allowed.json"), 200},       // allowed
		{server.PathValidate, "application/json", readFile("../../examples/admission/deployment-denied.json"), 200},        // denied: registry, latest-tag
		{server.PathValidateBouncer, "application/json", []byte(`{}`), 400},                                                // error
		{server.PathMutate, "application/json", readFile("../../examples/admission/deployment-denied.json"), 200},          // allowed: no rewrite rules
		{server.PathMutate, "text/plain", readFile("../../examples/admission/deployment-denied.json"), 415},                // error
	}
	for i, r := range reviews {
		if rec := post(h, r.path, r.contentType, r.body); rec.Code != r.wantCode {
			t.Fatalf("review %d to %s: status %d, want %d: %s", i, r.path, rec.Code, r.wantCode, rec.Body)
		}
	}
	// A warn-mode policy swapped in later is counted under "warned".
	warn := testPolicy
	warn.Mode = policy.ModeWarn
	p, err := policy.New(warn)
	if err != nil {
		t.Fatal(err)
	}
	f.active.Store(p)
	if rec := post(h, server.PathValidate, "application/json", readFile("../../examples/admission/deployment-denied.json")); rec.Code != 200 {
		t.Fatalf("warn-mode review: status %d", rec.Code)
	}

	want := `
# HELP imagegate_reviews_total Reviews answered, by endpoint (image-policy, validate, mutate) and decision (allowed, denied, break-glass, warned, error; mutate: mutated or allowed).
# TYPE imagegate_reviews_total counter
imagegate_reviews_total{decision="allowed",endpoint="mutate"} 1
imagegate_reviews_total{decision="error",endpoint="mutate"} 1
imagegate_reviews_total{decision="mutated",endpoint="mutate"} 0
imagegate_reviews_total{decision="allowed",endpoint="image-policy"} 2
imagegate_reviews_total{decision="break-glass",endpoint="image-policy"} 1
imagegate_reviews_total{decision="denied",endpoint="image-policy"} 2
imagegate_reviews_total{decision="error",endpoint="image-policy"} 2
imagegate_reviews_total{decision="warned",endpoint="image-policy"} 0
imagegate_reviews_total{decision="allowed",endpoint="validate"} 1
imagegate_reviews_total{decision="break-glass",endpoint="validate"} 0
imagegate_reviews_total{decision="denied",endpoint="validate"} 1
imagegate_reviews_total{decision="error",endpoint="validate"} 1
imagegate_reviews_total{decision="warned",endpoint="validate"} 1
# HELP imagegate_violations_total Policy violations found, by endpoint and rule, whatever the decision (denied, overridden by break-glass, or only warned).
# TYPE imagegate_violations_total counter
imagegate_violations_total{endpoint="image-policy",rule="denied-repository"} 0
imagegate_violations_total{endpoint="image-policy",rule="digest-required"} 0
imagegate_violations_total{endpoint="image-policy",rule="fully-qualified"} 0
imagegate_violations_total{endpoint="image-policy",rule="invalid-reference"} 0
imagegate_violations_total{endpoint="image-policy",rule="latest-tag"} 1
imagegate_violations_total{endpoint="image-policy",rule="no-images"} 0
imagegate_violations_total{endpoint="image-policy",rule="registry"} 3
imagegate_violations_total{endpoint="image-policy",rule="too-many-images"} 0
imagegate_violations_total{endpoint="image-policy",rule="unreadable-request"} 0
imagegate_violations_total{endpoint="validate",rule="denied-repository"} 0
imagegate_violations_total{endpoint="validate",rule="digest-required"} 0
imagegate_violations_total{endpoint="validate",rule="fully-qualified"} 0
imagegate_violations_total{endpoint="validate",rule="invalid-reference"} 0
imagegate_violations_total{endpoint="validate",rule="latest-tag"} 2
imagegate_violations_total{endpoint="validate",rule="no-images"} 0
imagegate_violations_total{endpoint="validate",rule="registry"} 2
imagegate_violations_total{endpoint="validate",rule="too-many-images"} 0
imagegate_violations_total{endpoint="validate",rule="unreadable-request"} 0
`
	if err := testutil.ScrapeAndCompare(base+server.PathMetrics, strings.NewReader(want), "imagegate_reviews_total", "imagegate_violations_total"); err != nil {
		t.Error(err)
	}

	// Every review, answered or not, is timed; the buckets resolve tens of
	// microseconds.
	body := scrape(t, base+server.PathMetrics)
	for _, line := range []string{
		`imagegate_review_duration_seconds_count{endpoint="image-policy"} 7`,
		`imagegate_review_duration_seconds_count{endpoint="validate"} 4`,
		`imagegate_review_duration_seconds_count{endpoint="mutate"} 2`,
		`imagegate_review_duration_seconds_bucket{endpoint="image-policy",le="5e-05"}`,
		`imagegate_review_duration_seconds_bucket{endpoint="image-policy",le="0.00025"}`,
		`imagegate_build_info{`,
		`go_goroutines `,
		`go_memstats_heap_alloc_bytes `,
		`process_resident_memory_bytes `,
		`imagegate_certificate_expiry_timestamp_seconds{certificate="serving"} `,
	} {
		if !strings.Contains(body, line) {
			t.Errorf("scrape has no line starting %q", line)
		}
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.DefaultClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

func TestMetricsPolicyInfoAndReloads(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testPolicy, nil)
	rec := f.rec
	rec.PolicyLoaded("aaaa")
	rec.PolicyReloaded(false, "")
	rec.PolicyReloaded(true, "bbbb")
	rec.PolicyReloaded(false, "")
	want := `
# HELP imagegate_policy_info Always 1; its hash label identifies the policy in force (the same hash as in decision logs).
# TYPE imagegate_policy_info gauge
imagegate_policy_info{hash="bbbb"} 1
# HELP imagegate_policy_reloads_total Policy reloads attempted, successful or not.
# TYPE imagegate_policy_reloads_total counter
imagegate_policy_reloads_total 3
# HELP imagegate_policy_reload_failures_total Policy reloads that failed; the previous policy stays in force.
# TYPE imagegate_policy_reload_failures_total counter
imagegate_policy_reload_failures_total 2
# HELP imagegate_policy_last_reload_successful 1 if the last policy load or reload succeeded, else 0.
# TYPE imagegate_policy_last_reload_successful gauge
imagegate_policy_last_reload_successful 0
`
	if err := testutil.ScrapeAndCompare(f.serveMetrics(t)+server.PathMetrics, strings.NewReader(want),
		"imagegate_policy_info", "imagegate_policy_reloads_total", "imagegate_policy_reload_failures_total", "imagegate_policy_last_reload_successful"); err != nil {
		t.Error(err)
	}
}

func TestDecisionLogCarriesThePolicyHash(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testPolicy, nil)
	if rec := post(f.srv.Handler(), server.PathImagePolicy, "application/json", imageReview("", "nginx:1.25")); rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	if want := `"policy":"` + f.active.Load().Hash() + `"`; !strings.Contains(f.logged(), want) {
		t.Errorf("decision log %s has no %s", f.logged(), want)
	}
}

// The metrics listener answers health probes too, and /readyz fails as soon
// as shutdown starts while the review listener drains.
func TestMetricsListenerHealthAndReadinessDuringShutdown(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t, nil)
	base := f.serveMetrics(t)
	for _, path := range []string{server.PathHealthz, server.PathReadyz} {
		if got := scrape(t, base+path); got != "ok\n" {
			t.Errorf("GET %s = %q, want ok", path, got)
		}
	}
	addr, stop := f.serve(t)
	// Hold a review in flight so shutdown has something to drain.
	conn := holdReview(t, f, addr)
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	deadline := time.After(30 * time.Second)
	for {
		resp, err := http.DefaultClient.Get(base + server.PathReadyz)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		select {
		case <-deadline:
			t.Fatal("/readyz never failed after shutdown started")
		case <-time.After(time.Millisecond):
		}
	}
	if got := scrape(t, base+server.PathHealthz); got != "ok\n" {
		t.Errorf("GET /healthz while draining = %q, want ok: the process is alive", got)
	}
	conn.finish(t)
	if err := <-stopped; err != nil {
		t.Errorf("Serve returned %v", err)
	}
}

// heldReview is a review the server has started handling but whose body
// it has not received yet.
type heldReview struct {
	conn *tls.Conn
	r    *bufio.Reader
	body string
}

// holdReview opens a TLS connection to addr and sends a review's headers
// with "Expect: 100-continue". The server answers "100 Continue" only once
// the handler reads the body, so when holdReview returns the review is in
// flight, without any sleep.
func holdReview(t *testing.T, f *fixture, addr string) *heldReview {
	t.Helper()
	body := string(imageReview("", "registry.my.com/app:1"))
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: f.ca.Pool(), MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", server.PathImagePolicy, len(body))
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("wait for 100 Continue: %v", err)
	}
	if resp.StatusCode != http.StatusContinue {
		t.Fatalf("got %d before the body was sent, want 100 Continue", resp.StatusCode)
	}
	return &heldReview{conn: conn, r: r, body: body}
}

// finish sends the body and checks the review is answered.
func (h *heldReview) finish(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(h.conn, h.body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(h.r, nil)
	if err != nil {
		t.Fatalf("read the in-flight review's answer: %v", err)
	}
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(got), `"allowed":true`) {
		t.Errorf("in-flight review got %d %q; want a 200 allow", resp.StatusCode, got)
	}
}
