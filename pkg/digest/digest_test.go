package digest_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/pkg/digest"
	"github.com/imagegate/imagegate/pkg/digest/digesttest"
	"github.com/imagegate/imagegate/pkg/metrics"
)

// clock is a settable clock for the cache.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newResolver(t *testing.T, tr *digesttest.Registry, o digest.Options) (*digest.Resolver, *clock) {
	t.Helper()
	c := &clock{now: time.Unix(1_800_000_000, 0)}
	o.CAFile, o.Now = tr.CAFile, c.Now
	r, err := digest.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return r, c
}

func outcome(err error) string {
	var de *digest.Error
	if errors.As(err, &de) {
		return de.Outcome
	}
	if err == nil {
		return metrics.DigestPinned
	}
	return "not a *digest.Error: " + err.Error()
}

func TestResolveTags(t *testing.T) {
	t.Parallel()
	tr := digesttest.NewWithAuth(t, "", "")
	single := tr.Push(t, "team/app:1.0")
	index, platform := tr.PushIndex(t, "team/multi:2.0")
	r, _ := newResolver(t, tr, digest.Options{})
	for _, tc := range []struct {
		name    string
		ref     string
		want    string // the digest; empty when the lookup fails
		outcome string
	}{
		{name: "a single-platform tag resolves to its manifest digest", ref: tr.Host() + "/team/app:1.0", want: single, outcome: metrics.DigestPinned},
		{name: "a multi-arch tag resolves to its index digest", ref: tr.Host() + "/team/multi:2.0", want: index, outcome: metrics.DigestPinned},
		{name: "a missing tag is not found", ref: tr.Host() + "/team/app:9.9", outcome: metrics.DigestNotFound},
		{name: "a missing repository is not found", ref: tr.Host() + "/team/nothing:1.0", outcome: metrics.DigestNotFound},
		{name: "a reference without a tag is an error", ref: tr.Host() + "/team/app@" + single, outcome: metrics.DigestError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := r.Resolve(t.Context(), tc.ref)
			if got != tc.want || outcome(err) != tc.outcome {
				t.Errorf("Resolve(%s) = %q, %v (%s); want %q, %s", tc.ref, got, err, outcome(err), tc.want, tc.outcome)
			}
			if got == platform {
				t.Errorf("Resolve(%s) = one platform's digest %s, want the index's", tc.ref, got)
			}
		})
	}
}

// Cached answers from the cache alone, as Resolve would from it (a digest,
// or a failure within the failure TTL), counts a hit as Resolve does, and
// never asks the registry: a miss, or an answer past its TTL, is not ok.
func TestCachedAnswersOnlyFromTheCache(t *testing.T) {
	t.Parallel()
	tr := digesttest.NewWithAuth(t, "", "")
	want := tr.Push(t, "team/app:1.0")
	rec := metrics.New()
	r, c := newResolver(t, tr, digest.Options{TTL: time.Minute, FailureTTL: 15 * time.Second, Metrics: rec})
	found, missing := tr.Host()+"/team/app:1.0", tr.Host()+"/team/app:9.9"
	type answer struct {
		digest  string
		ok      bool
		outcome string
	}
	cached := func(ref string) answer {
		d, ok, err := r.Cached(ref)
		return answer{d, ok, outcome(err)}
	}
	for _, step := range []struct {
		name  string
		do    func()  // what happens before the step asks the cache
		found answer  // Cached(found)
		miss  answer  // Cached(missing)
		asked int64   // manifest requests so far
		hits  float64 // cache hits counted so far
	}{
		{name: "before any lookup", do: func() {},
			found: answer{outcome: metrics.DigestPinned}, miss: answer{outcome: metrics.DigestPinned}},
		{name: "after a lookup of each", do: func() { _, _ = r.Resolve(t.Context(), found); _, _ = r.Resolve(t.Context(), missing) },
			found: answer{want, true, metrics.DigestPinned}, miss: answer{"", true, metrics.DigestNotFound}, asked: 2, hits: 2},
		{name: "past the failure TTL", do: func() { c.Add(15 * time.Second) },
			found: answer{want, true, metrics.DigestPinned}, miss: answer{outcome: metrics.DigestPinned}, asked: 2, hits: 3},
		{name: "past the TTL", do: func() { c.Add(time.Minute) },
			found: answer{outcome: metrics.DigestPinned}, miss: answer{outcome: metrics.DigestPinned}, asked: 2, hits: 3},
	} {
		step.do()
		if got := cached(found); got != step.found {
			t.Errorf("%s: Cached(%s) = %+v, want %+v", step.name, found, got, step.found)
		}
		if got := cached(missing); got != step.miss {
			t.Errorf("%s: Cached(%s) = %+v, want %+v", step.name, missing, got, step.miss)
		}
		if got := tr.Manifests.Load(); got != step.asked {
			t.Errorf("%s: got %d manifest requests, want %d", step.name, got, step.asked)
		}
		if got := counter(t, rec, "imagegate_digest_cache_hits_total", ""); got != step.hits {
			t.Errorf("%s: got %v cache hits, want %v", step.name, got, step.hits)
		}
	}
}

// A re-pushed tag is seen once the cached digest is older than the TTL,
// and not before: the cache is what keeps a busy cluster off the registry.
func TestResolveRepushedTagAfterTTL(t *testing.T) {
	t.Parallel()
	tr := digesttest.NewWithAuth(t, "", "")
	first := tr.Push(t, "team/app:1.0")
	r, c := newResolver(t, tr, digest.Options{TTL: time.Minute})
	ref := tr.Host() + "/team/app:1.0"
	resolve := func(step, want string) {
		t.Helper()
		if got, err := r.Resolve(t.Context(), ref); err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", step, got, err, want)
		}
	}
	resolve("first lookup", first)
	second := tr.Push(t, "team/app:1.0")
	resolve("within the TTL", first)
	c.Add(time.Minute)
	resolve("after the TTL", second)
	if got := tr.Manifests.Load(); got != 2 {
		t.Errorf("got %d manifest requests, want 2", got)
	}
}

// A 404 and a 401 are cached for the failure TTL only: a down or
// misconfigured registry is not asked again on every review, and is asked
// again soon.
func TestResolveCachesFailuresBriefly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		auth    bool // the registry requires credentials imagegate lacks
		outcome string
	}{
		{name: "a missing tag", outcome: metrics.DigestNotFound},
		{name: "an unauthorised lookup", auth: true, outcome: metrics.DigestUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var tr *digesttest.Registry
			if tc.auth {
				tr = digesttest.NewWithAuth(t, "robot", "s3cret")
				tr.Push(t, "team/app:1.0")
			} else {
				tr = digesttest.NewWithAuth(t, "", "")
			}
			rec := metrics.New()
			r, c := newResolver(t, tr, digest.Options{FailureTTL: 15 * time.Second, TTL: time.Hour, Metrics: rec})
			ref := tr.Host() + "/team/app:1.0"
			for i := range 3 {
				if _, err := r.Resolve(t.Context(), ref); outcome(err) != tc.outcome {
					t.Fatalf("lookup %d: got %v, want %s", i, err, tc.outcome)
				}
			}
			before := tr.Manifests.Load()
			c.Add(15 * time.Second)
			if _, err := r.Resolve(t.Context(), ref); outcome(err) != tc.outcome {
				t.Fatalf("after the failure TTL: got %v, want %s", err, tc.outcome)
			}
			if tr.Manifests.Load() == before && !tc.auth { // a 401 may stop before the manifest
				t.Error("after the failure TTL: the registry was not asked again")
			}
			if got := counter(t, rec, "imagegate_digest_lookups_total", tc.outcome); got != 2 {
				t.Errorf("got %v %s lookups, want 2 (the others from the cache)", got, tc.outcome)
			}
			if got := counter(t, rec, "imagegate_digest_cache_hits_total", ""); got != 2 {
				t.Errorf("got %v cache hits, want 2", got)
			}
		})
	}
}

// Credentials come from a Docker config.json, and a changed file is read
// again without a restart, as a Secret volume updates.
func TestResolveWithCredentialsFromConfigJSON(t *testing.T) {
	t.Parallel()
	tr := digesttest.NewWithAuth(t, "robot", "s3cret")
	want := tr.Push(t, "team/app:1.0")
	file := filepath.Join(t.TempDir(), "config.json")
	write := func(pass string) {
		t.Helper()
		auth := base64.StdEncoding.EncodeToString([]byte("robot:" + pass))
		cfg := fmt.Sprintf(`{"auths":{"https://%s":{"auth":%q}}}`, tr.Host(), auth)
		if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("wrong!")
	r, c := newResolver(t, tr, digest.Options{CredentialsFile: file, FailureTTL: time.Second})
	ref := tr.Host() + "/team/app:1.0"
	if _, err := r.Resolve(t.Context(), ref); outcome(err) != metrics.DigestUnauthorized {
		t.Fatalf("with the wrong password: got %v, want unauthorized", err)
	}
	write("s3cret") // another size, so seen whatever the file system's mtime resolution
	c.Add(time.Second)
	if got, err := r.Resolve(t.Context(), ref); err != nil || got != want {
		t.Errorf("with the right password: got %q, %v; want %q", got, err, want)
	}
}

// A registry that never answers costs one deadline: the lookup times out,
// and the caller learns why.
func TestResolveHangingRegistryTimesOut(t *testing.T) {
	t.Parallel()
	tr := digesttest.NewWithAuth(t, "", "")
	tr.Hanging.Store(true)
	r, _ := newResolver(t, tr, digest.Options{Timeout: 100 * time.Millisecond})
	_, err := r.Resolve(t.Context(), tr.Host()+"/team/app:1.0")
	if outcome(err) != metrics.DigestTimeout {
		t.Errorf("got %v, want a timeout", err)
	}
	// A review whose own deadline is shorter stops waiting then.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if _, err := r.Resolve(ctx, tr.Host()+"/team/other:1.0"); outcome(err) != metrics.DigestTimeout || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("with the review's deadline passed: got %v, want a timeout naming the deadline", err)
	}
}

// Concurrent reviews of one reference make one lookup.
func TestResolveConcurrentLookupsCollapse(t *testing.T) {
	t.Parallel()
	tr := digesttest.NewWithAuth(t, "", "")
	want := tr.Push(t, "team/app:1.0")
	r, _ := newResolver(t, tr, digest.Options{})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if got, err := r.Resolve(t.Context(), tr.Host()+"/team/app:1.0"); err != nil || got != want {
				t.Errorf("got %q, %v; want %q", got, err, want)
			}
		})
	}
	wg.Wait()
	if got := tr.Manifests.Load(); got != 1 {
		t.Errorf("got %d manifest requests for 50 concurrent lookups, want 1", got)
	}
}

// Plain HTTP is never used, even for a loopback registry that
// go-containerregistry would try over HTTP.
func TestResolveRefusesPlainHTTP(t *testing.T) {
	t.Parallel()
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	img, _ := random.Image(64, 1)
	tag, _ := name.NewTag(strings.TrimPrefix(reg.URL, "http://")+"/team/app:1.0", name.Insecure)
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	r, err := digest.New(digest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.Resolve(t.Context(), tag.String()); err == nil {
		t.Errorf("got %q over plain HTTP, want an error", got)
	}
}

func TestNewReportsUnreadableFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	notJSON := filepath.Join(dir, "config.json")
	for _, f := range []string{notPEM, notJSON} {
		if err := os.WriteFile(f, []byte("nonsense"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		opts digest.Options
		want string
	}{
		{name: "a CA file without a certificate", opts: digest.Options{CAFile: notPEM}, want: "--registry-ca-file"},
		{name: "a missing CA file", opts: digest.Options{CAFile: filepath.Join(dir, "none")}, want: "--registry-ca-file"},
		{name: "a credentials file that is not JSON", opts: digest.Options{CredentialsFile: notJSON}, want: "--registry-credentials"},
		{name: "a missing credentials file", opts: digest.Options{CredentialsFile: filepath.Join(dir, "none")}, want: "--registry-credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := digest.New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// counter returns a counter's value; result is the result label, or ""
// for a counter without labels.
func counter(t *testing.T, rec *metrics.Recorder, metric, result string) float64 {
	t.Helper()
	families, err := rec.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			if result == "" || len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{result=%q}", metric, result)
	return 0
}
