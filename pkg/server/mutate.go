package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/metrics"
	"github.com/imagegate/imagegate/pkg/policy"
)

// PathMutate is where the mutating admission webhook posts
// AdmissionReviews; imagegate answers with a JSONPatch that rewrites images
// to the mirrors of the policy's rewrite rules.
const PathMutate = "/mutate"

// mutate serves PathMutate. It reads the body under the same limits as the
// other reviews; what it answers comes from admission.MutateWith, which
// never refuses: the validating path does. Digest lookups are the one I/O
// a review may do, bounded by Options.PinTimeout.
func (s *Server) mutate(w http.ResponseWriter, r *http.Request) {
	const endpoint = metrics.EndpointMutate
	start := time.Now()
	b, err := s.readBody(w, r, endpoint, start)
	if b == nil {
		return
	}
	defer b.release()
	p := s.policy.Load()
	var m admission.Mutation
	var resp admission.Response
	switch {
	case errors.Is(err, errTooLarge) || errors.Is(err, errOverloaded):
		var ok bool
		if m, resp, ok = admission.MutateUnread(b.Bytes(), err.Error()); !ok {
			s.unanswerable(w, endpoint, start, err)
			return
		}
	case r.Context().Err() != nil:
		s.rec.ReviewError(endpoint, time.Since(start)) // the caller has gone: nobody to answer
		return
	default:
		ctx := r.Context()
		if s.opts.PinTimeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, s.opts.PinTimeout)
			defer cancel()
		}
		if m, resp, err = admission.MutateWith(ctx, p, s.opts.Resolver, b.Bytes()); err != nil {
			s.reject(w, endpoint, http.StatusBadRequest, err.Error())
			s.rec.ReviewError(endpoint, time.Since(start))
			return
		}
	}
	if !s.reply(w, endpoint, start, resp) {
		return
	}
	s.logMutation(r.Context(), p, &m)
	s.rec.Mutation(m.Patched(), len(m.Rewritten), len(m.Failed), time.Since(start))
}

// logMutation writes, at info, one line per image rewritten (with pinned=
// when it was pinned too) or only pinned, and one per image a rule matched
// but could not rewrite; at warn, one per image that could not be pinned
// and one for a request it could not read; at debug, one for a mutate
// review that changed nothing. An image rewritten then pinned gets one
// line, not two: a log line costs more than pinning a cached tag does.
func (s *Server) logMutation(ctx context.Context, p *policy.Policy, m *admission.Mutation) {
	// Every line is base and its own attributes, in one backing array
	// (slog copies what it logs), and attributes rather than key-value
	// pairs, which would box each string: a line per image is the mutating
	// webhook's commonest output.
	base := append(make([]slog.Attr, 0, 16), slog.String("endpoint", metrics.EndpointMutate), slog.String("namespace", m.Input.Namespace),
		slog.String("kind", m.Kind), slog.String("name", m.Name))
	if p != nil {
		base = append(base, slog.String("policy", p.Hash()))
	}
	log := func(level slog.Level, msg string, attrs ...slog.Attr) {
		s.log.LogAttrs(ctx, level, msg, append(base, attrs...)...)
	}
	if m.Unreadable != nil {
		log(slog.LevelWarn, "request not read; images not rewritten", slog.String("err", m.Unreadable.Error()))
		return
	}
	rule := slog.String("rule", m.RuleName)
	for _, rw := range m.Rewritten {
		attrs := []slog.Attr{rule, slog.String("source", source(rw.Image)), slog.String("container", rw.Image.Container), slog.String("image", rw.Image.Ref),
			slog.String("rewritten", rw.Result.Rewritten), slog.String("qualified", rw.Result.Qualified), slog.String("mirror", rw.Result.Mirror.String()), {}}
		if rw.Pinned != "" {
			attrs[len(attrs)-1] = slog.String("pinned", rw.Pinned)
		} else {
			attrs = attrs[:len(attrs)-1]
		}
		log(slog.LevelInfo, "image rewritten", attrs...)
	}
	for _, rw := range m.Failed {
		log(slog.LevelInfo, "image not rewritten", rule, slog.String("source", source(rw.Image)), slog.String("container", rw.Image.Container),
			slog.String("image", rw.Image.Ref), slog.String("mirror", rw.Result.Mirror.String()), slog.String("reason", rw.Result.Reason))
	}
	for _, pin := range m.Pinned {
		if pin.Rewritten { // its "image rewritten" line says pinned=
			continue
		}
		log(slog.LevelInfo, "image pinned", rule, slog.String("source", source(pin.Image)), slog.String("container", pin.Image.Container),
			slog.String("image", pin.Image.Ref), slog.String("pinned", pin.Pinned))
	}
	for _, pin := range m.Unpinned {
		log(slog.LevelWarn, "image not pinned", rule, slog.String("source", source(pin.Image)), slog.String("container", pin.Image.Container),
			slog.String("image", pin.Image.Ref), slog.String("ref", pin.Ref), slog.String("err", cutLogged(pin.Err.Error())))
	}
	if len(m.Rewritten) == 0 && len(m.Failed) == 0 && len(m.Pinned) == 0 && len(m.Unpinned) == 0 && s.log.Enabled(ctx, slog.LevelDebug) {
		images := capped(len(m.Input.Images), func(i int) string { return m.Input.Images[i].Ref })
		log(slog.LevelDebug, "nothing to rewrite", slog.Any("images", images), slog.Bool("breakGlass", m.BreakGlass))
	}
}

func source(img policy.Image) string {
	if img.Source == "" {
		return "container"
	}
	return img.Source
}
