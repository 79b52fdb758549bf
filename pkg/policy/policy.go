// Package policy decides whether a pod's container images may run.
//
// It is pure decision logic: callers translate their wire format (an
// ImageReview, an AdmissionReview, a command line) into an [Input] and render
// the [Decision] back. Nothing here knows about HTTP or JSON.
package policy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/distribution/reference"
)

// Mode says whether violations are enforced or only reported.
type Mode string

const (
	// ModeEnforce denies a pod that has violations (unless break-glass
	// overrides them).
	ModeEnforce Mode = "enforce"
	// ModeWarn allows every pod but reports its violations, so a policy can
	// be rolled out and observed before it is enforced.
	ModeWarn Mode = "warn"
)

// ParseMode returns the Mode named by s.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case ModeEnforce, ModeWarn:
		return m, nil
	default:
		return "", fmt.Errorf("unknown mode %q: want %q or %q", s, ModeEnforce, ModeWarn)
	}
}

// Options configure a Policy.
type Options struct {
	// RegistryWhitelist lists the registries (host[:port]) and repository
	// paths (host[:port]/path) images may come from. Empty turns the
	// registry rule off.
	RegistryWhitelist []string
	// RejectLatest denies images with no tag and no digest, or tagged latest.
	RejectLatest bool
	// AllowBreakGlass lets a pod's break-glass annotation override
	// violations; the override is always audited.
	AllowBreakGlass bool
	// Mode is enforce (the default when empty) or warn.
	Mode Mode
}

// Policy is a compiled, immutable set of rules. It is safe for concurrent
// use; a new policy replaces an old one by swapping pointers.
type Policy struct {
	whitelist       []RegistryEntry
	allowedList     string // whitelist rendered once for messages
	rejectLatest    bool
	allowBreakGlass bool
	mode            Mode
	warnings        []string
}

// New validates opts and compiles them into a Policy. Every invalid
// whitelist entry is reported, each by name.
func New(opts Options) (*Policy, error) {
	p := &Policy{
		rejectLatest:    opts.RejectLatest,
		allowBreakGlass: opts.AllowBreakGlass,
		mode:            opts.Mode,
	}
	if p.mode == "" {
		p.mode = ModeEnforce
	}
	if _, err := ParseMode(string(p.mode)); err != nil {
		return nil, err
	}
	var errs []error
	seen := make(map[string]bool, len(opts.RegistryWhitelist))
	for _, raw := range opts.RegistryWhitelist {
		e, err := ParseRegistryEntry(raw)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[e.String()] {
			continue
		}
		seen[e.String()] = true
		if w := lintEntry(e); w != "" {
			p.warnings = append(p.warnings, w)
		}
		p.whitelist = append(p.whitelist, e)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	names := make([]string, len(p.whitelist))
	for i, e := range p.whitelist {
		names[i] = e.String()
	}
	p.allowedList = strings.Join(names, ", ")
	if len(p.whitelist) == 0 {
		p.warnings = append(p.warnings, "no registry whitelist is configured: images from every registry are allowed")
	}
	return p, nil
}

// Warnings returns the problems found while compiling the policy that do not
// make it invalid but probably are not what the operator meant.
func (p *Policy) Warnings() []string { return p.warnings }

// Mode returns the policy's enforcement mode.
func (p *Policy) Mode() Mode { return p.mode }

// Image is one image a pod would run.
type Image struct {
	// Container names the container using the image; empty when the caller
	// does not know it (an ImageReview carries only images).
	Container string
	// Source says what Container names, for messages: "container" when
	// empty; an adapter that reads whole pod specs also says "init
	// container", "ephemeral container" or "volume" (an image volume).
	Source string
	// Ref is the image reference exactly as written in the pod spec.
	Ref string
}

// Input is everything the policy judges about one pod.
type Input struct {
	// Namespace is the pod's namespace.
	Namespace string
	// Images are the pod's images, in the order the pod lists them.
	Images []Image
	// Annotations are the pod's annotations; only break-glass keys
	// (see [ParseBreakGlass]) are read.
	Annotations map[string]string
}

// Evaluate judges every image of in and combines the results into one
// Decision. It never fails: anything it cannot understand is a violation.
func (p *Policy) Evaluate(in Input) Decision {
	d := Decision{Mode: p.mode}
	if len(in.Images) == 0 {
		d.Violations = append(d.Violations, Violation{
			Rule:    RuleNoImages,
			Message: "the request lists no container images, so there is nothing to allow",
		})
	}
	for i, img := range in.Images {
		if duplicateImage(in.Images[:i], img) {
			continue
		}
		d.Violations = p.checkImage(d.Violations, img)
	}
	d.BreakGlass = ParseBreakGlass(in.Annotations)
	d.resolve(p.allowBreakGlass)
	return d
}

// duplicateImage reports whether img was already judged; pods are small, so
// a scan beats a map.
func duplicateImage(seen []Image, img Image) bool {
	for _, s := range seen {
		if s == img {
			return true
		}
	}
	return false
}

// checkImage appends img's violations to vs, in a fixed rule order.
func (p *Policy) checkImage(vs []Violation, img Image) []Violation {
	named, err := reference.ParseNormalizedNamed(img.Ref)
	if img.Ref == "" {
		err = errors.New("the reference is empty")
	}
	if err != nil {
		return append(vs, Violation{
			Container: img.Container, Source: img.Source, Image: img.Ref, Rule: RuleInvalidReference,
			Message: fmt.Sprintf("not a valid image reference (%v); write it as [registry[:port]/]repository[:tag][@digest], repository in lower case", err),
		})
	}
	normalized := named.String()
	if len(p.whitelist) > 0 {
		domain, path := reference.Domain(named), reference.Path(named)
		if msg := p.registryProblem(domain, path); msg != "" {
			vs = append(vs, Violation{
				Container: img.Container, Source: img.Source, Image: img.Ref, Normalized: normalized, Rule: RuleRegistry, Message: msg,
			})
		}
	}
	if p.rejectLatest {
		if msg := latestProblem(named); msg != "" {
			vs = append(vs, Violation{
				Container: img.Container, Source: img.Source, Image: img.Ref, Normalized: normalized, Rule: RuleLatestTag, Message: msg,
			})
		}
	}
	return vs
}

// registryProblem explains why the repository domain/path is outside the
// whitelist, or returns "" when an entry covers it.
func (p *Policy) registryProblem(domain, path string) string {
	sameRegistry := false
	for _, e := range p.whitelist {
		if e.Matches(domain, path) {
			return ""
		}
		sameRegistry = sameRegistry || e.Domain == canonicalDomain(domain)
	}
	if sameRegistry {
		return fmt.Sprintf("repository %s/%s is not under an allowed path of registry %s (allowed: %s); use an image from an allowed repository",
			canonicalDomain(domain), path, canonicalDomain(domain), p.allowedList)
	}
	return fmt.Sprintf("registry %s is not allowed (allowed: %s); push or mirror the image to an allowed registry and use that reference",
		canonicalDomain(domain), p.allowedList)
}

// latestProblem explains why named is a mutable "latest" reference, or
// returns "" when it is pinned by a digest or a version tag.
func latestProblem(named reference.Named) string {
	if _, ok := named.(reference.Digested); ok {
		return "" // a digest pins the content whatever the tag says
	}
	tagged, ok := named.(reference.Tagged)
	if !ok {
		return `it has no tag, so it means the mutable "latest"; pin a version tag or a digest (@sha256:...)`
	}
	// Tags are case-sensitive for registries, but "Latest" is as mutable in
	// spirit and almost certainly a typo, so it is treated the same.
	if strings.EqualFold(tagged.Tag(), "latest") {
		return fmt.Sprintf(`tag %q is mutable; pin a version tag or a digest (@sha256:...)`, tagged.Tag())
	}
	return ""
}

// Normalize returns the fully qualified form of an image reference, as the
// policy sees it ("prometheus:2.6.1" is "docker.io/library/prometheus:2.6.1").
func Normalize(image string) (string, error) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", err
	}
	return named.String(), nil
}
