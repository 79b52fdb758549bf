package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// webhookTimeout is the Webhook configurations' timeoutSeconds: an answer
// later than this is no answer to the apiserver.
const webhookTimeout = 5 * time.Second

// deploymentReviewFile is a genuine AdmissionReview of a Deployment, as the
// apiserver sends it (the Go benchmarks use it too).
const deploymentReviewFile = "pkg/server/testdata/bench/deployment-create.request.json"

// review is a request body and the verdict it must get.
type review struct {
	name    string
	path    string // endpoint: /image-policy or /validate
	body    []byte
	allowed bool
	uid     string // for an AdmissionReview, the uid its answer must echo
}

// realReviews are what the "real apiserver" sends during every flood: an
// ImageReview of a 3-container pod that is allowed, one that is denied for
// evil.io/backdoor:1, and a Deployment's AdmissionReview.
func realReviews() ([]review, error) {
	dep, err := os.ReadFile(deploymentReviewFile)
	if err != nil {
		return nil, fmt.Errorf("read the Deployment review (run from the repository root): %w", err)
	}
	var ar struct {
		Request struct {
			UID string `json:"uid"`
		} `json:"request"`
	}
	if err := json.Unmarshal(dep, &ar); err != nil {
		return nil, fmt.Errorf("%s: %w", deploymentReviewFile, err)
	}
	return []review{
		{name: "ImageReview allowed", path: "/image-policy", allowed: true, body: imageReview(
			[]string{"registry.my.com/shop/api:1.4.2", "registry.my.com/platform/envoy:v1.31.2", "registry.my.com/platform/fluent-bit:3.1.9"}, nil)},
		{name: "ImageReview denied", path: "/image-policy", allowed: false, body: imageReview(
			[]string{"registry.my.com/shop/api:1.4.2", "evil.io/backdoor:1", "registry.my.com/platform/envoy:v1.31.2"}, nil)},
		{name: "Deployment AdmissionReview", path: "/validate", allowed: true, body: dep, uid: ar.Request.UID},
	}, nil
}

// verdict is what a reply decided.
type verdict struct {
	allowed bool
	reason  string // status.reason, or response.status.message
	uid     string // response.uid of an AdmissionReview
}

// decide reads a reply as an ImageReview's or an AdmissionReview's answer.
// An error means the reply is not a decision.
func decide(body []byte) (verdict, error) {
	var r struct {
		Kind   string `json:"kind"`
		Status *struct {
			Allowed *bool  `json:"allowed"`
			Reason  string `json:"reason"`
		} `json:"status"`
		Response *struct {
			UID     string `json:"uid"`
			Allowed *bool  `json:"allowed"`
			Status  *struct {
				Message string `json:"message"`
			} `json:"status"`
		} `json:"response"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return verdict{}, fmt.Errorf("reply is not JSON: %q", clip(body, 80))
	}
	switch {
	case r.Kind == "ImageReview" && r.Status != nil && r.Status.Allowed != nil:
		return verdict{allowed: *r.Status.Allowed, reason: r.Status.Reason}, nil
	case r.Kind == "AdmissionReview" && r.Response != nil && r.Response.Allowed != nil:
		v := verdict{allowed: *r.Response.Allowed, uid: r.Response.UID}
		if r.Response.Status != nil {
			v.reason = r.Response.Status.Message
		}
		return v, nil
	}
	return verdict{}, fmt.Errorf("reply has no allowed field: %q", clip(body, 80))
}

// judge checks an answer against the verdict rv must get and returns it.
func judge(rv review, status int, body []byte) (verdict, error) {
	if status != http.StatusOK {
		return verdict{}, fmt.Errorf("HTTP %d: %q", status, clip(body, 80))
	}
	v, err := decide(body)
	switch {
	case err != nil:
		return v, err
	case v.allowed != rv.allowed:
		return v, fmt.Errorf("allowed=%t, want %t (%q)", v.allowed, rv.allowed, clip([]byte(v.reason), 80))
	case v.uid != rv.uid:
		return v, fmt.Errorf("uid %q, want %q echoed", v.uid, rv.uid)
	}
	return v, nil
}

func clip(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}

// newClient is an HTTP/2 client trusting the throwaway certificate, with
// connections of its own. Requests carry their own deadlines.
func newClient(conf *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: conf.Clone(), ForceAttemptHTTP2: true, DisableCompression: true,
		MaxResponseHeaderBytes: 64 << 10,
	}}
}

// maxReply bounds what is read of any reply, so an unbounded one is
// measured without taking this program's memory.
const maxReply = 64 << 20

// post sends one review and reads its reply.
func post(ctx context.Context, c *http.Client, addr string, rv review) (status int, body []byte, took time.Duration, err error) {
	begin := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+rv.path, bytes.NewReader(rv.body))
	if err != nil {
		return 0, nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, time.Since(begin), err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxReply))
	return resp.StatusCode, body, time.Since(begin), err
}

// apiserver plays the real apiserver during a flood: 20 genuine reviews a
// second, most over two HTTP/2 connections opened before the flood (the
// apiserver keeps its connections), one in ten over a fresh connection.
// Each is sent on schedule, whatever the earlier ones' fate, so a stalled
// server shows as late answers rather than fewer requests.
type apiserver struct {
	addr       string
	conf       *tls.Config
	reviews    []review
	persistent []*http.Client

	mu           sync.Mutex
	total, ok    int
	failures     []string
	times, fresh []time.Duration
	redials      atomic.Int64
	wg           sync.WaitGroup
}

// newAPIServer opens the persistent connections, with one review each.
func newAPIServer(ctx context.Context, addr string, conf *tls.Config, reviews []review) (*apiserver, error) {
	a := &apiserver{addr: addr, conf: conf, reviews: reviews}
	for i := range 2 {
		c := newClient(conf)
		ctx, cancel := context.WithTimeout(ctx, webhookTimeout)
		status, body, _, err := post(ctx, c, addr, reviews[i%len(reviews)])
		cancel()
		if err == nil {
			_, err = judge(reviews[i%len(reviews)], status, body)
		}
		if err != nil {
			return nil, fmt.Errorf("real review before the flood: %w", err)
		}
		a.persistent = append(a.persistent, c)
	}
	return a, nil
}

// run sends reviews until ctx is done, at most n of them, and waits for
// the answers (each bounded by the webhook timeout).
func (a *apiserver) run(ctx context.Context, n int) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for i := 0; i < n; i++ {
		select {
		case <-ctx.Done():
			a.wg.Wait()
			return
		case <-t.C:
		}
		a.wg.Go(func() { a.send(a.reviews[i%len(a.reviews)], i) })
	}
	a.wg.Wait()
}

func (a *apiserver) send(rv review, i int) {
	fresh := i%10 == 9
	c := a.persistent[i%len(a.persistent)]
	ctx, cancel := context.WithTimeout(context.Background(), webhookTimeout)
	defer cancel()
	if fresh {
		c = newClient(a.conf)
		defer c.CloseIdleConnections()
	} else {
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			if !info.Reused {
				a.redials.Add(1)
			}
		}})
	}
	status, body, took, err := post(ctx, c, a.addr, rv)
	if err == nil {
		_, err = judge(rv, status, body)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total++
	if err != nil {
		a.failures = append(a.failures, fmt.Sprintf("real %s (fresh connection: %t): %v", rv.name, fresh, err))
		return
	}
	a.ok++
	if fresh {
		a.fresh = append(a.fresh, took)
	} else {
		a.times = append(a.times, took)
	}
}

// summary says how the real reviews fared.
func (a *apiserver) summary() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return fmt.Sprintf("real reviews: persistent p50 %s max %s, fresh connection p50 %s max %s, persistent connections re-dialled %d times",
		ms(quantile(a.times, 0.5)), ms(quantile(a.times, 1)), ms(quantile(a.fresh, 0.5)), ms(quantile(a.fresh, 1)), a.redials.Load())
}
