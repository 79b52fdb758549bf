package policy

import (
	"github.com/distribution/reference"

	"github.com/imagegate/imagegate/pkg/rewrite"
)

// Step is one check of an [Explanation].
type Step struct {
	// Check names the check: "fully-qualified", "exempt", "registry",
	// "denied-repository", "latest-tag", "digest-required" or
	// "invalid-reference".
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
	// Rewrite is what the rule's rewrite rules make of the image, the
	// qualification of a short name included; nil when the rule has no
	// rewrite rules and does not require fully qualified references. When it is rewritten, the checks and the Decision
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
	// Steps are the checks as Evaluate applies them, in its order; an
	// exempt image stops after "exempt".
	Steps []Step
	// Decision is what EvaluateMutated decides for the image alone in in.
	Decision Decision
}

// Explain judges one image as EvaluateMutated does and says how: which
// rule applied, what its rewrite rules make of the image, and what each
// check found about the result. in.Images is replaced by the image.
func (p *Policy) Explain(in Input, image string) Explanation {
	in.Images = []Image{{Ref: image}}
	r, by := p.ruleFor(in.Namespace)
	plan, d := p.EvaluateMutated(in)
	x := Explanation{Image: image, Namespace: in.Namespace, Rule: r.name, MatchedBy: by, Judged: image, Decision: d}
	if n, err := reference.ParseNormalizedNamed(image); err == nil {
		x.Normalized = n.String()
	}
	if r.rewriter.Len() > 0 || r.requireFQ {
		x.Rewrite, x.RewriteBreakGlass = &plan.Results[0], plan.BreakGlass
		if x.Rewrite.Changed() {
			x.Judged = x.Rewrite.Rewritten
		}
	}
	t := trace{}
	r.checkImage(nil, Image{Ref: x.Judged}, &t)
	x.Steps = t
	return x
}

// Step results.
const (
	stepPass = "pass"
	stepFail = "fail"
	stepOff  = "off"
)

// trace collects the steps of one image's checks as checkImage applies
// them; a nil trace records nothing.
type trace []Step

func (t *trace) record(check Check, result, detail string) {
	if t != nil {
		*t = append(*t, Step{Check: string(check), Result: result, Detail: detail})
	}
}
