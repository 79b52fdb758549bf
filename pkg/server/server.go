// Package server serves imagegate's webhooks over HTTPS: routing, TLS,
// request limits, decision logging and graceful shutdown. It translates
// nothing and decides nothing itself: the adapters (imagereview, admission)
// turn bodies into policy inputs and the policy decides.
package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/imagereview"
	"github.com/imagegate/imagegate/pkg/metrics"
	"github.com/imagegate/imagegate/pkg/policy"
)

// Paths the server answers on. /image_policy and / are kube-image-bouncer's
// paths for ImageReviews and AdmissionReviews, kept so imagegate is a drop-in
// replacement.
const (
	PathImagePolicy        = "/image-policy"
	PathImagePolicyBouncer = "/image_policy"
	PathValidate           = "/validate"
	PathValidateBouncer    = "/"
	PathHealthz            = "/healthz"
	PathReadyz             = "/readyz"
)

// PathMetrics is where the metrics listener serves Prometheus metrics.
const PathMetrics = "/metrics"

// PathPprof is where the metrics listener serves Go's profiles, with
// --enable-pprof: /debug/pprof/profile?seconds=30 for CPU, /debug/pprof/heap,
// /debug/pprof/allocs and the rest of net/http/pprof.
const PathPprof = "/debug"

// Server is an imagegate HTTPS server, with its plain-HTTP metrics and
// health listener.
type Server struct {
	opts   Options
	policy *atomic.Pointer[policy.Policy]
	log    *slog.Logger
	rec    *metrics.Recorder
	budget *bodyBudget
	// draining is set once shutdown starts, so /readyz sends the Service's
	// traffic to other replicas while in-flight reviews finish.
	draining atomic.Bool
}

// CertificateSource is the TLS material the server serves with, kept
// current while it serves; *certs.Reloader is one.
type CertificateSource interface {
	// TLSConfig is the listener's configuration.
	TLSConfig() *tls.Config
	// Certificate is the serving certificate in force; nil when none is.
	Certificate() *tls.Certificate
	// Start keeps the material current until ctx is done.
	Start(ctx context.Context)
}

// Options are what a Server needs: where its policy and certificates come
// from, where it reports, and the settings of its listeners.
type Options struct {
	// Policy holds the policy each review is judged with, read once per
	// review, so a reload swaps it between reviews.
	Policy *atomic.Pointer[policy.Policy]
	// TLS serves the review listener; a Server without it has a Handler
	// but cannot Serve.
	TLS CertificateSource
	// Log receives decisions, rejected requests and the listeners' news;
	// nil discards them.
	Log *slog.Logger
	// Metrics records the server's metrics, on a registry the caller may
	// share (policy reloads); nil makes one.
	Metrics *metrics.Recorder
	// Addr is the review listener's address and MetricsAddr the metrics
	// and health listener's (--metrics-listen); empty turns it off.
	Addr, MetricsAddr string
	// RequestTimeout bounds reading a review and writing its answer (zero:
	// only MaxBudgetWait bounds the wait for memory); ShutdownTimeout bounds
	// how long in-flight reviews may finish.
	RequestTimeout, ShutdownTimeout time.Duration
	// EnablePprof serves Go's profiles on the metrics listener.
	EnablePprof bool
	// Resolver resolves tags to digests for the policy rules that pin
	// digests (*digest.Resolver); nil pins nothing. PinTimeout bounds all
	// the lookups of one mutate review (--registry-review-timeout): keep it
	// below the webhook's timeoutSeconds, as an image not resolved by then
	// is left unpinned rather than the review left unanswered.
	Resolver   admission.Resolver
	PinTimeout time.Duration
	// ClientAuth and AllowedClientNames say what TLS asks of clients, for
	// the log.
	ClientAuth         bool
	AllowedClientNames []string
}

// New returns a server that judges with whatever o.Policy holds at the
// time of each request.
func New(o Options) *Server {
	s := &Server{opts: o, policy: o.Policy, log: o.Log, rec: o.Metrics, budget: newBodyBudget()}
	if s.rec == nil {
		s.rec = metrics.New()
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Handler returns the router with every endpoint, without TLS, for tests
// and for Serve.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, fmt.Sprintf("no endpoint at %s; reviews go to POST %s (ImageReview), POST %s (AdmissionReview) or POST %s (AdmissionReview, mutating)", r.URL.Path, PathImagePolicy, PathValidate, PathMutate), http.StatusNotFound)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path), http.StatusMethodNotAllowed)
	})
	// --request-timeout bounds reading a review (the server's ReadTimeout)
	// and writing its answer (WriteTimeout); in between a review does no
	// I/O (but /mutate's digest lookups, bounded by Options.PinTimeout),
	// only computation linear in a body of at most MaxRequestBytes and
	// at most policy.MaxImages images, so it runs on the connection's
	// goroutine. http.TimeoutHandler would start another goroutine per
	// review, grow its stack again for the JSON decoder and buffer the
	// reply: a third of the cost of a small review, to time out work that
	// cannot block.
	imagePolicy := s.review(metrics.EndpointImagePolicy, reviewImage, refuseImage)
	r.Method(http.MethodPost, PathImagePolicy, imagePolicy)
	r.Method(http.MethodPost, PathImagePolicyBouncer, imagePolicy)
	validate := s.review(metrics.EndpointValidate, reviewAdmission, refuseAdmission)
	r.Method(http.MethodPost, PathValidate, validate)
	r.Method(http.MethodPost, PathValidateBouncer, validate)
	r.Method(http.MethodPost, PathMutate, http.HandlerFunc(s.mutate))
	s.health(r)
	return r
}

// MetricsHandler returns the router of the plain-HTTP listener: /metrics,
// /healthz and /readyz. Kubelet probes go here, because they cannot present
// a client certificate to the HTTPS listener when --client-ca-file is set.
func (s *Server) MetricsHandler() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Method(http.MethodGet, PathMetrics, s.rec.Handler())
	s.health(r)
	if s.opts.EnablePprof {
		r.Mount(PathPprof, middleware.Profiler())
	}
	return r
}

func (s *Server) health(r chi.Router) {
	r.Get(PathHealthz, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	r.Get(PathReadyz, s.readyz)
}

// readyz says whether this replica should get reviews: a policy and a
// serving certificate are loaded (certs.New fails without the certificate,
// and a broken renewal keeps the old one) and it is not shutting down.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	switch {
	case s.policy.Load() == nil:
		http.Error(w, "no policy loaded", http.StatusServiceUnavailable)
	case s.opts.TLS != nil && s.opts.TLS.Certificate() == nil:
		http.Error(w, "no serving certificate loaded", http.StatusServiceUnavailable)
	case s.draining.Load():
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
	default:
		_, _ = io.WriteString(w, "ok\n")
	}
}

// reviewFunc is an adapter: it decodes a body, judges it with the policy and
// fills r with what it judged: the decision and the reply. An error means
// the body is not the kind of review the endpoint takes.
type reviewFunc func(p *policy.Policy, body []byte, r *reviewed) error

// reviewed is what a reviewFunc fills. It is filled through a pointer, not
// returned: each HTTP/2 stream runs on a new goroutine with a small stack,
// and every frame that holds its own copy of these ~350 bytes on the way
// up is stack that goroutine has to grow into, by copying what it has.
type reviewed struct {
	in    policy.Input
	d     policy.Decision
	reply any
}

func reviewImage(p *policy.Policy, body []byte, r *reviewed) (err error) {
	r.reply, err = imagereview.Review(p, body, &r.in, &r.d)
	return err
}

func reviewAdmission(p *policy.Policy, body []byte, r *reviewed) (err error) {
	r.reply, err = admission.Review(p, body, &r.in, &r.d)
	return err
}

// refuseFunc is an adapter's answer to a body that was not read whole:
// from its start, a denial in the review's own format. It fills r as a
// reviewFunc does, or returns false when the start is not that kind of
// review.
type refuseFunc func(p *policy.Policy, prefix []byte, why string, r *reviewed) bool

func refuseImage(p *policy.Policy, prefix []byte, why string, r *reviewed) (ok bool) {
	r.reply, ok = imagereview.Refuse(p, prefix, why, &r.d)
	return ok
}

func refuseAdmission(p *policy.Policy, prefix []byte, why string, r *reviewed) (ok bool) {
	r.reply, ok = admission.Refuse(p, prefix, why, &r.d)
	return ok
}

func (s *Server) review(endpoint string, fn reviewFunc, refuse refuseFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		b, err := s.readBody(w, r, endpoint, start)
		if b == nil {
			return
		}
		defer b.release()
		p := s.policy.Load()
		var res reviewed
		switch {
		case errors.Is(err, errTooLarge) || errors.Is(err, errOverloaded):
			if !refuse(p, b.Bytes(), err.Error(), &res) {
				s.unanswerable(w, endpoint, start, err)
				return
			}
		case r.Context().Err() != nil:
			s.rec.ReviewError(endpoint, time.Since(start)) // the caller has gone: nobody to answer
			return
		default:
			if err := fn(p, b.Bytes(), &res); err != nil {
				s.reject(w, endpoint, http.StatusBadRequest, err.Error())
				s.rec.ReviewError(endpoint, time.Since(start))
				return
			}
		}
		if !s.reply(w, endpoint, start, res.reply) {
			return
		}
		s.logDecision(r.Context(), endpoint, p, &res.in, &res.d)
		s.rec.Review(endpoint, &res.d, time.Since(start))
	}
}

// reply writes v, a review's reply, as JSON, straight from encoding/json's
// pooled buffer into w rather than through a copy of its own: the reply is
// a review's largest allocation. It returns false, having answered 500,
// when v does not encode, which the reply types (strings, bools, bytes and
// maps) never fail to: that would be imagegate's fault, not the request's.
func (s *Server) reply(w http.ResponseWriter, endpoint string, start time.Time, v any) bool {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil { // nothing is written on error
		w.Header().Del("Content-Type")
		s.reject(w, endpoint, http.StatusInternalServerError, fmt.Sprintf("encode response: %v", err))
		s.rec.ReviewError(endpoint, time.Since(start))
		return false
	}
	return true
}

// readBody reads a review's body under the budget; the caller releases
// it. A body that is not JSON, or whose reading failed for another reason
// than errTooLarge or errOverloaded, is answered here, and readBody returns
// nil. On those two errors what was read is the start of the body, and the
// rest has been read and dropped, so the caller can answer it.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, endpoint string, start time.Time) (*body, error) {
	if ct := r.Header.Get("Content-Type"); !isJSON(ct) {
		s.reject(w, endpoint, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not supported: send application/json", ct))
		s.rec.ReviewError(endpoint, time.Since(start))
		return nil, nil
	}
	wait := MaxBudgetWait
	if t := s.opts.RequestTimeout; t > 0 {
		wait = min(wait, t)
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	b, err := s.budget.read(ctx, r.Body, r.ContentLength)
	switch {
	case err == nil:
		return b, nil
	case errors.Is(err, errTooLarge) || errors.Is(err, errOverloaded):
		discard(r.Body, 4*MaxRequestBytes)
		return b, err
	}
	b.release()
	s.reject(w, endpoint, http.StatusBadRequest, fmt.Sprintf("read request body: %v", err))
	s.rec.ReviewError(endpoint, time.Since(start))
	return nil, err
}

// unanswerable answers a body not read whole whose start is not a review
// the endpoint could answer in its own format.
func (s *Server) unanswerable(w http.ResponseWriter, endpoint string, start time.Time, err error) {
	code := http.StatusRequestEntityTooLarge
	if errors.Is(err, errOverloaded) {
		code = http.StatusServiceUnavailable
	}
	s.reject(w, endpoint, code, err.Error()+"; and its start is not a review imagegate could answer")
	s.rec.ReviewError(endpoint, time.Since(start))
}

func isJSON(contentType string) bool {
	// What the apiserver sends, without ParseMediaType's map of parameters
	// and the deeper stack it takes, which a new review goroutine grows.
	if contentType == "application/json" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

func (s *Server) reject(w http.ResponseWriter, endpoint string, code int, msg string) {
	s.log.Warn("rejected request", "endpoint", endpoint, "code", code, "err", msg)
	http.Error(w, msg, code)
}

// logDecision writes one line per decision: denials and warn-mode findings
// at info, break-glass at warn (it bypassed policy), clean allows at debug.
// Request bodies are never logged whole. The policy hash matches the
// imagegate_policy_info metric's, so a line says which policy decided it.
func (s *Server) logDecision(ctx context.Context, endpoint string, p *policy.Policy, in *policy.Input, d *policy.Decision) {
	level := slog.LevelDebug
	switch d.Outcome {
	case policy.OutcomeDenied, policy.OutcomeWarned:
		level = slog.LevelInfo
	case policy.OutcomeBreakGlass:
		level = slog.LevelWarn
	}
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs := []any{"endpoint", endpoint, "namespace", in.Namespace, "outcome", d.Outcome, "images", capped(len(in.Images), func(i int) string { return in.Images[i].Ref })}
	if p != nil {
		attrs = append(attrs, "policy", p.Hash())
	}
	if len(d.Violations) > 0 {
		attrs = append(attrs, "violations", d.Summary())
	}
	if d.BreakGlass.Requested {
		attrs = append(attrs, "breakGlassKeys", capped(len(d.BreakGlass.Keys), func(i int) string { return d.BreakGlass.Keys[i] }), "ticket", d.BreakGlass.Ticket())
	}
	s.log.Log(ctx, level, "review", attrs...)
}

// maxLogged and maxLoggedRef bound the images and break-glass keys a log
// line lists; the decision's violations (already bounded) say what was
// wrong with them.
const (
	maxLogged    = 20
	maxLoggedRef = 300
)

// cutLogged cuts s, which may be what a request or a registry wrote, to
// maxLoggedRef bytes.
func cutLogged(s string) string {
	if len(s) <= maxLoggedRef {
		return s
	}
	return strings.ToValidUTF8(s[:maxLoggedRef], "") + "..."
}

// capped is what a log line lists of total strings, the i-th given by at:
// the first maxLogged, each cut to maxLoggedRef bytes, then a count of the
// rest.
func capped(total int, at func(int) string) strList {
	out := make(strList, 0, min(total, maxLogged+1))
	for i := range min(total, maxLogged) {
		out = append(out, cutLogged(at(i)))
	}
	if total > maxLogged {
		out = append(out, fmt.Sprintf("(and %d more)", total-maxLogged))
	}
	return out
}

// strList logs a list of strings exactly as slog logs a []string ([a b] in
// text, ["a","b"] in JSON) but without fmt's reflection, whose deep stack a
// review's goroutine would otherwise grow into for every line.
type strList []string

// MarshalText is what the text handler writes: fmt's %+v of a []string.
func (l strList) MarshalText() ([]byte, error) {
	n := 2 + len(l)
	for _, s := range l {
		n += len(s)
	}
	b := append(make([]byte, 0, n), '[')
	for i, s := range l {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, s...)
	}
	return append(b, ']'), nil
}

// MarshalJSON is what the JSON handler writes: the []string, its HTML
// characters unescaped as slog leaves them.
func (l strList) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode([]string(l)); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ListenAndServe listens on Addr for reviews and on MetricsAddr (unless
// empty) for metrics and health, and serves both until ctx is done. The
// metrics listener outlives the drain of the review listener, so probes
// and scrapes see the shutdown.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.opts.Addr, err)
	}
	if s.opts.MetricsAddr == "" {
		return s.Serve(ctx, ln)
	}
	mln, err := net.Listen("tcp", s.opts.MetricsAddr)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("listen on --metrics-listen %s: %w", s.opts.MetricsAddr, err)
	}
	mctx, stopMetrics := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	var merr error
	wg.Go(func() { merr = s.ServeMetrics(mctx, mln) })
	serveErr := s.Serve(ctx, ln)
	stopMetrics()
	wg.Wait()
	return errors.Join(serveErr, merr)
}

// Serve serves HTTPS on ln until ctx is done, keeping the certificates
// current. On cancellation it fails /readyz, stops accepting connections
// and lets in-flight reviews finish, for at most ShutdownTimeout.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.opts.TLS == nil {
		return errors.New("serve: no TLS certificate source")
	}
	limit := newConnLimit(ln, MaxConnections)
	srv := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         s.opts.TLS.TLSConfig(),
		ReadHeaderTimeout: 5 * time.Second, // the TLS handshake too
		ReadTimeout:       s.opts.RequestTimeout,
		WriteTimeout:      s.opts.RequestTimeout + 5*time.Second,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          MaxConcurrentStreams,
			MaxReceiveBufferPerConnection: MaxReceiveBuffer,
			MaxReceiveBufferPerStream:     MaxReceiveBuffer,
		},
		ConnState: limit.connState,
		ErrorLog:  log.New(errorLog{log: s.log, rec: s.rec}, "", 0),
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	s.opts.TLS.Start(watchCtx)
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(limit, "", "") }()
	s.log.Info("serving", "address", ln.Addr().String(), "clientAuth", s.opts.ClientAuth, "allowedClientNames", s.opts.AllowedClientNames)
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.draining.Store(true)
	s.log.Info("shutting down", "timeout", s.opts.ShutdownTimeout)
	return shutdown(srv, s.opts.ShutdownTimeout)
}

// ServeMetrics serves MetricsHandler over plain HTTP on ln until ctx is
// done.
func (s *Server) ServeMetrics(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.MetricsHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("serving metrics and health", "address", ln.Addr().String(), "paths", []string{PathMetrics, PathHealthz, PathReadyz})
	select {
	case err := <-errc:
		return fmt.Errorf("serve metrics: %w", err)
	case <-ctx.Done():
	}
	return shutdown(srv, 5*time.Second)
}

// errorLog receives net/http's own messages for the review listener: at
// debug, since most are a client going away, except that failed TLS
// handshakes (no client certificate, another CA, a scanner) are counted.
type errorLog struct {
	log *slog.Logger
	rec *metrics.Recorder
}

func (e errorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "TLS handshake error") {
		e.rec.TLSHandshakeFailed()
	}
	e.log.Debug(msg)
	return len(p), nil
}

func shutdown(srv *http.Server, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
