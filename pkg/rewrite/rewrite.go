// Package rewrite maps container images to an approved mirror: a rule
// FROM=TO sends every image under FROM (a registry, or a repository path on
// "/" boundaries, the entry forms of the registry whitelist) to the registry
// and path prefix TO, keeping the repository path below FROM, the tag and
// the digest exactly:
//
//	docker.io=registry.my.com/dockerhub          nginx:1.25 -> registry.my.com/dockerhub/library/nginx:1.25
//	docker.io/library=registry.my.com/hub        nginx:1.25 -> registry.my.com/hub/nginx:1.25
//	quay.io=registry.my.com/quay                 quay.io/prometheus/node-exporter@sha256:… -> registry.my.com/quay/prometheus/node-exporter@sha256:…
//
// Images are parsed and normalised with github.com/distribution/reference
// before anything is compared, never by string prefix, so
// "docker.io.evil.io/x" is not under "docker.io". The most specific FROM
// wins; an image already under any TO is left alone, so rewriting is
// idempotent; an image that does not parse is never rewritten (the policy
// refuses it); and a result that would not parse back to exactly the
// reference built (a name over 255 characters, say) is not produced: the
// image is left alone with the reason.
//
// It is pure: no HTTP, no JSON, no Kubernetes types.
package rewrite

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/distribution/reference"

	"github.com/imagegate/imagegate/pkg/imageref"
)

// Rule is one mapping as the operator wrote it.
type Rule struct {
	// From is a registry host[:port] or a repository path
	// (host[:port]/path, or a Docker Hub path such as "library/nginx"),
	// as in the registry whitelist; no wildcard.
	From string
	// To is the mirror: a registry host[:port] with an optional path
	// prefix ("registry.my.com/dockerhub").
	To string
}

// String returns the rule in its flag form, FROM=TO, as written.
func (r Rule) String() string { return r.From + "=" + r.To }

// ParseRule parses the flag form "FROM=TO". It only splits; [Compile]
// validates both sides.
func ParseRule(s string) (Rule, error) {
	from, to, ok := strings.Cut(s, "=")
	if !ok {
		return Rule{}, fmt.Errorf("registry mirror %q: want FROM=TO, e.g. docker.io=registry.my.com/dockerhub", s)
	}
	return Rule{From: strings.TrimSpace(from), To: strings.TrimSpace(to)}, nil
}

// Mirror is a compiled rule.
type Mirror struct {
	// Rule is the rule as written.
	Rule Rule
	// Index is the rule's position in the list given to [New].
	Index int
	// From and To are its parsed sides: From matches images, To is where
	// they go (Domain canonical, Path the prefix, possibly empty).
	From, To imageref.RegistryEntry
}

// String returns the rule with both sides normalised,
// "docker.io=registry.my.com/dockerhub"; "" for a nil *Mirror (a
// [Result] that only qualified a short name has no mirror).
func (m *Mirror) String() string {
	if m == nil {
		return ""
	}
	return m.From.String() + "=" + m.To.String()
}

// RuleError is an invalid rule. Field is "from" or "to" when one side is
// at fault, empty otherwise; Index is the rule's position in the list
// given to [New].
type RuleError struct {
	Index int
	Rule  Rule
	Field string
	Err   error
}

func (e *RuleError) Error() string { return e.Err.Error() }
func (e *RuleError) Unwrap() error { return e.Err }

// Compile validates one rule. An error is a *[RuleError] whose message
// names the rule.
func Compile(r Rule) (Mirror, error) {
	fail := func(field string, err error) (Mirror, error) {
		return Mirror{}, &RuleError{Rule: r, Field: field, Err: fmt.Errorf("rewrite %s: %w", r, err)}
	}
	from, to := strings.TrimSpace(r.From), strings.TrimSpace(r.To)
	switch {
	case from == "":
		return fail("from", errors.New("FROM is empty; name a registry or repository path, e.g. docker.io"))
	case to == "":
		return fail("to", errors.New("TO is empty; name the mirror registry and path, e.g. registry.my.com/dockerhub"))
	case strings.Contains(from, "*"):
		return fail("from", fmt.Errorf("FROM %q: a rewrite takes no wildcard: a mirror path cannot keep which host an image came from", r.From))
	case strings.Contains(to, "*"):
		return fail("to", fmt.Errorf("TO %q: the mirror is one registry and path, without wildcard", r.To))
	}
	f, err := imageref.ParseRegistryEntry(from)
	if err != nil {
		return fail("from", fmt.Errorf("FROM: %w", err))
	}
	t, err := imageref.ParseRegistryEntry(to)
	if err != nil {
		return fail("to", fmt.Errorf("TO: %w", err))
	}
	// The reference grammar reads a first component as a registry only when
	// it has a dot or a port or is localhost: "mirror/x" is the Docker Hub
	// repository mirror/x, so images rewritten there would not be under TO.
	host, _, _ := strings.Cut(to, "/")
	if lh := strings.ToLower(host); !strings.ContainsAny(lh, ".:") && lh != "localhost" {
		return fail("to", fmt.Errorf("TO %q: %q is not read as a registry host in an image reference (%s/... is a Docker Hub repository); name a host with a dot or a port, or localhost", r.To, host, host))
	}
	if f.String() == t.String() {
		return fail("to", fmt.Errorf("FROM and TO are the same repository %s", f))
	}
	return Mirror{Rule: r, From: f, To: t}, nil
}

// Rewriter applies a set of rules. A nil *Rewriter rewrites nothing. It is
// immutable and safe for concurrent use.
type Rewriter struct {
	mirrors []Mirror // most specific From first
}

// New compiles rules. Every invalid rule is reported, as a *[RuleError]
// with its index; so is a FROM given twice (which TO would win?), while
// the same rule given twice is kept once.
func New(rules []Rule) (*Rewriter, error) {
	rw := &Rewriter{}
	var errs []error
	seen := map[string]Mirror{} // normalised From -> its rule
	for i, r := range rules {
		m, err := Compile(r)
		if err != nil {
			var re *RuleError
			if errors.As(err, &re) {
				re.Index = i
			}
			errs = append(errs, err)
			continue
		}
		if prev, dup := seen[m.From.String()]; dup {
			if prev.To.String() == m.To.String() {
				continue
			}
			errs = append(errs, &RuleError{Index: i, Rule: r, Field: "from", Err: fmt.Errorf("rewrite %s: FROM %s is already rewritten to %s by %s; give each FROM one TO", r, m.From, prev.To, prev.Rule)})
			continue
		}
		m.Index = i
		seen[m.From.String()] = m
		rw.mirrors = append(rw.mirrors, m)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// Entries that can match one image share its registry, and their paths
	// are nested, so the longer path is the more specific one. Ties (other
	// registries) keep the order written.
	slices.SortStableFunc(rw.mirrors, func(a, b Mirror) int { return len(b.From.Path) - len(a.From.Path) })
	return rw, nil
}

// Mirrors returns the compiled rules, most specific FROM first.
func (rw *Rewriter) Mirrors() []Mirror {
	if rw == nil {
		return nil
	}
	return rw.mirrors
}

// Len returns the number of rules.
func (rw *Rewriter) Len() int { return len(rw.Mirrors()) }

// Status says what [Rewriter.Rewrite] did with an image.
type Status string

const (
	// StatusRewritten means a rule matched and Result.Rewritten is the mirrored
	// reference.
	StatusRewritten Status = "rewritten"
	// StatusNoMatch means no rule's FROM covers the image.
	StatusNoMatch Status = "no-match"
	// StatusMirrored means the image is already under a rule's TO and is left
	// alone; this is what makes a second rewrite a no-op.
	StatusMirrored Status = "mirrored"
	// StatusInvalid means the image is not a valid reference. It is never
	// rewritten; the policy refuses it with the parser's error.
	StatusInvalid Status = "invalid"
	// StatusFailed means a rule matched, but the rewritten reference would not
	// be valid (Result.Reason says why), so the image is left alone.
	StatusFailed Status = "failed"
	// StatusQualified means the image is a short name that a policy
	// requiring fully qualified references wrote out in full
	// (Result.Rewritten, e.g. docker.io/library/nginx:1.25), and no mirror
	// took it further: none matched, it is already under one (Mirror), or
	// the mirror's result would not be valid (Mirror and Reason).
	StatusQualified Status = "qualified"
)

// Result is what the rules make of one image.
type Result struct {
	// Image is the reference as given.
	Image  string
	Status Status
	// Rewritten is the mirrored reference, with StatusRewritten, or the
	// qualified one, with StatusQualified.
	Rewritten string
	// Qualified is the short name Image written out in full, which the
	// rules were applied to, when the policy qualifies short names (see
	// StatusQualified); empty otherwise.
	Qualified string
	// Mirror is the rule that matched (StatusRewritten, StatusFailed) or
	// whose TO already holds the image (StatusMirrored).
	Mirror *Mirror
	// Reason says why an image was not rewritten, with StatusInvalid and
	// StatusFailed.
	Reason string
}

// Changed reports whether the image was rewritten, to a mirror or to its
// qualified form.
func (r Result) Changed() bool { return r.Status == StatusRewritten || r.Status == StatusQualified }

// Describe says in a few words what happened, for explanations and logs.
func (r Result) Describe() string {
	switch r.Status {
	case StatusRewritten:
		if r.Qualified != "" {
			return fmt.Sprintf("%s (qualified as %s, then rule %s)", r.Rewritten, r.Qualified, r.Mirror)
		}
		return fmt.Sprintf("%s (rule %s)", r.Rewritten, r.Mirror)
	case StatusQualified:
		switch {
		case r.Reason != "":
			return fmt.Sprintf("%s (the short name written out; rule %s matches, but %s)", r.Rewritten, r.Mirror, r.Reason)
		case r.Mirror != nil:
			return fmt.Sprintf("%s (the short name written out; already under the mirror %s)", r.Rewritten, r.Mirror.To)
		}
		return r.Rewritten + " (the short name written out)"
	case StatusMirrored:
		return fmt.Sprintf("none: already under the mirror %s (rule %s)", r.Mirror.To, r.Mirror)
	case StatusInvalid:
		return "none: not a valid image reference (" + r.Reason + ")"
	case StatusFailed:
		return fmt.Sprintf("none: rule %s matches, but %s", r.Mirror, r.Reason)
	default:
		return "none: no rewrite rule matches"
	}
}

// Rewrite applies the rules to one image reference.
func (rw *Rewriter) Rewrite(image string) Result {
	res := Result{Image: image, Status: StatusNoMatch}
	if rw.Len() == 0 {
		return res
	}
	if image == "" {
		res.Status, res.Reason = StatusInvalid, "the reference is empty"
		return res
	}
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		res.Status, res.Reason = StatusInvalid, err.Error()
		return res
	}
	domain, path := reference.Domain(named), reference.Path(named)
	for i := range rw.mirrors {
		if rw.mirrors[i].To.Matches(domain, path) {
			res.Status, res.Mirror = StatusMirrored, &rw.mirrors[i]
			return res
		}
	}
	var m *Mirror
	for i := range rw.mirrors {
		if rw.mirrors[i].From.Matches(domain, path) {
			m = &rw.mirrors[i]
			break
		}
	}
	if m == nil {
		return res
	}
	res.Mirror = m
	out, err := build(m, named, path)
	if err != nil {
		res.Status, res.Reason = StatusFailed, err.Error()
		return res
	}
	res.Status, res.Rewritten = StatusRewritten, out
	return res
}

// build returns the reference under m.To for named, whose repository path
// is path, and checks that it parses back to exactly what was built.
func build(m *Mirror, named reference.Named, path string) (string, error) {
	rest := path
	if m.From.Path != "" {
		rest = strings.TrimPrefix(strings.TrimPrefix(path, m.From.Path), "/")
	}
	newPath := m.To.Path
	switch {
	case newPath == "":
		newPath = rest
	case rest != "":
		newPath += "/" + rest
	}
	if newPath == "" {
		return "", fmt.Errorf("the image is the repository %s itself and TO %s has no path to put it under", m.From, m.To)
	}
	var b strings.Builder
	b.WriteString(m.To.Domain)
	b.WriteByte('/')
	b.WriteString(newPath)
	tagged, hasTag := named.(reference.Tagged)
	if hasTag {
		b.WriteByte(':')
		b.WriteString(tagged.Tag())
	}
	digested, hasDigest := named.(reference.Digested)
	if hasDigest {
		b.WriteByte('@')
		b.WriteString(digested.Digest().String())
	}
	out := b.String()
	again, err := reference.ParseNormalizedNamed(out)
	if err != nil {
		return "", fmt.Errorf("the result %q would not be a valid reference (%v)", out, err)
	}
	if imageref.CanonicalDomain(reference.Domain(again)) != m.To.Domain || reference.Path(again) != newPath {
		return "", fmt.Errorf("the result %q would be read as %s, not under %s", out, again, m.To)
	}
	if t, ok := again.(reference.Tagged); ok != hasTag || (ok && t.Tag() != tagged.Tag()) {
		return "", fmt.Errorf("the result %q would not keep the tag", out)
	}
	if d, ok := again.(reference.Digested); ok != hasDigest || (ok && d.Digest() != digested.Digest()) {
		return "", fmt.Errorf("the result %q would not keep the digest", out)
	}
	return out, nil
}
