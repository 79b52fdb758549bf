package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagegate/imagegate/pkg/server"
)

// Scenarios of hostile reviews: each is still a genuine review, so each
// must get a 200 decision, in its own format, within the webhook timeout.

// maxDecision bounds a decision's reply. A reason capped as imagegate caps
// it ("… and N more") is a few kilobytes; one listing a thousand
// violations is a hundred times that.
const maxDecision = 64 << 10

// overLimitBytes is a body size above imagegate's hard limit (24 MiB, or
// server.MaxRequestBytes if that is larger).
var overLimitBytes = max(24<<20, server.MaxRequestBytes) + 1<<20

// hostile sends rv and checks its answer: a 200 decision with rv's
// verdict and uid, a bounded reply, within the webhook timeout. It returns
// the verdict and the reply's size; ok says it was a decision with the
// right verdict and uid (the other checks only record their failures).
func (t *target) hostile(c *http.Client, rv review, o *outcome) (v verdict, n int, ok bool) {
	ctx, cancel := context.WithTimeout(t.root, 30*time.Second)
	defer cancel()
	status, body, took, err := post(ctx, c, t.addr, rv)
	if err != nil {
		o.answer("error", took)
		o.fail("%s: no answer: %v", rv.name, err)
		return verdict{}, 0, false
	}
	o.answer(strconv.Itoa(status), took)
	if v, err = judge(rv, status, body); err != nil {
		o.fail("%s: %v", rv.name, err)
		return v, len(body), false
	}
	if took > webhookTimeout {
		o.fail("%s: answered in %s, after the webhook timeout (%s)", rv.name, took.Round(time.Millisecond), webhookTimeout)
	}
	if len(body) > maxDecision {
		o.fail("%s: a reply of %s: its reason is not bounded (want at most %s)", rv.name, size(len(body)), size(maxDecision))
	}
	return v, len(body), true
}

// rounds is how many times a scenario of a few reviews sends them: enough
// for the real apiserver's reviews to overlap them for a few seconds.
func (t *target) rounds() int {
	if t.short {
		return 5
	}
	return 20
}

// hugeImageReview: an ImageReview of 68,000 distinct allowed images and
// one of 40,000 refused ones. Both are over the image cap: denied, with a
// bounded reason.
func hugeImageReview(ctx context.Context, t *target, o *outcome) {
	reviews := []review{
		{name: "ImageReview of 68,000 allowed images", path: "/image-policy", body: imageReview(images("registry.my.com/", 0, 68_000), nil)},
		{name: "ImageReview of 40,000 refused images", path: "/image-policy", body: imageReview(images("evil.io/", 0, 40_000), nil)},
	}
	sendRounds(ctx, t, o, reviews, nil)
}

// escapedUpdate: an UPDATE of a Pod whose object and oldObject each carry
// 1.4 MiB of '<', which the apiserver's encoding/json writes as \u003c: 17
// MiB on the wire. The object adds evil.io/backdoor:1: denied, naming it;
// without it, allowed.
func escapedUpdate(ctx context.Context, t *target, o *outcome) {
	blob := strings.Repeat("<", 1400<<10)
	old := []string{"registry.my.com/app:1"}
	reviews := []review{
		{name: "escaped UPDATE adding evil.io/backdoor:1", path: "/validate", uid: "stress-escaped-1",
			body: podReview("stress-escaped-1", []string{"registry.my.com/app:1", "evil.io/backdoor:1"}, old, blob)},
		{name: "escaped UPDATE, clean", path: "/validate", uid: "stress-escaped-2", allowed: true,
			body: podReview("stress-escaped-2", []string{"registry.my.com/app:1", "registry.my.com/app:2"}, old, blob)},
	}
	sendRounds(ctx, t, o, reviews, func(rv review, v verdict) error {
		if !rv.allowed && !strings.Contains(v.reason, "evil.io") {
			return fmt.Errorf("the denial does not name evil.io: %q", clip([]byte(v.reason), 120))
		}
		return nil
	})
}

// overLimit: an AdmissionReview and an ImageReview above the hard limit,
// padded with an annotation: denied in their own format, the uid echoed.
// A body of that size that is no review may get a 4xx; it is reported.
func overLimit(ctx context.Context, t *target, o *outcome) {
	pad := strings.Repeat("a", overLimitBytes)
	reviews := []review{
		{name: fmt.Sprintf("AdmissionReview of %s", size(overLimitBytes)), path: "/validate", uid: "stress-uid-1",
			body: podReview("stress-uid-1", []string{"registry.my.com/app:1"}, nil, pad)},
		{name: fmt.Sprintf("ImageReview of %s", size(overLimitBytes)), path: "/image-policy",
			body: imageReview([]string{"registry.my.com/app:1"}, map[string]string{"stress.image-policy.k8s.io/pad": pad})},
	}
	sendRounds(ctx, t, o, reviews, nil)
	junk := review{path: "/validate", body: bytes.Repeat([]byte("x"), overLimitBytes)}
	rctx, cancel := context.WithTimeout(t.root, 30*time.Second)
	defer cancel()
	status, body, took, err := post(rctx, newClient(t.tls), t.addr, junk)
	switch {
	case err != nil:
		o.note("a %s body that is no review: no answer after %s: %v", size(overLimitBytes), ms(took), err)
	case status >= 500:
		o.fail("a %s body that is no review: HTTP %d", size(overLimitBytes), status)
	default:
		o.note("a %s body that is no review: HTTP %d after %s: %q", size(overLimitBytes), status, ms(took), clip(bytes.TrimSpace(body), 100))
	}
}

// sendRounds sends reviews, in turn, t.rounds() times; check, when set,
// adds a check of each decision. The first round's decisions are described.
func sendRounds(ctx context.Context, t *target, o *outcome, reviews []review, check func(review, verdict) error) {
	c := newClient(t.tls)
	defer c.CloseIdleConnections()
	for _, rv := range reviews {
		o.note("%s: body %s", rv.name, size(len(rv.body)))
	}
	for round := 0; round < t.rounds() && ctx.Err() == nil; round++ {
		for _, rv := range reviews {
			v, n, ok := t.hostile(c, rv, o)
			if ok && check != nil {
				if err := check(rv, v); err != nil {
					o.fail("%s: %v", rv.name, err)
				}
			}
			if round == 0 && ok {
				o.note("%s: allowed=%t, reply %s, reason %q", rv.name, v.allowed, size(n), clip([]byte(v.reason), 100))
			}
		}
	}
}

// imageCap is the most images a review may name and still be judged.
const imageCap = 1000

// manyViolations: 8 clients for the whole deadline, each sending
// ImageReviews of 1,000 distinct refused images (at the cap), every fifth
// of 1,001 (over it, so its denial must say so). No name repeats, so the
// decision cache is no help.
func manyViolations(ctx context.Context, t *target, o *outcome) {
	var next atomic.Int64
	var mu sync.Mutex
	largest := map[int]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			c := newClient(t.tls)
			defer c.CloseIdleConnections()
			for i := 0; i < 10_000 && ctx.Err() == nil; i++ {
				n := imageCap
				if i%5 == 4 {
					n++
				}
				first := int(next.Add(int64(n))) - n
				rv := review{name: fmt.Sprintf("ImageReview of %d refused images", n), path: "/image-policy",
					body: imageReview(images("evil.io/", first, n), nil)}
				v, replyBytes, ok := t.hostile(c, rv, o)
				if ok && n > imageCap && !mentionsCap(v.reason) {
					o.fail("%s: the denial does not say it is over the cap of %d: %q", rv.name, imageCap, clip([]byte(v.reason), 120))
				}
				mu.Lock()
				largest[n] = max(largest[n], replyBytes)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	o.note("largest reply: %s for %d images, %s for %d", size(largest[imageCap]), imageCap, size(largest[imageCap+1]), imageCap+1)
	o.note("distinct images sent: %d", next.Load())
}

// mentionsCap reports whether a reason names the cap or the count; image
// names are letters only, so a number comes from the reason itself.
func mentionsCap(reason string) bool {
	for _, s := range []string{"1000", "1,000", "1001", "1,001"} {
		if strings.Contains(reason, s) {
			return true
		}
	}
	return false
}

// Metric names, from pkg/metrics.
const (
	metricReloads        = "imagegate_policy_reloads_total"
	metricReloadFailures = "imagegate_policy_reload_failures_total"
)

// aliasBombReload: overwrite the served policy file (a temporary file,
// renamed over it, as editors and the kubelet do) with two YAML alias
// bombs. imagegate must survive, count each reload as failed and keep
// deciding with the policy it had: the real reviews tell.
func aliasBombReload(ctx context.Context, t *target, o *outcome) {
	for i, b := range []struct{ rules, registries int }{{1000, 1000}, {1500, 2000}} {
		bomb := aliasBomb(b.rules, b.registries)
		name := fmt.Sprintf("alias bomb %d (%s, %d rules × %d registries)", i+1, size(len(bomb)), b.rules, b.registries)
		failures, _, _ := t.metric(ctx, metricReloadFailures)
		reloads, _, _ := t.metric(ctx, metricReloads)
		begin := time.Now()
		if err := replace(t.policyFile, bomb); err != nil {
			o.fail("%s: %v", name, err)
			return
		}
		status, took := waitReload(ctx, t, failures, reloads)
		o.answer(status, took)
		switch status {
		case "reload failed":
			o.note("%s: reload failure counted after %s", name, ms(took))
		case "reloaded":
			o.fail("%s: loaded as the policy after %s", name, ms(took))
		default:
			o.fail("%s: no reload counted after %s", name, ms(time.Since(begin)))
		}
	}
	// A few more seconds of real reviews under whatever policy is left.
	select {
	case <-ctx.Done():
	case <-time.After(3 * time.Second):
	}
}

// waitReload polls the metrics until the reload counters move past
// failures and reloads, or ctx is done. imagegate counts the attempt
// before the failure, so attempts are read first and a success is only
// believed once failures still have not moved a moment later.
func waitReload(ctx context.Context, t *target, failures, reloads float64) (string, time.Duration) {
	begin := time.Now()
	for ctx.Err() == nil && t.alive() {
		r, _, err := t.metric(ctx, metricReloads)
		if err == nil && r > reloads {
			took := time.Since(begin)
			pause(ctx, 200*time.Millisecond)
			if f, _, err := t.metric(ctx, metricReloadFailures); err == nil && f > failures {
				return "reload failed", took
			}
			return "reloaded", took
		}
		pause(ctx, 20*time.Millisecond)
	}
	return "no reload", 0
}

// replace writes data to path atomically: a temporary file renamed over it.
func replace(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".policy-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
