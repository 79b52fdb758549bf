package policy

import (
	"github.com/distribution/reference"
)

// Pin is one image the mutating webhook is to pin to a digest.
type Pin struct {
	// Index is the image's position in Input.Images and RewritePlan.Results.
	Index int
	// Ref is the reference as it will be pulled: as written, or as the plan
	// rewrote it (qualified, mirrored). The pinned image is Ref + "@" + the
	// digest, so the tag stays for people and the digest is for the runtime.
	Ref string
	// Lookup is Ref normalised (docker.io/library/nginx:1.25): what the
	// registry named in it is asked for.
	Lookup string
	// Digest is the digest Ref already carries, from [Policy.Tags]; empty
	// from [Policy.Pins].
	Digest string
}

// HasPins reports whether any rule pins digests, so the mutating webhook
// can answer at once when none does and nothing is rewritten.
func (p *Policy) HasPins() bool { return p.pins }

// Pins returns the images of in that the rule judging in.Namespace pins to
// a digest, given plan, the rule's [Policy.Rewrite] of in: with
// PinDigests, each image whose reference as it will be pulled carries a
// tag and no digest, and that the rule would allow but for RequireDigest.
// An image already carrying a digest is left exactly as written, which
// makes a second mutation a no-op; an image the rule refuses is not worth
// a registry lookup; an image without a tag (latest implied) is left for
// RejectLatest to judge, as pinning would have to invent its tag. Under
// honoured break-glass (see [RewritePlan.BreakGlass]) nothing is pinned.
// Pins is pure: the lookups are the caller's.
func (p *Policy) Pins(in Input, plan RewritePlan) []Pin {
	return p.tags(in, plan, false)
}

// Tags is [Policy.Pins] with the images already pinned too: each tagged
// image the rule would pin or has pinned (repo:tag@digest), with Digest
// set to the digest it carries. Lookup is then the tag alone, so an audit
// can tell whether the tag still resolves to the digest admitted.
func (p *Policy) Tags(in Input, plan RewritePlan) []Pin {
	return p.tags(in, plan, true)
}

func (p *Policy) tags(in Input, plan RewritePlan, digested bool) []Pin {
	r, _ := p.ruleFor(in.Namespace)
	if !r.pinDigests || plan.BreakGlass || len(plan.Results) != len(in.Images) {
		return nil
	}
	var pins []Pin
	for i, img := range in.Images {
		ref := img.Ref
		if plan.Results[i].Changed() {
			ref = plan.Results[i].Rewritten
		}
		// Judged first, from the verdict cache: only an image the rule
		// allows is parsed, and its parse is kept (see verdictCache.tagOf).
		if !allowedButForDigest(p.cache.judge(r, nil, Image{Ref: ref})) {
			continue
		}
		t, err := p.cache.tagOf(ref)
		if err != nil || t.lookup == "" || t.digest != "" && !digested {
			continue
		}
		if pins == nil {
			pins = make([]Pin, 0, len(in.Images)-i)
		}
		pins = append(pins, Pin{Index: i, Ref: ref, Lookup: t.lookup, Digest: t.digest})
	}
	return pins
}

// tagRef is what Pins and Tags need of a reference: lookup, its name and
// tag normalised (docker.io/library/nginx:1.25, without any digest), empty
// when it has no tag; and the digest it carries, if any.
type tagRef struct{ lookup, digest string }

func parseTag(ref string) (tagRef, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return tagRef{}, err
	}
	var t tagRef
	if d, ok := named.(reference.Digested); ok {
		t.digest = d.Digest().String()
	}
	if tagged, ok := named.(reference.Tagged); ok {
		if named, err = reference.WithTag(reference.TrimNamed(named), tagged.Tag()); err != nil {
			return tagRef{}, err
		}
		t.lookup = named.String()
	}
	return t, nil
}

func allowedButForDigest(vs []Violation) bool {
	for _, v := range vs {
		if v.Check != CheckDigestRequired {
			return false
		}
	}
	return true
}
