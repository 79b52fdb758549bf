package server_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/digest"
	"github.com/imagegate/imagegate/pkg/digest/digesttest"
	"github.com/imagegate/imagegate/pkg/metrics"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/rewrite"
	"github.com/imagegate/imagegate/pkg/server"
)

// benchHandler is the whole router as Serve runs it, logging as production
// does (text, info level: one line per denial) into a writer that drops the
// lines: slog.DiscardHandler would skip formatting them, which production
// pays for.
func benchHandler(b *testing.B) http.Handler {
	b.Helper()
	p, err := policy.New(policy.Options{
		AllowedRegistries: []string{"registry.my.com", "quay.io/prometheus", "docker.io/library/busybox"},
		RejectLatest:      true,
		AllowBreakGlass:   true,
	})
	if err != nil {
		b.Fatal(err)
	}
	var active atomic.Pointer[policy.Policy]
	active.Store(p)
	log := slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return server.New(server.Options{Policy: &active, Log: log, RequestTimeout: 10 * time.Second}).Handler()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// imageReview renders an ImageReview exactly as the kube-apiserver's
// ImagePolicyWebhook plugin sends it.
func imageReview(annotations string, images ...string) []byte {
	var containers []string
	for _, img := range images {
		containers = append(containers, `{"image":"`+img+`"}`)
	}
	return []byte(`{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{"creationTimestamp":null},"spec":{"containers":[` +
		strings.Join(containers, ",") + `],"annotations":{` + annotations + `},"namespace":"team-a"},"status":{"allowed":false}}`)
}

// compactFile reads a JSON file and compacts it, as the apiserver sends it.
func compactFile(b *testing.B, name string) []byte {
	b.Helper()
	raw, err := os.ReadFile(name)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

type handlerCase struct {
	name        string
	path        string
	body        []byte
	wantAllowed bool
}

func imageReviewCases() []handlerCase {
	return []handlerCase{
		{"containers=1/allowed", server.PathImagePolicy, imageReview("", "registry.my.com/team-a/app:1.4.2"), true},
		{"containers=3/denied", server.PathImagePolicy, imageReview(`"ops.image-policy.k8s.io/owner":"team-a"`,
			"registry.my.com/team-a/app:1.4.2", "quay.io/prometheus/node-exporter:v1.7.0", "nginx:latest"), false},
		{"containers=3/break-glass", server.PathImagePolicy, imageReview(`"ops.image-policy.k8s.io/break-glass":"true","ops.image-policy.k8s.io/ticket":"INC-1234"`,
			"registry.my.com/team-a/app:1.4.2", "quay.io/prometheus/node-exporter:v1.7.0", "nginx:1.25"), true},
		{"containers=10/allowed", server.PathImagePolicy, imageReview("",
			"registry.my.com/team-a/app:1.4.2", "registry.my.com/platform/envoy:v1.31.2", "quay.io/prometheus/node-exporter:v1.7.0",
			"registry.my.com/platform/fluent-bit:3.1", "registry.my.com/platform/vault-agent:1.17", "busybox:1.36",
			"registry.my.com/team-a/worker:1.4.2", "registry.my.com/team-a/migrate:1.4.2", "registry.my.com/platform/otel:0.104",
			"registry.my.com/platform/oauth2-proxy:7.6"), true},
	}
}

func admissionReviewCases(b *testing.B) []handlerCase {
	return []handlerCase{
		// A Deployment as the apiserver sends it after defaulting, with
		// managedFields: 4 KiB, three images.
		{"deployment/allowed", server.PathValidate, compactFile(b, "testdata/bench/deployment-create.request.json"), true},
		{"deployment/denied", server.PathValidate, compactFile(b, "testdata/admission/denied-deployment-v1.request.json"), false},
	}
}

// runHandler measures one whole review in-process per iteration: routing,
// body read, decode, evaluate, log, encode.
func runHandler(b *testing.B, h http.Handler, tc handlerCase) {
	b.Run(tc.name, func(b *testing.B) {
		if rec := post(h, tc.path, "application/json", tc.body); rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), `"allowed":true`) != tc.wantAllowed {
			b.Fatalf("got %d %s, want 200 with allowed %v", rec.Code, rec.Body, tc.wantAllowed)
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(tc.body)))
		for b.Loop() {
			if rec := post(h, tc.path, "application/json", tc.body); rec.Code != http.StatusOK {
				b.Fatal(rec.Code)
			}
		}
	})
}

// BenchmarkImageReviewHandler measures the ImagePolicyWebhook endpoint.
func BenchmarkImageReviewHandler(b *testing.B) {
	h := benchHandler(b)
	for _, tc := range imageReviewCases() {
		runHandler(b, h, tc)
	}
}

// BenchmarkAdmissionReviewHandler measures the validating-webhook endpoint
// with Deployments.
func BenchmarkAdmissionReviewHandler(b *testing.B) {
	h := benchHandler(b)
	for _, tc := range admissionReviewCases(b) {
		runHandler(b, h, tc)
	}
}

// BenchmarkHandlerParallel sends the 3-container ImageReview and the
// Deployment from every CPU at once: what is shared between requests shows
// up here as contention.
func BenchmarkHandlerParallel(b *testing.B) {
	h := benchHandler(b)
	for _, tc := range []handlerCase{imageReviewCases()[1], admissionReviewCases(b)[0]} {
		b.Run(strings.ReplaceAll(tc.path, "/", "")+"/"+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.body)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if rec := post(h, tc.path, "application/json", tc.body); rec.Code != http.StatusOK {
						b.Error(rec.Code)
						return
					}
				}
			})
		})
	}
}

// BenchmarkHandlerNewGoroutine runs each review on a goroutine of its own,
// as the HTTP/2 server runs each stream: what the other benchmarks leave
// out is growing that goroutine's stack, which copies it, for the deepest
// call of the review.
func BenchmarkHandlerNewGoroutine(b *testing.B) {
	h := benchHandler(b)
	for _, tc := range []handlerCase{imageReviewCases()[0], imageReviewCases()[1], admissionReviewCases(b)[0]} {
		b.Run(strings.ReplaceAll(tc.path, "/", "")+"/"+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.body)))
			done := make(chan int)
			for b.Loop() {
				go func() { done <- post(h, tc.path, "application/json", tc.body).Code }()
				if code := <-done; code != http.StatusOK {
					b.Fatal(code)
				}
			}
		})
	}
}

// BenchmarkMutatePin measures /mutate on the 3-image Deployment with the
// real digest Resolver, every tag in its cache (warmed by one review
// against an in-process TLS registry). It fails if the registry is asked
// during a timed loop. Two pairs:
//
//   - pin=off and pin=on/cache-hit: the images as written, pinning off then
//     on. pin=off reads nothing (no rule would change the object), so this
//     pair is the whole cost of a pinned review: reading the object, the
//     patch, the annotation, three warnings and three log lines.
//   - mirror/pin=off and mirror/pin=on/cache-hit: every image rewritten to
//     a mirror, pinning off then on. Both read and patch the object, and
//     warn and log once per image, so the difference is pinning's own:
//     choosing the images to pin, the cached lookups, and the longer
//     values, warnings and log lines. mirror/paired measures it steadily.
func BenchmarkMutatePin(b *testing.B) {
	reg := digesttest.New(b)
	host := reg.Host()
	mirror := host + "/mirror"
	for _, repo := range []string{"shop/checkout-migrate:3.12.0", "shop/checkout:3.12.0", "platform/envoy:v1.31.2"} {
		reg.Push(b, repo)
		reg.Push(b, "mirror/"+repo)
	}
	rec := metrics.New()
	res, err := digest.New(digest.Options{CAFile: reg.CAFile, Metrics: rec})
	if err != nil {
		b.Fatal(err)
	}
	written := compactFile(b, "testdata/bench/deployment-create.request.json")
	direct := bytes.ReplaceAll(written, []byte("registry.my.com/"), []byte(host+"/"))
	logger := slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	handlers := map[string]http.Handler{}
	for _, bc := range []struct {
		name string
		// body is the review; its images are under host, or under
		// registry.my.com, which mirrors rewrite to host/mirror.
		body []byte
		// mirrors are the policy's rewrite rules.
		mirrors []rewrite.Rule
		pin     bool
		// rewritten and pinned are how many images the warm-up review
		// must rewrite and pin.
		rewritten, pinned int
	}{
		{name: "pin=off", body: direct},
		{name: "pin=on/cache-hit", body: direct, pin: true, pinned: 3},
		{name: "mirror/pin=off", body: written, mirrors: []rewrite.Rule{{From: "registry.my.com", To: mirror}}, rewritten: 3},
		{name: "mirror/pin=on/cache-hit", body: written, mirrors: []rewrite.Rule{{From: "registry.my.com", To: mirror}}, pin: true, rewritten: 3, pinned: 3},
	} {
		p, err := policy.Compile(policy.Spec{Default: policy.RuleOptions{
			Name: policy.DefaultRuleName, AllowedRegistries: []string{host}, RejectLatest: true, Rewrites: bc.mirrors, PinDigests: bc.pin,
		}})
		if err != nil {
			b.Fatal(err)
		}
		var active atomic.Pointer[policy.Policy]
		active.Store(p)
		h := server.New(server.Options{Policy: &active, Log: logger, Metrics: rec, RequestTimeout: 10 * time.Second, Resolver: res, PinTimeout: 3 * time.Second}).Handler()
		handlers[bc.name] = h
		b.Run(bc.name, func(b *testing.B) {
			var reply mutateReply
			if err := json.Unmarshal(post(h, server.PathMutate, "application/json", bc.body).Body.Bytes(), &reply); err != nil {
				b.Fatal(err)
			}
			rewritten := bytes.Count(reply.Response.Patch, []byte(`"`+mirror+`/`))
			pinned := bytes.Count(reply.Response.Patch, []byte("@sha256:"))
			if !reply.Response.Allowed || rewritten != bc.rewritten || pinned != bc.pinned {
				b.Fatalf("warm-up review: got %d rewritten and %d pinned images (allowed %v, warnings %q), want %d and %d",
					rewritten, pinned, reply.Response.Allowed, reply.Response.Warnings, bc.rewritten, bc.pinned)
			}
			before := reg.Manifests.Load()
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.body)))
			for b.Loop() {
				if rr := post(h, server.PathMutate, "application/json", bc.body); rr.Code != http.StatusOK {
					b.Fatal(rr.Code)
				}
			}
			if n := reg.Manifests.Load() - before; n != 0 {
				b.Fatalf("the registry was asked %d times in the timed loop, want 0 (every tag cached)", n)
			}
		})
	}
	// The mirrored pair again, the two reviews alternating in one loop, so
	// both see the same moments of a noisy machine: the difference of their
	// means, pin-µs/op, is pinning's own cost, far steadier than the
	// difference of two runs. The replies go to a sink, as a connection's
	// buffered writer takes them, rather than into a recorder's growing
	// copy, which would charge the longer reply twice.
	b.Run("mirror/paired", func(b *testing.B) {
		off, on := handlers["mirror/pin=off"], handlers["mirror/pin=on/cache-hit"]
		if off == nil || on == nil {
			b.Skip("run with the mirror cases")
		}
		before := reg.Manifests.Load()
		var tOff, tOn time.Duration
		for b.Loop() {
			t0 := time.Now()
			cOff := sinkPost(off, written)
			t1 := time.Now()
			cOn := sinkPost(on, written)
			tOff, tOn = tOff+t1.Sub(t0), tOn+time.Since(t1)
			if cOff != http.StatusOK || cOn != http.StatusOK {
				b.Fatal(cOff, cOn)
			}
		}
		if n := reg.Manifests.Load() - before; n != 0 {
			b.Fatalf("the registry was asked %d times in the timed loop, want 0 (every tag cached)", n)
		}
		perOp := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N) / 1e3 }
		b.ReportMetric(perOp(tOff), "off-µs/op")
		b.ReportMetric(perOp(tOn), "on-µs/op")
		b.ReportMetric(perOp(tOn-tOff), "pin-µs/op")
	})
}

// sink is a ResponseWriter that keeps the status alone.
type sink struct {
	h    http.Header
	code int
}

func (s *sink) Header() http.Header         { return s.h }
func (s *sink) Write(p []byte) (int, error) { return len(p), nil }
func (s *sink) WriteHeader(code int)        { s.code = code }

// sinkPost posts body to h's /mutate and returns the status, the reply
// going to a sink.
func sinkPost(h http.Handler, body []byte) int {
	req := httptest.NewRequest(http.MethodPost, server.PathMutate, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	w := &sink{h: http.Header{}, code: http.StatusOK}
	h.ServeHTTP(w, req)
	return w.code
}
