package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	godigest "github.com/opencontainers/go-digest"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/rewrite"
)

// AnnotationOriginalImages records, on a pod or on a workload's pod
// template (so the pods it makes carry it too), the images the mutating
// webhook rewrote: a JSON object from what used the image to the image as
// it was written, keys sorted, e.g.
//
//	imagegate.dev/original-images: '{"app":"nginx:1.25","volume/models":"models:v3"}'
//
// A container (init and ephemeral containers included, whose names are
// unique within a pod) is keyed by its name, an image volume by
// "volume/" and its name. Entries already there, on the object or on the
// old object of an UPDATE, are kept; an entry for the same key is replaced
// by the newer original.
const AnnotationOriginalImages = "imagegate.dev/original-images"

// volumeKeyPrefix keys image volumes in AnnotationOriginalImages; names of
// containers and volumes are DNS labels, which have no "/".
const volumeKeyPrefix = "volume/"

// subresourceEphemeralContainers is kubectl debug's subresource. The
// apiserver keeps only spec.ephemeralContainers from a write to it, so
// an annotation patched there would be dropped: none is added.
const subresourceEphemeralContainers = "ephemeralcontainers"

// Rewrite is one image the mutating webhook rewrote, or found a rule for
// but could not rewrite.
type Rewrite struct {
	// Image is what used the image and the reference as written.
	Image policy.Image
	// Path is the JSON pointer of the image field in the object.
	Path string
	// Result is what the rewrite rules made of it.
	Result rewrite.Result
	// Pinned is Result.Rewritten@digest when the image was also pinned (it
	// is then in Mutation.Pinned too, with Rewritten set).
	Pinned string

	index int // in the object's images
}

// Pin is one image the mutating webhook pinned to a digest, or tried to.
type Pin struct {
	// Image is what used the image and the reference as written.
	Image policy.Image
	// Path is the JSON pointer of the image field in the object.
	Path string
	// Ref is the reference pinned: as written, or as rewritten.
	Ref string
	// Pinned is Ref@digest; empty when the lookup failed, and Err says why.
	Pinned string
	Err    error
	// Rewritten says the image was rewritten before it was pinned: its
	// entry in Mutation.Rewritten has the same Pinned.
	Rewritten bool
}

// Resolver resolves a reference with a tag to the digest its registry
// serves ("sha256:…"); *digest.Resolver is one. An error leaves the image
// unpinned, and its text is shown to the user.
type Resolver interface {
	Resolve(ctx context.Context, ref string) (string, error)
}

// CachedResolver is a Resolver that can also answer from memory.
// *digest.Resolver is one. Cached returns what Resolve would answer for
// ref from its cache alone, with ok, or ok false when it holds no fresh
// answer; it must not block on I/O. A review whose tags are all cached is
// then answered on the caller's goroutine: only misses are looked up
// concurrently.
type CachedResolver interface {
	Resolver
	Cached(ref string) (digest string, ok bool, err error)
}

// ResolverFunc adapts a function to a Resolver.
type ResolverFunc func(ctx context.Context, ref string) (string, error)

// Resolve calls f.
func (f ResolverFunc) Resolve(ctx context.Context, ref string) (string, error) { return f(ctx, ref) }

// Mutation is what the mutating webhook did with one AdmissionReview, for
// the decision log and metrics.
type Mutation struct {
	// Input is the namespace and the images considered: every image of a
	// CREATE, the images an UPDATE adds.
	Input policy.Input
	// Kind and Name identify the object, for logs.
	Kind, Name string
	// RuleName is the policy rule whose rewrite rules applied; empty when none
	// was consulted.
	RuleName string
	// Rewritten lists the images rewritten (to a mirror, or a short name
	// to its qualified form), Failed those a rule matched
	// but whose rewrite would not be a valid reference (left alone).
	Rewritten, Failed []Rewrite
	// Pinned lists the images pinned to a digest, Unpinned those the
	// policy would pin whose lookup failed (left unpinned).
	Pinned, Unpinned []Pin
	// BreakGlass says the pod asked for break-glass, so nothing was
	// rewritten (see policy.RewritePlan.BreakGlass).
	BreakGlass bool
	// Unreadable says why the request could not be read (another kind,
	// an object that does not decode); it is then allowed unchanged.
	Unreadable error
}

// Patched reports whether the reply carries a patch.
func (m *Mutation) Patched() bool { return len(m.Rewritten) > 0 || len(m.Pinned) > 0 }

// patchOp is one JSONPatch (RFC 6902) operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// Mutate is [MutateWith] without a resolver: nothing is pinned.
func Mutate(p *policy.Policy, body []byte) (Mutation, Response, error) {
	return MutateWith(context.Background(), p, nil, body)
}

// MutateWith decodes body, an AdmissionReview of either version, and
// answers it for the mutating webhook: allowed, with a JSONPatch that
// rewrites the images the policy's rewrite rules match, writes out in full
// the short names of a rule that requires fully qualified references (see
// [policy.Policy.Rewrite]), pins to a digest, through res, the tagged
// images of a rule that pins digests (see [policy.Policy.Pins]), and
// records the originals in [AnnotationOriginalImages]. Nothing matched:
// allowed without a patch. Answers res has cached are taken at once (see
// [CachedResolver]); the other lookups run concurrently until ctx is done,
// and an image whose lookup fails or is not done by then is left
// unpinned, with a warning. A nil res pins nothing.
//
// The mutating webhook never refuses. A request it cannot read (another
// kind, an object that does not decode) is allowed unchanged with a
// warning, because refusing belongs to the validating path, which fails
// closed on the same request with the policy's reasons; imagegate's
// MutatingWebhookConfiguration also sends only the kinds it reads. DELETE
// and CONNECT pass. An UPDATE rewrites only the images the old object did
// not have, as the validating webhook judges only those, so relabelling a
// workload that predates the rewrite rules does not roll it out.
//
// An error means body is not an AdmissionReview and deserves a 400.
func MutateWith(ctx context.Context, p *policy.Policy, res Resolver, body []byte) (Mutation, Response, error) {
	review, objs, err := decodeReview(body)
	if err != nil {
		return Mutation{}, Response{}, err
	}
	m, patch := mutation(ctx, p, res, review.Request, objs)
	resp := &admissionv1.AdmissionResponse{Allowed: true, Warnings: mutationWarnings(&m)}
	if review.Request != nil {
		resp.UID = review.Request.UID
	}
	if len(patch) > 0 {
		pt := admissionv1.PatchTypeJSONPatch
		resp.PatchType, resp.Patch = &pt, patch
	}
	return m, Response{APIVersion: review.APIVersion, Kind: Kind, Response: resp}, nil
}

// MutateUnread answers, from the start of its body, a mutate review that
// imagegate could not read whole (see [Refuse]): allowed unchanged, with a
// warning, as any request the mutating webhook cannot read. ok is false
// when the start of the body is not an AdmissionReview's with a uid.
func MutateUnread(prefix []byte, why string) (Mutation, Response, bool) {
	review, ok := sniff(prefix)
	if !ok {
		return Mutation{}, Response{}, false
	}
	m := Mutation{Unreadable: errors.New(why)}
	m.Input.Namespace = review.Request.Namespace
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true, Warnings: mutationWarnings(&m)}
	return m, Response{APIVersion: review.APIVersion, Kind: Kind, Response: resp}, true
}

func mutation(ctx context.Context, p *policy.Policy, res Resolver, req *admissionv1.AdmissionRequest, objs requestObjects) (Mutation, []byte) {
	var m Mutation
	if res != nil && !p.HasPins() {
		res = nil
	}
	if req != nil {
		m.Input.Namespace, m.Kind, m.Name = req.Namespace, req.Kind.Kind, req.Name
		// Who asks decides whether break-glass would be honoured, and with
		// it whether the images are left as written.
		m.Input.User, m.Input.Groups = req.UserInfo.Username, req.UserInfo.Groups
		if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update || !p.HasRewrites() && res == nil {
			return m, nil // nothing to rewrite: skip reading the object
		}
	}
	r, _, err := readRequest(req, objs, "mutating webhook")
	switch {
	case err != nil:
		m.Unreadable = err
		return m, nil
	case len(r.images) > policy.MaxImages: // the validating path denies it whole
		m.Unreadable = fmt.Errorf("the request lists %d images, more than the %d imagegate reads in one review", len(r.images), policy.MaxImages)
		return m, nil
	case len(r.images) == 0:
		return m, nil
	}
	m.Input.Images, m.Input.Annotations = r.pod()
	plan := p.Rewrite(m.Input)
	m.RuleName, m.BreakGlass = plan.RuleName, plan.BreakGlass
	// values[i] is the path of image i and the value patched into it, the
	// value empty when it is left as written.
	values, changed := make([]struct{ path, value string }, len(r.images)), 0
	for i, res := range plan.Results {
		switch res.Status {
		case rewrite.StatusRewritten, rewrite.StatusQualified:
			path := r.images[i].pointer(r.prefix)
			m.Rewritten = append(m.Rewritten, Rewrite{Image: r.images[i].Image, Path: path, Result: res, index: i})
			values[i].path, values[i].value = path, res.Rewritten
			changed++
		case rewrite.StatusFailed:
			m.Failed = append(m.Failed, Rewrite{Image: r.images[i].Image, Path: r.images[i].pointer(r.prefix), Result: res})
		}
	}
	if res != nil {
		pins := p.Pins(m.Input, plan) // in the object's order, as m.Rewritten
		results := PinEach(ctx, res, pins)
		m.Pinned = results[:0] // filled in place: no copy per pin
		k := 0                 // m.Rewritten[k] is the first rewrite at or after image i
		for j, pin := range results {
			i := pins[j].Index
			for k < len(m.Rewritten) && m.Rewritten[k].index < i {
				k++
			}
			rewritten := k < len(m.Rewritten) && m.Rewritten[k].index == i
			pin.Image = r.images[i].Image
			if rewritten {
				pin.Path = m.Rewritten[k].Path // the same field's
			} else {
				pin.Path = r.images[i].pointer(r.prefix)
			}
			if pin.Err != nil {
				m.Unpinned = append(m.Unpinned, pin)
				continue
			}
			if rewritten {
				m.Rewritten[k].Pinned, pin.Rewritten = pin.Pinned, true
			} else {
				changed++
			}
			m.Pinned = append(m.Pinned, pin)
			values[i].path, values[i].value = pin.Path, pin.Pinned
		}
		if len(m.Pinned) == 0 {
			m.Pinned = nil
		}
	}
	if changed == 0 {
		return m, nil
	}
	ops := make([]patchOp, 0, changed+1)
	images := make([]policy.Image, 0, changed)
	for i, v := range values { // in the object's order
		if v.value != "" {
			ops = append(ops, patchOp{Op: "replace", Path: v.path, Value: v.value})
			images = append(images, r.images[i].Image)
		}
	}
	if req.SubResource != subresourceEphemeralContainers {
		ops = append(ops, originalsOp(r.tmpl, r.oldTmpl, r.prefix, images))
	}
	patch, err := json.Marshal(ops)
	if err != nil { // strings and maps of strings only
		m.Unreadable = fmt.Errorf("encode the patch: %w", err)
		m.Rewritten, m.Pinned = nil, nil
		return m, nil
	}
	return m, patch
}

// maxConcurrentLookups bounds the lookups one review, or one audit, runs
// at once.
const maxConcurrentLookups = 8

// fewRefs is how many references ResolveEach collapses by comparing them
// in turn; more take a map.
const fewRefs = 16

// PinEach pins each of pins, as the mutating webhook does, through res,
// and returns the outcome of each, pins[i]'s at i: Pinned is Ref@digest,
// or Err says why it could not be pinned (see ResolveEach for how the
// lookups are made). A digest is taken only if it is one that Ref@digest
// would carry as a valid reference (see checkDigest). Only Ref, Pinned
// and Err are set.
func PinEach(ctx context.Context, res Resolver, pins []policy.Pin) []Pin {
	if len(pins) == 0 {
		return nil
	}
	out := make([]Pin, len(pins))
	ResolveEach(ctx, res, len(pins), func(i int) string { return pins[i].Lookup }, func(i int, digest string, err error) {
		if err == nil {
			err = checkDigest(digest)
		}
		if err != nil {
			out[i] = Pin{Ref: pins[i].Ref, Err: err}
			return
		}
		out[i] = Pin{Ref: pins[i].Ref, Pinned: pins[i].Ref + "@" + digest}
	})
	return out
}

// ResolveEach asks res for the digest of each of n references, ref(i) the
// i-th, and passes each answer to answer, in order, once every lookup is
// done: each distinct reference is asked once, answers res has cached are
// taken at once (see [CachedResolver]), and only the others are looked up,
// concurrently when there are several (at most 8 at a time), until ctx is
// done. The mutating webhook pins with it, and `imagegate audit
// --pin-digests` asks what tags resolve to today.
func ResolveEach(ctx context.Context, res Resolver, n int, ref func(i int) string, answer func(i int, digest string, err error)) {
	type lookup struct {
		ref, digest string
		err         error
		done        bool
	}
	lookups := make([]lookup, 0, n)
	var few [fewRefs]int
	of := few[:0]           // ref(i)'s answer is lookups[of[i]]
	var seen map[string]int // reference -> lookup, for many references only
	if n > fewRefs {
		of, seen = make([]int, 0, n), make(map[string]int, n)
	}
	for i := range n {
		r := ref(i)
		j, ok := seen[r]
		if seen == nil {
			j = slices.IndexFunc(lookups, func(l lookup) bool { return l.ref == r })
			ok = j >= 0
		}
		if !ok {
			j = len(lookups)
			lookups = append(lookups, lookup{ref: r})
			if seen != nil {
				seen[r] = j
			}
		}
		of = append(of, j)
	}
	misses := len(lookups)
	if c, ok := res.(CachedResolver); ok {
		for k := range lookups {
			l := &lookups[k]
			if l.digest, l.done, l.err = c.Cached(l.ref); l.done {
				misses--
			}
		}
	}
	if misses > 0 {
		sem := make(chan struct{}, maxConcurrentLookups)
		ask := func(l *lookup) {
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
				l.digest, l.err = res.Resolve(ctx, l.ref)
			case <-ctx.Done():
				l.err = fmt.Errorf("the deadline passed before the registry was asked: %w", ctx.Err())
			}
		}
		var wg sync.WaitGroup
		for k := range lookups {
			switch l := &lookups[k]; {
			case l.done:
			case misses == 1: // nothing to wait for alongside it
				ask(l)
			default:
				wg.Go(func() { ask(l) })
			}
		}
		wg.Wait()
	}
	for i, j := range of {
		answer(i, lookups[j].digest, lookups[j].err)
	}
}

// checkDigest refuses a digest that would not make Ref@digest a valid
// reference carrying exactly that digest. Ref, a [policy.Pin]'s, parses as
// a reference with a tag and no digest, so Ref@digest is valid exactly
// when go-digest validates the digest (FuzzCheckDigest holds this to the
// full parse of Ref@digest, which costs each pinned image far more). What
// registries serve, sha256 and 64 lowercase hex digits, is checked here
// without go-digest's regular expression, a measurable part of pinning a
// cached tag.
func checkDigest(digest string) error {
	if hex, ok := strings.CutPrefix(digest, "sha256:"); ok && len(hex) == 64 && isLowerHex(hex) {
		return nil
	}
	if err := godigest.Digest(digest).Validate(); err != nil {
		return fmt.Errorf("the registry's digest %q does not make a valid reference: %w", digest, err)
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// originalsOp returns the operation that sets AnnotationOriginalImages on
// the template: the entries already on the old object, then those on the
// object, then the images rewritten or pinned now.
func originalsOp(tmpl, oldTmpl *leanTemplate, prefix string, changed []policy.Image) patchOp {
	originals := map[string]string{}
	for _, t := range []*leanTemplate{oldTmpl, tmpl} {
		if t == nil || t.Metadata == nil {
			continue
		}
		if v, ok := t.Metadata.Annotations[AnnotationOriginalImages]; ok {
			var earlier map[string]string
			if json.Unmarshal([]byte(v), &earlier) == nil { // not ours if it does not parse: replaced
				for k, img := range earlier {
					originals[k] = img
				}
			}
		}
	}
	for _, img := range changed {
		originals[originalsKey(img)] = img.Ref
	}
	value, _ := json.Marshal(originals) // sorted keys
	switch {
	case tmpl.Metadata == nil:
		return patchOp{Op: "add", Path: prefix + "/metadata", Value: map[string]any{"annotations": map[string]string{AnnotationOriginalImages: string(value)}}}
	case tmpl.Metadata.Annotations == nil:
		return patchOp{Op: "add", Path: prefix + "/metadata/annotations", Value: map[string]string{AnnotationOriginalImages: string(value)}}
	default:
		// "add" on an existing member replaces it (RFC 6902, 4.1).
		return patchOp{Op: "add", Path: prefix + "/metadata/annotations/" + escapePointer(AnnotationOriginalImages), Value: string(value)}
	}
}

func originalsKey(img policy.Image) string {
	if img.Source == SourceVolume {
		return volumeKeyPrefix + img.Container
	}
	return img.Container
}

// escapePointer escapes one JSON pointer reference token (RFC 6901).
func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// maxRewriteWarnings bounds the warnings of one reply, as for violations.
const maxRewriteWarnings = maxViolationWarnings

// mutationWarnings tells the user what was rewritten, what could not be,
// and why a request was not read, in kubectl's output.
func mutationWarnings(m *Mutation) []string {
	var out []string
	add := func(s string) {
		switch {
		case len(out) < maxRewriteWarnings:
			out = append(out, mutationWarning(s))
		case len(out) == maxRewriteWarnings:
			out = append(out, "imagegate: more rewrites are not shown; see the "+AnnotationOriginalImages+" annotation and imagegate's log")
		}
	}
	if m.Unreadable != nil {
		add("imagegate did not rewrite images: " + m.Unreadable.Error())
	}
	if m.BreakGlass {
		add("imagegate did not rewrite images to the mirror: the pod asks for break-glass, which keeps its images as written")
	}
	for i := range m.Rewritten {
		add(rewriteWarning(&m.Rewritten[i], m.RuleName))
	}
	for _, rw := range m.Failed {
		add(fmt.Sprintf("imagegate did not rewrite %s: rule %s matches, but %s", describeImage(rw.Image), rw.Result.Mirror, rw.Result.Reason))
	}
	for i := range m.Pinned {
		if !m.Pinned[i].Rewritten { // its rewrite's warning says so
			add(pinnedWarning(&m.Pinned[i], m.RuleName))
		}
	}
	for _, pin := range m.Unpinned {
		add(fmt.Sprintf("imagegate did not pin %s to a digest, so it runs by tag: %v", describeImage(pin.Image), pin.Err))
	}
	return out
}

func describeImage(img policy.Image) string {
	var b strings.Builder
	writeImage(&b, img)
	return b.String()
}

// writeImage writes what describeImage returns.
func writeImage(b *strings.Builder, img policy.Image) {
	source := img.Source
	if source == "" {
		source = "container"
	}
	b.WriteString(source)
	b.WriteByte(' ')
	writeQuoted(b, img.Container)
	b.WriteString(" image ")
	writeQuoted(b, img.Ref)
}

// mutationWarning is warningText(s), at once when that would change
// nothing: printable ASCII within the length bound, as the warnings of a
// review of references and names are. warningText's look-up per rune was
// a measurable part of a review whose tags were all cached.
func mutationWarning(s string) string {
	if len(s) > maxWarningBytes {
		return warningText(s)
	}
	for i := range len(s) {
		if c := s[i]; c < ' ' || c > '~' {
			return warningText(s)
		}
	}
	return s
}

// pinsWhy ends the warning of an image pinned: why it was.
const pinsWhy = " pins tags to the digest their registry serves"

// rewriteWarning is the warning for an image rewritten under rule, and
// pinned too when rw.Pinned is set (one warning, as one log line, per
// image). It and pinnedWarning are written into one buffer: a warning per
// image with fmt and a string per quoted part was a measurable part of a
// review whose tags were all cached (BenchmarkMutatePin).
func rewriteWarning(rw *Rewrite, rule string) string {
	res := &rw.Result
	to := res.Rewritten
	if rw.Pinned != "" {
		to = rw.Pinned
	}
	var b strings.Builder
	b.Grow(256 + len(rw.Image.Container) + len(rw.Image.Ref) + len(to) + len(rule) + len(res.Reason))
	b.WriteString("imagegate rewrote ")
	writeImage(&b, rw.Image)
	b.WriteString(" to ")
	writeQuoted(&b, to)
	namesRule := res.Status == rewrite.StatusQualified
	switch {
	case namesRule:
		b.WriteString(" (rule ")
		writeQuoted(&b, rule)
		b.WriteString(" requires fully qualified references")
	case res.Qualified != "":
		b.WriteString(" (qualified as " + res.Qualified + ", then mirror rule " + res.Mirror.String())
	default:
		b.WriteString(" (mirror rule " + res.Mirror.String())
	}
	switch {
	case rw.Pinned != "" && namesRule:
		b.WriteString(" and" + pinsWhy)
	case rw.Pinned != "":
		b.WriteString("; rule ")
		writeQuoted(&b, rule)
		b.WriteString(pinsWhy)
	}
	b.WriteByte(')')
	if namesRule && res.Reason != "" {
		b.WriteString("; mirror rule " + res.Mirror.String() + " matches, but " + res.Reason)
	}
	return b.String()
}

// pinnedWarning is the warning for an image pinned, and not rewritten,
// under rule.
func pinnedWarning(pin *Pin, rule string) string {
	var b strings.Builder
	b.Grow(64 + len(pin.Image.Container) + len(pin.Image.Ref) + len(pin.Pinned) + len(rule) + len(pinsWhy))
	b.WriteString("imagegate pinned ")
	writeImage(&b, pin.Image)
	b.WriteString(" to ")
	writeQuoted(&b, pin.Pinned)
	b.WriteString(" (rule ")
	writeQuoted(&b, rule)
	b.WriteString(pinsWhy + ")")
	return b.String()
}

// writeQuoted writes s as strconv.Quote (and %q) quotes it, without its
// per-rune table look-ups for printable ASCII with no quote or backslash,
// which it leaves as is: references and names, whose quoting was most of
// the cost of a pin's warning.
func writeQuoted(b *strings.Builder, s string) {
	for i := range len(s) {
		if c := s[i]; c < ' ' || c > '~' || c == '"' || c == '\\' {
			b.WriteString(strconv.Quote(s))
			return
		}
	}
	b.WriteByte('"')
	b.WriteString(s)
	b.WriteByte('"')
}
