package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	out, err := json.Marshal(resp)
	if err != nil { // the reply holds only strings, bools and bytes
		s.reject(w, endpoint, http.StatusInternalServerError, fmt.Sprintf("encode response: %v", err))
		s.rec.ReviewError(endpoint, time.Since(start))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
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
	// Every line is base and its own fields, in one backing array: slog
	// copies what it logs, and a line per image is the mutating webhook's
	// commonest output.
	base := append(make([]any, 0, 32), "endpoint", metrics.EndpointMutate, "namespace", m.Input.Namespace, "kind", m.Kind, "name", m.Name)
	if p != nil {
		base = append(base, "policy", p.Hash())
	}
	line := func(fields ...any) []any { return append(base, fields...) }
	if m.Unreadable != nil {
		s.log.Warn("request not read; images not rewritten", line("err", m.Unreadable.Error())...)
		return
	}
	for _, rw := range m.Rewritten {
		args := line("rule", m.RuleName, "source", source(rw.Image), "container", rw.Image.Container,
			"image", rw.Image.Ref, "rewritten", rw.Result.Rewritten, "qualified", rw.Result.Qualified, "mirror", rw.Result.Mirror.String())
		if rw.Pinned != "" {
			args = append(args, "pinned", rw.Pinned)
		}
		s.log.Info("image rewritten", args...)
	}
	for _, rw := range m.Failed {
		s.log.Info("image not rewritten", line("rule", m.RuleName, "source", source(rw.Image), "container", rw.Image.Container,
			"image", rw.Image.Ref, "mirror", rw.Result.Mirror.String(), "reason", rw.Result.Reason)...)
	}
	for _, pin := range m.Pinned {
		if pin.Rewritten { // its "image rewritten" line says pinned=
			continue
		}
		s.log.Info("image pinned", line("rule", m.RuleName, "source", source(pin.Image), "container", pin.Image.Container,
			"image", pin.Image.Ref, "pinned", pin.Pinned)...)
	}
	for _, pin := range m.Unpinned {
		s.log.Warn("image not pinned", line("rule", m.RuleName, "source", source(pin.Image), "container", pin.Image.Container,
			"image", pin.Image.Ref, "ref", pin.Ref, "err", cutLogged(pin.Err.Error()))...)
	}
	if len(m.Rewritten) == 0 && len(m.Failed) == 0 && len(m.Pinned) == 0 && len(m.Unpinned) == 0 && s.log.Enabled(ctx, slog.LevelDebug) {
		images := capped(len(m.Input.Images), func(i int) string { return m.Input.Images[i].Ref })
		s.log.Debug("nothing to rewrite", line("images", images, "breakGlass", m.BreakGlass)...)
	}
}

func source(img policy.Image) string {
	if img.Source == "" {
		return "container"
	}
	return img.Source
}
