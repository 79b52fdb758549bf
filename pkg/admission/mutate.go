package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/distribution/reference"
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
}

// Resolver resolves a reference with a tag to the digest its registry
// serves ("sha256:…"); *digest.Resolver is one. An error leaves the image
// unpinned, and its text is shown to the user.
type Resolver interface {
	Resolve(ctx context.Context, ref string) (string, error)
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
// allowed without a patch. The lookups run concurrently until ctx is done;
// an image whose lookup fails or is not done by then is left unpinned,
// with a warning. A nil res pins nothing.
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
	values := make(map[int]string) // image index -> the value patched in
	for i, res := range plan.Results {
		switch res.Status {
		case rewrite.StatusRewritten, rewrite.StatusQualified:
			m.Rewritten = append(m.Rewritten, Rewrite{Image: r.images[i].Image, Path: r.images[i].pointer(r.prefix), Result: res})
			values[i] = res.Rewritten
		case rewrite.StatusFailed:
			m.Failed = append(m.Failed, Rewrite{Image: r.images[i].Image, Path: r.images[i].pointer(r.prefix), Result: res})
		}
	}
	if res != nil {
		pins := pinAll(ctx, res, p.Pins(m.Input, plan))
		for i := range r.images { // in the object's order
			pin, ok := pins[i]
			if !ok {
				continue
			}
			pin.Image, pin.Path = r.images[i].Image, r.images[i].pointer(r.prefix)
			if pin.Err != nil {
				m.Unpinned = append(m.Unpinned, pin)
				continue
			}
			m.Pinned = append(m.Pinned, pin)
			values[i] = pin.Pinned
		}
	}
	if len(values) == 0 {
		return m, nil
	}
	ops := make([]patchOp, 0, len(values)+1)
	changed := make([]policy.Image, 0, len(values))
	for i := range r.images { // in the object's order
		if v, ok := values[i]; ok {
			ops = append(ops, patchOp{Op: "replace", Path: r.images[i].pointer(r.prefix), Value: v})
			changed = append(changed, r.images[i].Image)
		}
	}
	if req.SubResource != subresourceEphemeralContainers {
		ops = append(ops, originalsOp(r.tmpl, r.oldTmpl, r.prefix, changed))
	}
	patch, err := json.Marshal(ops)
	if err != nil { // strings and maps of strings only
		m.Unreadable = fmt.Errorf("encode the patch: %w", err)
		m.Rewritten, m.Pinned = nil, nil
		return m, nil
	}
	return m, patch
}

// maxConcurrentLookups bounds the lookups one review runs at once.
const maxConcurrentLookups = 8

// pinAll resolves each pin's lookup once, concurrently, and returns the
// outcome by image index. A digest is taken only if Ref@digest parses
// back with exactly that digest.
func pinAll(ctx context.Context, res Resolver, pins []policy.Pin) map[int]Pin {
	type answer struct {
		digest string
		err    error
	}
	answers := map[string]*answer{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxConcurrentLookups)
	for _, pin := range pins {
		if _, ok := answers[pin.Lookup]; ok {
			continue
		}
		a := &answer{}
		answers[pin.Lookup] = a
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
				a.digest, a.err = res.Resolve(ctx, pin.Lookup)
			case <-ctx.Done():
				a.err = fmt.Errorf("the review's deadline passed before the registry was asked: %w", ctx.Err())
			}
		})
	}
	wg.Wait()
	out := make(map[int]Pin, len(pins))
	for _, pin := range pins {
		a := answers[pin.Lookup]
		err := a.err
		if err == nil {
			err = checkPinned(pin.Ref, a.digest)
		}
		if err != nil {
			out[pin.Index] = Pin{Ref: pin.Ref, Err: err}
			continue
		}
		out[pin.Index] = Pin{Ref: pin.Ref, Pinned: pin.Ref + "@" + a.digest}
	}
	return out
}

func checkPinned(ref, digest string) error {
	named, err := reference.ParseNormalizedNamed(ref + "@" + digest)
	if err != nil {
		return fmt.Errorf("the registry's digest %q does not make a valid reference: %w", digest, err)
	}
	if d, ok := named.(reference.Digested); !ok || d.Digest().String() != digest {
		return fmt.Errorf("the registry's digest %q does not make a valid reference", digest)
	}
	return nil
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
			out = append(out, warningText(s))
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
	for _, rw := range m.Rewritten {
		res := rw.Result
		switch {
		case res.Status == rewrite.StatusQualified && res.Reason != "":
			add(fmt.Sprintf("imagegate rewrote %s to %q (rule %q requires fully qualified references); mirror rule %s matches, but %s",
				describeImage(rw.Image), res.Rewritten, m.RuleName, res.Mirror, res.Reason))
		case res.Status == rewrite.StatusQualified:
			add(fmt.Sprintf("imagegate rewrote %s to %q (rule %q requires fully qualified references)", describeImage(rw.Image), res.Rewritten, m.RuleName))
		case res.Qualified != "":
			add(fmt.Sprintf("imagegate rewrote %s to %q (qualified as %s, then mirror rule %s)", describeImage(rw.Image), res.Rewritten, res.Qualified, res.Mirror))
		default:
			add(fmt.Sprintf("imagegate rewrote %s to %q (mirror rule %s)", describeImage(rw.Image), res.Rewritten, res.Mirror))
		}
	}
	for _, rw := range m.Failed {
		add(fmt.Sprintf("imagegate did not rewrite %s: rule %s matches, but %s", describeImage(rw.Image), rw.Result.Mirror, rw.Result.Reason))
	}
	for _, pin := range m.Pinned {
		add(fmt.Sprintf("imagegate pinned %s to %q (rule %q pins tags to the digest their registry serves)", describeImage(pin.Image), pin.Pinned, m.RuleName))
	}
	for _, pin := range m.Unpinned {
		add(fmt.Sprintf("imagegate did not pin %s to a digest, so it runs by tag: %v", describeImage(pin.Image), pin.Err))
	}
	return out
}

func describeImage(img policy.Image) string {
	source := img.Source
	if source == "" {
		source = "container"
	}
	return fmt.Sprintf("%s %q image %q", source, img.Container, img.Ref)
}
