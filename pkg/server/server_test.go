package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/certs"
	"github.com/imagegate/imagegate/pkg/config"
	"github.com/imagegate/imagegate/pkg/metrics"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/server"
	"github.com/imagegate/imagegate/pkg/server/servertest"
)

var update = flag.Bool("update", false, "rewrite the golden response files from the current output")

// testPolicy is the policy every golden file is judged under; it matches
// the README's quick start.
var testPolicy = policy.Options{AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true, AllowBreakGlass: true}

// fullyQualifiedPolicy also allows Docker Hub, but only written out in
// full; golden requests named *-require-fully-qualified are judged under it.
var fullyQualifiedPolicy = policy.Options{AllowedRegistries: []string{"registry.my.com", "docker.io"}, RejectLatest: true, AllowBreakGlass: true,
	RequireFullyQualified: true}

type fixture struct {
	srv    *server.Server
	rec    *metrics.Recorder
	certs  *certs.Reloader // nil unless the fixture serves TLS
	ca     *servertest.CA
	logs   *bytes.Buffer
	logW   *lockedWriter
	active *atomic.Pointer[policy.Policy]
}

// logged returns the logs so far, safe to call while the server logs.
func (f *fixture) logged() string {
	f.logW.mu.Lock()
	defer f.logW.mu.Unlock()
	return f.logs.String()
}

// newFixture serves policy opts without TLS, as handler tests need: no
// certificate files. edit changes the server's options.
func newFixture(t testing.TB, opts policy.Options, edit func(*server.Options)) *fixture {
	return buildFixture(t, opts, nil, edit)
}

// newTLSFixture also serves a throwaway certificate, for tests that
// listen; edit changes what the TLS material is.
func newTLSFixture(t testing.TB, edit func(*certs.Options)) *fixture {
	t.Helper()
	ca, certFile, keyFile := servertest.ServingPair(t, t.TempDir())
	tlsOpts := certs.Options{CertFile: certFile, KeyFile: keyFile}
	if edit != nil {
		edit(&tlsOpts)
	}
	f := buildFixture(t, testPolicy, &tlsOpts, nil)
	f.ca = ca
	return f
}

func buildFixture(t testing.TB, opts policy.Options, tlsOpts *certs.Options, edit func(*server.Options)) *fixture {
	t.Helper()
	p, err := policy.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{rec: metrics.New(), logs: &bytes.Buffer{}, active: &atomic.Pointer[policy.Policy]{}}
	f.active.Store(p)
	f.logW = &lockedWriter{w: f.logs}
	log := slog.New(slog.NewJSONHandler(f.logW, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o := server.Options{Policy: f.active, Log: log, Metrics: f.rec, RequestTimeout: 10 * time.Second, ShutdownTimeout: 25 * time.Second}
	if tlsOpts != nil {
		tlsOpts.Log, tlsOpts.Observer = log, f.rec
		if f.certs, err = certs.New(*tlsOpts); err != nil {
			t.Fatal(err)
		}
		o.TLS, o.ClientAuth, o.AllowedClientNames = f.certs, tlsOpts.ClientCAFile != "", tlsOpts.AllowedClientNames
	}
	if edit != nil {
		edit(&o)
	}
	f.srv = server.New(o)
	return f
}

// compileFile compiles the policy file at path as serve does.
func compileFile(t testing.TB, path string) (*policy.Policy, []string) {
	t.Helper()
	pc := config.DefaultPolicy()
	pc.File = path
	p, warnings, err := pc.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return p, warnings
}

// lockedWriter serialises writes from concurrent handlers in tests.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func post(h http.Handler, path, contentType string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestImageReviewGolden pins the whole reply for each request under
// testdata/imagereview and for each sample in examples/imagereview, byte
// for byte. Run `go test ./pkg/server -run Golden -update` to regenerate on
// purpose, then review the diff.
func TestImageReviewGolden(t *testing.T) {
	t.Parallel()
	h := newFixture(t, testPolicy, nil).srv.Handler()
	fq := newFixture(t, fullyQualifiedPolicy, nil).srv.Handler()
	requests, _ := filepath.Glob("testdata/imagereview/*.request.json")
	examples, _ := filepath.Glob("../../examples/imagereview/*.json")
	if len(requests) < 10 || len(examples) < 3 {
		t.Fatalf("found %d golden requests and %d examples, want the full set", len(requests), len(examples))
	}
	for _, reqFile := range append(requests, examples...) {
		golden := strings.TrimSuffix(reqFile, ".request.json") + ".response.json"
		if strings.Contains(reqFile, "examples") {
			golden = filepath.Join("testdata/examples", strings.TrimSuffix(filepath.Base(reqFile), ".json")+".response.json")
		}
		t.Run(filepath.Base(reqFile), func(t *testing.T) {
			t.Parallel()
			body, err := os.ReadFile(reqFile)
			if err != nil {
				t.Fatal(err)
			}
			h := h
			if strings.Contains(reqFile, "-require-fully-qualified") {
				h = fq
			}
			rec := post(h, server.PathImagePolicy+"?timeout=30s", "application/json", body)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d, want 200: %s", rec.Code, rec.Body)
			}
			got := checkGolden(t, rec, golden)
			// Whatever the name promises, the verdict must agree.
			allowed := strings.Contains(got.String(), `"allowed": true`)
			if name := filepath.Base(reqFile); strings.HasPrefix(name, "denied") == allowed {
				t.Errorf("%s answered allowed=%v", name, allowed)
			}
		})
	}
}

func TestImageReviewAliasPathAnswersTheSame(t *testing.T) {
	t.Parallel()
	h := newFixture(t, testPolicy, nil).srv.Handler()
	body, err := os.ReadFile("testdata/imagereview/denied-docker-hub-short-name.request.json")
	if err != nil {
		t.Fatal(err)
	}
	a := post(h, server.PathImagePolicy, "application/json", body)
	b := post(h, server.PathImagePolicyBouncer, "application/json", body)
	if a.Code != 200 || b.Code != 200 || a.Body.String() != b.Body.String() {
		t.Errorf("%s and %s differ: %d %s / %d %s", server.PathImagePolicy, server.PathImagePolicyBouncer, a.Code, a.Body, b.Code, b.Body)
	}
}

func TestImageReviewRejectsRequestsThatAreNotImageReviews(t *testing.T) {
	t.Parallel()
	h := newFixture(t, testPolicy, nil).srv.Handler()
	valid := `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"registry.my.com/x:1"}]}}`
	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		wantCode    int
		wantBody    string // substring of the error message
	}{
		{name: "malformed JSON", body: `{"apiVersion":`, wantCode: 400, wantBody: "decode ImageReview: unexpected EOF"},
		{name: "syntax error gives the offset", body: `{"apiVersion" "x"}`, wantCode: 400, wantBody: "at byte 15"},
		{name: "empty body", body: ``, wantCode: 400, wantBody: "empty body"},
		{name: "JSON that is not an object", body: `[1,2]`, wantCode: 400, wantBody: "cannot unmarshal array"},
		{name: "wrong field type", body: `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":"nginx"}}`, wantCode: 400, wantBody: "cannot unmarshal string"},
		{name: "trailing data", body: valid + `{}`, wantCode: 400, wantBody: "unexpected data after the JSON object"},
		{name: "unknown apiVersion", body: strings.Replace(valid, "v1alpha1", "v1", 1), wantCode: 400, wantBody: `got apiVersion "imagepolicy.k8s.io/v1" and kind "ImageReview"`},
		{name: "wrong kind", body: strings.Replace(valid, `"ImageReview"`, `"AdmissionReview"`, 1), wantCode: 400, wantBody: `kind "AdmissionReview"`},
		{name: "missing type", body: `{"spec":{"containers":[{"image":"x:1"}]}}`, wantCode: 400, wantBody: `got apiVersion "" and kind ""`},
		{name: "form content type", contentType: "application/x-www-form-urlencoded", body: valid, wantCode: 415, wantBody: "send application/json"},
		{name: "no content type", contentType: "-", body: valid, wantCode: 415, wantBody: "send application/json"},
		{name: "JSON with charset is fine", contentType: "application/json; charset=utf-8", body: valid, wantCode: 200, wantBody: `"allowed":true`},
		{name: "oversized body", body: `{"apiVersion":"` + strings.Repeat("x", server.MaxRequestBytes) + `"}`, wantCode: 413, wantBody: "larger than"},
		{name: "GET is not allowed", method: http.MethodGet, wantCode: 405, wantBody: "method GET is not allowed on /image-policy"},
		{name: "PUT is not allowed", method: http.MethodPut, body: valid, wantCode: 405},
		{name: "unknown path", path: "/validate-nothing", body: valid, wantCode: 404, wantBody: "reviews go to POST /image-policy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			method, path, ct := tc.method, tc.path, tc.contentType
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = server.PathImagePolicy
			}
			req := httptest.NewRequest(method, path, strings.NewReader(tc.body))
			switch ct {
			case "":
				req.Header.Set("Content-Type", "application/json")
			case "-":
			default:
				req.Header.Set("Content-Type", ct)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.wantCode {
				t.Errorf("status = %d, want %d (body %q)", rec.Code, tc.wantCode, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Errorf("body = %q, want it to contain %q", rec.Body, tc.wantBody)
			}
		})
	}
	// The server keeps serving after every bad request.
	if rec := post(h, server.PathImagePolicy, "application/json", []byte(valid)); rec.Code != 200 {
		t.Errorf("after bad requests, a valid review got %d", rec.Code)
	}
}

func TestHealthEndpoints(t *testing.T) {
	t.Parallel()
	h := newFixture(t, testPolicy, nil).srv.Handler()
	for _, path := range []string{server.PathHealthz, server.PathReadyz} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != 200 || rec.Body.String() != "ok\n" {
			t.Errorf("GET %s = %d %q, want 200 ok", path, rec.Code, rec.Body)
		}
	}
}

func TestDecisionLogging(t *testing.T) {
	t.Parallel()
	f := newFixture(t, testPolicy, nil)
	h := f.srv.Handler()
	body := []byte(`{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"namespace":"team-a","containers":[{"image":"prometheus:2.6.1"}],"annotations":{"ops.image-policy.k8s.io/break-glass":"true","ops.image-policy.k8s.io/ticket":"INC-9"}}}`)
	if rec := post(h, server.PathImagePolicy, "application/json", body); rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	var line map[string]any
	if err := json.Unmarshal(f.logs.Bytes(), &line); err != nil {
		t.Fatalf("want one JSON log line, got %q: %v", f.logs, err)
	}
	for key, want := range map[string]any{"level": "WARN", "msg": "review", "namespace": "team-a", "outcome": "break-glass", "ticket": "INC-9"} {
		if line[key] != want {
			t.Errorf("log %s = %v, want %v (line %v)", key, line[key], want, line)
		}
	}
	if strings.Contains(f.logs.String(), `"spec"`) {
		t.Errorf("the request body was logged: %s", f.logs)
	}
}

// serve starts the fixture on a loopback listener and returns its address
// and a function that stops it and returns Serve's error.
func (f *fixture) serve(t *testing.T) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(ctx, ln) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { _ = stop() })
	return ln.Addr().String(), stop
}

func client(tlsCfg *tls.Config) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
}

func TestServeOverTLS(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t, nil)
	addr, stop := f.serve(t)
	body := `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"prometheus:2.6.1"}]}}`

	resp, err := client(&tls.Config{RootCAs: f.ca.Pool(), MinVersion: tls.VersionTLS12}).Post("https://"+addr+server.PathImagePolicy, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST over TLS: %v", err)
	}
	got, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(got), `"allowed":false`) {
		t.Errorf("POST = %d %s, want a 200 denial", resp.StatusCode, got)
	}

	//nolint:gosec // an old client on purpose: it must be refused
	_, err = client(&tls.Config{RootCAs: f.ca.Pool(), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}).Get("https://" + addr + server.PathHealthz)
	if err == nil {
		t.Error("a TLS 1.1 client was served; want TLS 1.2 at least")
	}

	plain, err := http.Post("http://"+addr+server.PathImagePolicy, "application/json", strings.NewReader(body))
	if err == nil {
		defer plain.Body.Close()
		if plain.StatusCode == 200 {
			t.Error("plain HTTP was served a review")
		}
	}
	if err := stop(); err != nil {
		t.Errorf("Serve returned %v after shutdown, want nil", err)
	}
}

func TestServeRequiresClientCertificateWithClientCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clientCA := servertest.NewCA(t, dir, "apiserver")
	clientCert, clientKey := clientCA.Issue(t, dir, "kube-apiserver")
	otherCA := servertest.NewCA(t, dir, "other")
	otherCert, otherKey := otherCA.Issue(t, dir, "intruder")

	f := newTLSFixture(t, func(o *certs.Options) { o.ClientCAFile = clientCA.File })
	addr, _ := f.serve(t)
	url := "https://" + addr + server.PathHealthz
	load := func(cert, key string) []tls.Certificate {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{pair}
	}
	tests := []struct {
		name   string
		certs  []tls.Certificate
		wantOK bool
	}{
		{name: "no client certificate", certs: nil, wantOK: false},
		{name: "certificate from another CA", certs: load(otherCert, otherKey), wantOK: false},
		{name: "certificate from the client CA", certs: load(clientCert, clientKey), wantOK: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client(&tls.Config{RootCAs: f.ca.Pool(), Certificates: tc.certs, MinVersion: tls.VersionTLS12}).Get(url)
			if err == nil {
				_ = resp.Body.Close()
			}
			if (err == nil) != tc.wantOK {
				t.Errorf("GET with %s: err = %v, want ok=%v", tc.name, err, tc.wantOK)
			}
		})
	}
}

// A review whose body is still arriving when SIGTERM lands is answered in
// full before Serve returns.
func TestShutdownFinishesInFlightReviews(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t, nil)
	addr, stop := f.serve(t)
	held := holdReview(t, f, addr) // the handler is running, waiting for the body
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("Serve returned (%v) while a review was in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	held.finish(t)
	if err := <-stopped; err != nil {
		t.Errorf("Serve returned %v after a graceful shutdown", err)
	}
}
