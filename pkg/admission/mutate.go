package admission

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

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
	// BreakGlass says the pod asked for break-glass, so nothing was
	// rewritten (see policy.RewritePlan.BreakGlass).
	BreakGlass bool
	// Unreadable says why the request could not be read (another kind,
	// an object that does not decode); it is then allowed unchanged.
	Unreadable error
}

// Patched reports whether the reply carries a patch.
func (m *Mutation) Patched() bool { return len(m.Rewritten) > 0 }

// patchOp is one JSONPatch (RFC 6902) operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// Mutate decodes body, an AdmissionReview of either version, and answers
// it for the mutating webhook: allowed, with a JSONPatch that rewrites the
// images the policy's rewrite rules match, and writes out in full the
// short names of a rule that requires fully qualified references (see
// [policy.Policy.Rewrite]), and records the originals in
// [AnnotationOriginalImages]. Nothing matched: allowed without a patch.
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
func Mutate(p *policy.Policy, body []byte) (Mutation, Response, error) {
	review, objs, err := decodeReview(body)
	if err != nil {
		return Mutation{}, Response{}, err
	}
	m, patch := mutation(p, review.Request, objs)
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

func mutation(p *policy.Policy, req *admissionv1.AdmissionRequest, objs requestObjects) (Mutation, []byte) {
	var m Mutation
	if req != nil {
		m.Input.Namespace, m.Kind, m.Name = req.Namespace, req.Kind.Kind, req.Name
		// Who asks decides whether break-glass would be honoured, and with
		// it whether the images are left as written.
		m.Input.User, m.Input.Groups = req.UserInfo.Username, req.UserInfo.Groups
		if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update || !p.HasRewrites() {
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
	for i, res := range plan.Results {
		switch res.Status {
		case rewrite.StatusRewritten, rewrite.StatusQualified:
			m.Rewritten = append(m.Rewritten, Rewrite{Image: r.images[i].Image, Path: r.images[i].pointer(r.prefix), Result: res})
		case rewrite.StatusFailed:
			m.Failed = append(m.Failed, Rewrite{Image: r.images[i].Image, Path: r.images[i].pointer(r.prefix), Result: res})
		}
	}
	if len(m.Rewritten) == 0 {
		return m, nil
	}
	ops := make([]patchOp, 0, len(m.Rewritten)+1)
	for _, rw := range m.Rewritten {
		ops = append(ops, patchOp{Op: "replace", Path: rw.Path, Value: rw.Result.Rewritten})
	}
	if req.SubResource != subresourceEphemeralContainers {
		ops = append(ops, originalsOp(r.tmpl, r.oldTmpl, r.prefix, m.Rewritten))
	}
	patch, err := json.Marshal(ops)
	if err != nil { // strings and maps of strings only
		m.Unreadable = fmt.Errorf("encode the patch: %w", err)
		m.Rewritten = nil
		return m, nil
	}
	return m, patch
}

// originalsOp returns the operation that sets AnnotationOriginalImages on
// the template: the entries already on the old object, then those on the
// object, then the images rewritten now.
func originalsOp(tmpl, oldTmpl *leanTemplate, prefix string, rewritten []Rewrite) patchOp {
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
	for _, rw := range rewritten {
		originals[originalsKey(rw.Image)] = rw.Image.Ref
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
	return out
}

func describeImage(img policy.Image) string {
	source := img.Source
	if source == "" {
		source = "container"
	}
	return fmt.Sprintf("%s %q image %q", source, img.Container, img.Ref)
}
