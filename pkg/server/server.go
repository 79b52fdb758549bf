// Package server serves imagegate's webhooks over HTTPS: routing, TLS,
// request limits, decision logging and graceful shutdown. It translates
// nothing and decides nothing itself: the adapters (imagereview, admission)
// turn bodies into policy inputs and the policy decides.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/config"
	"github.com/imagegate/imagegate/pkg/imagereview"
	"github.com/imagegate/imagegate/pkg/policy"
)

// MaxRequestBytes bounds a review body. The apiserver's own request limit is
// 3 MiB, and a pod spec cannot grow an ImageReview beyond that.
const MaxRequestBytes = 3 << 20

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

// Server is an imagegate HTTPS server.
type Server struct {
	cfg    config.Config
	policy *atomic.Pointer[policy.Policy]
	log    *slog.Logger
	tls    *tls.Config
}

// New loads the TLS material named in cfg and returns a server that judges
// with whatever policy p holds at the time of each request.
func New(cfg config.Config, p *atomic.Pointer[policy.Policy], log *slog.Logger) (*Server, error) {
	tlsCfg, err := newTLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, policy: p, log: log, tls: tlsCfg}, nil
}

func newTLSConfig(cfg config.Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("load serving certificate %s and key %s: %w", cfg.TLSCertFile, cfg.TLSKeyFile, err)
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
	}
	if cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("load client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("load client CA %s: no PEM certificate found", cfg.ClientCAFile)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// Handler returns the router with every endpoint, without TLS, for tests
// and for Serve.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, fmt.Sprintf("no endpoint at %s; reviews go to POST %s (ImageReview) or POST %s (AdmissionReview)", r.URL.Path, PathImagePolicy, PathValidate), http.StatusNotFound)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path), http.StatusMethodNotAllowed)
	})
	imagePolicy := s.timeout(s.review("image-policy", func(p *policy.Policy, body []byte) (policy.Input, policy.Decision, any, error) {
		return imagereview.Review(p, body)
	}))
	r.Method(http.MethodPost, PathImagePolicy, imagePolicy)
	r.Method(http.MethodPost, PathImagePolicyBouncer, imagePolicy)
	validate := s.timeout(s.review("validate", func(p *policy.Policy, body []byte) (policy.Input, policy.Decision, any, error) {
		return admission.Review(p, body)
	}))
	r.Method(http.MethodPost, PathValidate, validate)
	r.Method(http.MethodPost, PathValidateBouncer, validate)
	r.Get(PathHealthz, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	r.Get(PathReadyz, s.readyz)
	return r
}

func (s *Server) timeout(h http.Handler) http.Handler {
	return http.TimeoutHandler(h, s.cfg.RequestTimeout, fmt.Sprintf("review not answered within --request-timeout=%s", s.cfg.RequestTimeout))
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.policy.Load() == nil {
		http.Error(w, "no policy loaded", http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// reviewFunc is an adapter: it decodes a body, judges it with the policy and
// returns what it judged, the decision and the reply to encode. An error
// means the body is not the kind of review the endpoint takes.
type reviewFunc func(p *policy.Policy, body []byte) (policy.Input, policy.Decision, any, error)

func (s *Server) review(endpoint string, fn reviewFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); !isJSON(ct) {
			s.reject(w, endpoint, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not supported: send application/json", ct))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				s.reject(w, endpoint, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", MaxRequestBytes))
				return
			}
			s.reject(w, endpoint, http.StatusBadRequest, fmt.Sprintf("read request body: %v", err))
			return
		}
		in, d, resp, err := fn(s.policy.Load(), body)
		if err != nil {
			s.reject(w, endpoint, http.StatusBadRequest, err.Error())
			return
		}
		s.logDecision(r.Context(), endpoint, in, &d)
		out, err := json.Marshal(resp)
		if err != nil { // the reply types hold only strings, bools and maps
			s.reject(w, endpoint, http.StatusInternalServerError, fmt.Sprintf("encode response: %v", err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	}
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

func (s *Server) reject(w http.ResponseWriter, endpoint string, code int, msg string) {
	s.log.Warn("rejected request", "endpoint", endpoint, "code", code, "err", msg)
	http.Error(w, msg, code)
}

// logDecision writes one line per decision: denials and warn-mode findings
// at info, break-glass at warn (it bypassed policy), clean allows at debug.
// Request bodies are never logged whole.
func (s *Server) logDecision(ctx context.Context, endpoint string, in policy.Input, d *policy.Decision) {
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
	images := make([]string, len(in.Images))
	for i, img := range in.Images {
		images[i] = img.Ref
	}
	attrs := []any{"endpoint", endpoint, "namespace", in.Namespace, "outcome", d.Outcome, "images", images}
	if len(d.Violations) > 0 {
		attrs = append(attrs, "violations", d.Summary())
	}
	if d.BreakGlass.Requested {
		attrs = append(attrs, "breakGlassKeys", d.BreakGlass.Keys, "ticket", d.BreakGlass.Ticket())
	}
	s.log.Log(ctx, level, "review", attrs...)
}

// ListenAndServe listens on the configured address and serves until ctx is
// done, then shuts down gracefully.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Address())
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Address(), err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves HTTPS on ln until ctx is done. On cancellation it stops
// accepting connections and lets in-flight reviews finish, for at most the
// configured shutdown timeout.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         s.tls,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       s.cfg.RequestTimeout,
		WriteTimeout:      s.cfg.RequestTimeout + 5*time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	s.log.Info("serving", "address", ln.Addr().String(), "clientAuth", s.cfg.ClientCAFile != "")
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "timeout", s.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
