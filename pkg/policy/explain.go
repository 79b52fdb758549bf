package policy

import (
	"errors"
	"fmt"

	"github.com/distribution/reference"

	"github.com/imagegate/imagegate/pkg/rewrite"
)

// Step is one check of an [Explanation].
type Step struct {
	// Check names the check: "exempt", "registry", "denied-repository",
	// "latest-tag", "digest-required" or "invalid-reference".
	Check string
	// Result is "pass", "fail" or "off" (the rule does not check this).
	Result string
	// Detail says why, e.g. which entry matched.
	Detail string
}

// Explanation says how one image is judged in one namespace, check by
// check, for `imagegate check --explain`.
type Explanation struct {
	Image      string
	Normalized string // empty when the image does not parse
	Namespace  string
	// Rewrite is what the rule's rewrite rules make of the image; nil when
	// the rule has none. When it is rewritten, the checks and the Decision
	// judge the rewritten reference, Judged, as the cluster would after the
	// mutating webhook.
	Rewrite *rewrite.Result
	// RewriteBreakGlass is set when the image is not rewritten because
	// the annotations ask for break-glass (see [RewritePlan.BreakGlass]).
	RewriteBreakGlass bool
	// Judged is the reference the checks judged: Image, or its rewrite.
	Judged string
	// Rule is the rule that judges the namespace and MatchedBy the
	// namespace entry that selected it (empty for the default rule).
	Rule, MatchedBy string
	// Steps are the checks in the order Evaluate applies them; an exempt
	// image stops after "exempt".
	Steps []Step
	// Decision is what Evaluate decides for the image alone in in.
	Decision Decision
}

// Explain judges one image as Evaluate does and says how: which rule
// applied, what its rewrite rules make of the image, and what each check
// found about the result. in.Images is replaced by the image.
func (p *Policy) Explain(in Input, image string) Explanation {
	in.Images = []Image{{Ref: image}}
	r, by := p.ruleFor(in.Namespace)
	x := Explanation{Image: image, Namespace: in.Namespace, Rule: r.name, MatchedBy: by, Judged: image}
	if n, err := reference.ParseNormalizedNamed(image); err == nil {
		x.Normalized = n.String()
	}
	if r.rewriter.Len() > 0 {
		plan := p.Rewrite(in)
		x.Rewrite, x.RewriteBreakGlass = &plan.Results[0], plan.BreakGlass
		if x.Rewrite.Changed() {
			x.Judged = x.Rewrite.Rewritten
			in.Images[0].Ref = x.Judged
		}
	}
	x.Decision = p.Evaluate(in)
	named, err := reference.ParseNormalizedNamed(x.Judged)
	if x.Judged == "" {
		err = errors.New("the reference is empty")
	}
	if err != nil {
		x.Steps = append(x.Steps, Step{Check: string(RuleInvalidReference), Result: "fail", Detail: err.Error()})
		return x
	}
	domain, path := reference.Domain(named), reference.Path(named)
	if e, ok := r.exemption(named, domain, path); ok {
		x.Steps = append(x.Steps, Step{Check: "exempt", Result: "pass", Detail: "exempt by exemptImages entry " + e + "; no other check applies"})
		return x
	}
	step := func(check Rule, on bool, problem, ok, off string) {
		switch {
		case !on:
			x.Steps = append(x.Steps, Step{Check: string(check), Result: "off", Detail: off})
		case problem != "":
			x.Steps = append(x.Steps, Step{Check: string(check), Result: "fail", Detail: problem})
		default:
			x.Steps = append(x.Steps, Step{Check: string(check), Result: "pass", Detail: ok})
		}
	}
	allowedBy, _ := matchEntry(r.whitelist, domain, path)
	step(RuleRegistry, len(r.whitelist) > 0, r.registryProblem(domain, path), "matches allowedRegistries entry "+allowedBy.String(), "no allowedRegistries: every registry is allowed")
	deniedBy, denied := matchEntry(r.denied, domain, path)
	deniedMsg := ""
	if denied {
		deniedMsg = "matches deniedRepositories entry " + deniedBy.String()
	}
	step(RuleDeniedRepository, len(r.denied) > 0, deniedMsg, "in no denied repository", "no deniedRepositories")
	pinned := "pinned by digest"
	if _, ok := named.(reference.Digested); !ok {
		if t, ok := named.(reference.Tagged); ok {
			pinned = fmt.Sprintf("tag %q", t.Tag())
		}
	}
	step(RuleLatestTag, r.rejectLatest, latestProblem(named), pinned, "rejectLatest is off")
	digestMsg := ""
	if _, ok := named.(reference.Digested); !ok {
		digestMsg = "no digest"
	}
	step(RuleDigestRequired, r.requireDigest, digestMsg, "pinned by digest", "requireDigest is off")
	return x
}
