// Package policy decides whether a pod's container images may run.
//
// It is pure decision logic: callers translate their wire format (an
// ImageReview, an AdmissionReview, a command line) into an [Input] and render
// the [Decision] back. Nothing here knows about HTTP or JSON.
package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"

	"github.com/imagegate/imagegate/pkg/rewrite"
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

// Options configure a Policy from the command-line flags: they are its
// default rule, applied to every namespace. A policy file adds namespace
// rules and more checks; see [Spec] and [Compile].
type Options struct {
	// AllowedRegistries lists the registries (host[:port]) and repository
	// paths (host[:port]/path) images may come from (--registry-whitelist).
	// Empty turns the registry check off.
	AllowedRegistries []string
	// RejectLatest denies images with no tag and no digest, or tagged latest.
	RejectLatest bool
	// AllowBreakGlass lets a pod's break-glass annotation override
	// violations; the override is always audited.
	AllowBreakGlass bool
	// Mode is enforce (the default when empty) or warn.
	Mode Mode
	// Rewrites rewrite images to an approved mirror
	// (--registry-mirror FROM=TO); see [RuleOptions.Rewrites].
	Rewrites []rewrite.Rule
	// RequireFullyQualified denies short names (--require-fully-qualified);
	// see [RuleOptions.RequireFullyQualified].
	RequireFullyQualified bool
	// PinDigests pins tags to digests (--pin-digests); see
	// [RuleOptions.PinDigests].
	PinDigests bool
}

// Rule returns the options as a default rule.
func (o Options) Rule() RuleOptions {
	return RuleOptions{
		Name:              DefaultRuleName,
		AllowedRegistries: o.AllowedRegistries,
		RejectLatest:      o.RejectLatest,
		Mode:              o.Mode,
		BreakGlass:        BreakGlassOptions{Enabled: o.AllowBreakGlass},
		Rewrites:          o.Rewrites,

		RequireFullyQualified: o.RequireFullyQualified,
		PinDigests:            o.PinDigests,
	}
}

// Policy is a compiled, immutable set of rules. It is safe for concurrent
// use; a new policy replaces an old one by swapping pointers.
type Policy struct {
	def      *rule
	exact    map[string]*rule // namespace name -> rule
	globs    []glob           // most specific first
	warnings []Warning
	hash     string
	source   string
	annotate bool            // add the policy-hash and policy-rule audit annotations
	linted   map[string]bool // entry findings already reported, while compiling
	cache    *verdictCache   // what each image was found to be, per rule
	rewrites bool            // some rule has rewrite rules
	pins     bool            // some rule pins digests
}

// New validates opts and compiles them into a Policy with one rule, the
// default. Every invalid whitelist entry is reported, each by name. Unlike a
// policy file, flags take no wildcard entries.
func New(opts Options) (*Policy, error) {
	def := opts.Rule()
	var errs []error
	for _, raw := range def.AllowedRegistries {
		if _, err := ParseRegistryEntry(raw); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	p, err := Compile(Spec{Default: def})
	if err != nil {
		return nil, unwrapFieldErrors(err)
	}
	return p, nil
}

// Warnings returns the problems found while compiling the policy that do not
// make it invalid but probably are not what the operator meant.
func (p *Policy) Warnings() []Warning { return p.warnings }

// Mode returns the enforcement mode of the policy's default rule.
func (p *Policy) Mode() Mode { return p.def.mode }

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
	// User and Groups identify who asked, when the wire format says
	// (an AdmissionReview's userInfo; an ImageReview carries no identity).
	// Only break-glass restricted to some users or groups reads them.
	User   string
	Groups []string
	// Time is when the request is judged, for break-glass expiry; zero
	// means now.
	Time time.Time
	// OperationUnknown says the wire format cannot tell a new pod from an
	// update of a running one: an ImageReview, which ImagePolicyWebhook
	// sends for every pod UPDATE as for a CREATE. A break-glass expiry
	// that has passed is then not refused, because passing is the one
	// refusal that can newly befall an admitted pod, and it would block
	// its updates (controllers' finalizer removals included) though
	// nobody changed anything. Missing, malformed and too distant
	// expiries are still refused. Where the operation is known
	// (/validate), an expired break-glass refuses new pods and new images.
	OperationUnknown bool
}

// Evaluate judges every image of in under the rule for in.Namespace and
// combines the results into one Decision. It never fails: anything it cannot
// understand is a violation.
func (p *Policy) Evaluate(in Input) Decision { return p.evaluate(in, nil) }

// EvaluateMutated is what the cluster decides after the mutating webhook:
// the plan of [Policy.Rewrite] for in, and the decision on the images as
// rewritten. Each violation names the image as written, and the reference
// judged in its Rewritten field when the plan changed it.
func (p *Policy) EvaluateMutated(in Input) (RewritePlan, Decision) {
	plan := p.Rewrite(in)
	return plan, p.evaluate(in, plan.Results)
}

// evaluate is Evaluate, judging image i as rewritten[i] when that
// changes it.
func (p *Policy) evaluate(in Input, rewritten []rewrite.Result) Decision {
	r, _ := p.ruleFor(in.Namespace)
	d := Decision{Mode: r.mode, RuleName: r.name}
	switch {
	case len(in.Images) == 0:
		d.Violations = append(d.Violations, Violation{
			Check:   CheckNoImages,
			Message: "the request lists no container images, so there is nothing to allow",
		})
	case len(in.Images) > MaxImages:
		// Judging is linear, but a review this large is an attack or a
		// bug, not a pod: refuse it whole rather than spend on it.
		d.Violations = append(d.Violations, Violation{
			Check: CheckTooManyImages,
			Message: fmt.Sprintf("the request lists %d images, more than the %d imagegate judges in one review; no real pod pulls that many: split the workload",
				len(in.Images), MaxImages),
		})
	default:
		var seen map[Image]struct{}
		for i, img := range in.Images {
			if duplicateImage(in.Images[:i], img, &seen) {
				continue
			}
			if rewritten == nil || !rewritten[i].Changed() {
				d.Violations = p.cache.judge(r, d.Violations, img)
				continue
			}
			n, judged := len(d.Violations), rewritten[i].Rewritten
			d.Violations = p.cache.judge(r, d.Violations, Image{Container: img.Container, Source: img.Source, Ref: judged})
			for j := n; j < len(d.Violations); j++ {
				d.Violations[j].Image, d.Violations[j].Rewritten = img.Ref, judged
			}
		}
	}
	d.BreakGlass = ParseBreakGlass(in.Annotations)
	refusal := ""
	if d.BreakGlass.Requested && r.breakGlass.Enabled {
		refusal = r.breakGlassRefusal(d.BreakGlass, in)
	}
	d.resolve(r.breakGlass.Enabled, refusal)
	p.annotateDecision(&d, r)
	return d
}

// MaxImages is the most images one review may list; a review with more is
// denied whole (CheckTooManyImages). Real pods list a handful, and the
// largest seen in the wild a few dozen.
const MaxImages = 1000

// duplicateImage reports whether img, at the end of judged, was already
// judged. Pods are small, so a scan beats a map up to a few images; past
// that *seen holds them all, so a review costs O(images).
func duplicateImage(judged []Image, img Image, seen *map[Image]struct{}) bool {
	const scanUpTo = 16
	if len(judged) < scanUpTo {
		for _, s := range judged {
			if s == img {
				return true
			}
		}
		return false
	}
	if *seen == nil {
		*seen = make(map[Image]struct{}, 2*scanUpTo)
		for _, s := range judged {
			(*seen)[s] = struct{}{}
		}
	}
	if _, ok := (*seen)[img]; ok {
		return true
	}
	(*seen)[img] = struct{}{}
	return false
}

// checkImage appends img's violations to vs, in a fixed rule order. With
// a trace, it also records each check as it applies it, for [Policy.Explain].
func (r *rule) checkImage(vs []Violation, img Image, t *trace) []Violation {
	named, err := reference.ParseNormalizedNamed(img.Ref)
	if img.Ref == "" {
		err = errors.New("the reference is empty")
	}
	if err != nil {
		t.record(CheckInvalidReference, stepFail, err.Error())
		return append(vs, Violation{
			Container: img.Container, Source: img.Source, Image: img.Ref, Check: CheckInvalidReference,
			Message: fmt.Sprintf("not a valid image reference (%v); write it as [registry[:port]/]repository[:tag][@digest], repository in lower case", err),
		})
	}
	normalized := named.String()
	// Checked as written, before exemptions: a short name has no registry
	// an exemption could name. Explained only when on, as it is rarely.
	if r.requireFQ && !FullyQualified(img.Ref) {
		msg := fmt.Sprintf("rule %q requires the registry to be written out, as the node resolves a short name (CRI-O and Podman through registries.conf); write %s",
			r.name, normalized)
		if !FullyQualified(normalized) {
			msg = fmt.Sprintf("rule %q requires the registry to be written out, and the first component is no registry host; name one (with a '.' or ':', or localhost)", r.name)
		}
		vs = append(vs, Violation{
			Container: img.Container, Source: img.Source, Image: img.Ref, Normalized: normalized, Check: CheckFullyQualified, Message: msg,
		})
		t.record(CheckFullyQualified, stepFail, msg)
	} else if r.requireFQ {
		t.record(CheckFullyQualified, stepPass, "names registry "+reference.Domain(named))
	}
	domain, path := reference.Domain(named), reference.Path(named)
	if e, ok := r.exemption(named, domain, path); ok {
		if t != nil {
			t.record("exempt", stepPass, "exempt by exemptImages entry "+e+"; no other check applies")
		}
		return vs
	}
	add := func(rule Check, msg string) {
		vs = append(vs, Violation{
			Container: img.Container, Source: img.Source, Image: img.Ref, Normalized: normalized, Check: rule, Message: msg,
		})
	}
	if len(r.whitelist) == 0 {
		t.record(CheckRegistry, stepOff, "no allowedRegistries: every registry is allowed")
	} else if msg := r.registryProblem(domain, path); msg != "" {
		add(CheckRegistry, msg)
		t.record(CheckRegistry, stepFail, msg)
	} else if t != nil {
		e, _ := matchEntry(r.whitelist, domain, path)
		t.record(CheckRegistry, stepPass, "matches allowedRegistries entry "+e.String())
	}
	if e, ok := matchEntry(r.denied, domain, path); ok {
		add(CheckDeniedRepository, fmt.Sprintf("repository %s/%s is denied by rule %q (entry %s); use another image",
			canonicalDomain(domain), path, r.name, e))
		if t != nil {
			t.record(CheckDeniedRepository, stepFail, "matches deniedRepositories entry "+e.String())
		}
	} else if len(r.denied) == 0 {
		t.record(CheckDeniedRepository, stepOff, "no deniedRepositories")
	} else {
		t.record(CheckDeniedRepository, stepPass, "in no denied repository")
	}
	_, digested := named.(reference.Digested)
	if !r.rejectLatest {
		t.record(CheckLatestTag, stepOff, "rejectLatest is off")
	} else if msg := latestProblem(named); msg != "" {
		add(CheckLatestTag, msg)
		t.record(CheckLatestTag, stepFail, msg)
	} else if tagged, ok := named.(reference.Tagged); ok && !digested && t != nil {
		t.record(CheckLatestTag, stepPass, fmt.Sprintf("tag %q", tagged.Tag()))
	} else {
		t.record(CheckLatestTag, stepPass, "pinned by digest")
	}
	if !r.requireDigest {
		t.record(CheckDigestRequired, stepOff, "requireDigest is off")
	} else if !digested {
		add(CheckDigestRequired, fmt.Sprintf("rule %q requires images pinned by digest; append the digest (@sha256:...)", r.name))
		t.record(CheckDigestRequired, stepFail, "no digest")
	} else {
		t.record(CheckDigestRequired, stepPass, "pinned by digest")
	}
	return vs
}

// exemption returns the exemptImages entry that covers the image, if any.
func (r *rule) exemption(named reference.Named, domain, path string) (string, bool) {
	if len(r.exemptRefs) > 0 {
		c := canonicalRef(named)
		if _, ok := slices.BinarySearch(r.exemptRefs, c); ok {
			return c, true
		}
	}
	if e, ok := matchEntry(r.exemptRepos, domain, path); ok {
		return e.String(), true
	}
	return "", false
}

func matchEntry(es []RegistryEntry, domain, path string) (RegistryEntry, bool) {
	for _, e := range es {
		if e.Matches(domain, path) {
			return e, true
		}
	}
	return RegistryEntry{}, false
}

// canonicalRef is what a runtime pulls for named, for exact exemptions:
// repository@digest when it has a digest (the tag is then ignored, as
// reference.ParseDockerRef, which containerd's CRI uses, drops it), else
// repository:tag, "latest" when no tag is written. The registry is in the
// form entries compare in.
func canonicalRef(named reference.Named) string {
	s := canonicalDomain(reference.Domain(named)) + "/" + reference.Path(named)
	if d, ok := named.(reference.Digested); ok {
		return s + "@" + d.Digest().String()
	}
	if t, ok := named.(reference.Tagged); ok {
		return s + ":" + t.Tag()
	}
	return s + ":latest"
}

// registryProblem explains why the repository domain/path is outside the
// whitelist, or returns "" when an entry covers it.
func (r *rule) registryProblem(domain, path string) string {
	sameRegistry := false
	for _, e := range r.whitelist {
		if e.Matches(domain, path) {
			return ""
		}
		sameRegistry = sameRegistry || (e.Path != "" && e.MatchesDomain(canonicalDomain(domain)))
	}
	if sameRegistry {
		return fmt.Sprintf("repository %s/%s is not under an allowed path of registry %s (allowed: %s); use an image from an allowed repository",
			canonicalDomain(domain), path, canonicalDomain(domain), r.allowedList)
	}
	return fmt.Sprintf("registry %s is not allowed (allowed: %s); push or mirror the image to an allowed registry and use that reference",
		canonicalDomain(domain), r.allowedList)
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

// FullyQualified reports whether image, as written, names its registry:
// its first path component is a host, as distribution/reference reads one
// (it has a '.' or a ':', or is "localhost"). "nginx:1.25" and
// "library/nginx" do not; "docker.io/nginx" and "localhost:5000/x" do.
// It does not validate the rest of the reference.
func FullyQualified(image string) bool {
	first, _, ok := strings.Cut(image, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
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
