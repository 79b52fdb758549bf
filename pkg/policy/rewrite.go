package policy

import (
	"errors"
	"fmt"
	"slices"

	"github.com/distribution/reference"

	"github.com/imagegate/imagegate/pkg/rewrite"
)

// RewritePlan says what the rewrite rules of the rule judging a namespace
// make of a pod's images (see [Policy.Rewrite]). The mutating webhook
// renders it as a JSONPatch; the validating paths then judge the result.
type RewritePlan struct {
	// RuleName is the rule whose rewrites applied.
	RuleName string
	// BreakGlass is set when the pod asks for break-glass and the rule
	// would honour it: the rule enables break-glass and does not refuse
	// this request (a missing ticket, a user not allowed, an expiry passed,
	// missing or malformed). Nothing is rewritten then: break-glass is for
	// the night the approved registry, which is where the mirror lives,
	// cannot serve, and the validating path audits the override as always.
	// A break-glass the rule would refuse changes nothing, so the images
	// are rewritten as any others.
	BreakGlass bool
	// Results has one entry per image of the input, in its order.
	Results []rewrite.Result
}

// Changed reports whether any image is rewritten.
func (rp *RewritePlan) Changed() bool {
	for i := range rp.Results {
		if rp.Results[i].Changed() {
			return true
		}
	}
	return false
}

// HasRewrites reports whether any rule of the policy rewrites images, to a
// mirror or to the qualified form of a short name, so the mutating webhook
// can answer at once when none does.
func (p *Policy) HasRewrites() bool { return p.rewrites }

// Rewrite applies the rewrite rules of the rule that judges in.Namespace
// to every image of in. A pod whose annotations ask for break-glass that
// the rule would honour for in (its user, groups and time included) is
// not rewritten (see [RewritePlan.BreakGlass]).
// Under a rule that requires fully qualified references, a short name is
// first written out in full (status qualified: "nginx:1.25" is
// "docker.io/library/nginx:1.25", as Docker and containerd read it), and
// the rewrite rules then see that, so a mirror of docker.io applies.
// Images the rules do not match, and images that do not parse, are left
// alone: the policy judges them as they are.
func (p *Policy) Rewrite(in Input) RewritePlan {
	r, _ := p.ruleFor(in.Namespace)
	plan := RewritePlan{RuleName: r.name, Results: make([]rewrite.Result, len(in.Images))}
	if (r.rewriter.Len() > 0 || r.requireFQ) && r.breakGlass.Enabled {
		bg := ParseBreakGlass(in.Annotations)
		plan.BreakGlass = bg.Requested && r.breakGlassRefusal(bg, in) == ""
	}
	for i, img := range in.Images {
		if plan.BreakGlass {
			plan.Results[i] = rewrite.Result{Image: img.Ref, Status: rewrite.StatusNoMatch}
			continue
		}
		plan.Results[i] = r.rewrite(img.Ref)
	}
	return plan
}

// rewrite qualifies ref when the rule requires it, then applies the
// rule's rewrite rules.
func (r *rule) rewrite(ref string) rewrite.Result {
	if !r.requireFQ || FullyQualified(ref) {
		return r.rewriter.Rewrite(ref)
	}
	named, err := reference.ParseNormalizedNamed(ref)
	// "Team/app" parses with "Team" as its registry, yet is no host
	// FullyQualified accepts: leave it to be refused.
	if err != nil || !FullyQualified(named.String()) {
		return r.rewriter.Rewrite(ref)
	}
	q := named.String()
	res := r.rewriter.Rewrite(q)
	res.Image, res.Qualified = ref, q
	if res.Status != rewrite.StatusRewritten {
		res.Status, res.Rewritten = rewrite.StatusQualified, q
	}
	return res
}

// compileRewrites compiles the rule's rewrites, reporting invalid ones
// under path and warning about mirrors the rule itself would refuse.
func (p *Policy) compileRewrites(r *rule, ro RuleOptions, path string, errs *[]error, warn func(field string, i int, msg string)) {
	if len(ro.Rewrites) == 0 {
		return
	}
	rw, err := rewrite.New(ro.Rewrites)
	if err != nil {
		for _, e := range flatten(err) {
			var re *rewrite.RuleError
			if !errors.As(e, &re) {
				*errs = append(*errs, &FieldError{Path: path + ".rewrites", Err: e})
				continue
			}
			fpath := fmt.Sprintf("%s.rewrites[%d]", path, re.Index)
			if re.Field != "" {
				fpath += "." + re.Field
			}
			*errs = append(*errs, &FieldError{Path: fpath, Err: re.Err})
		}
		return
	}
	r.rewriter = rw
	p.rewrites = true
	for _, m := range rw.Mirrors() {
		if w := lintEntry(m.From); w != "" {
			warn("rewrites", m.Index, fmt.Sprintf("rewrite %s: FROM: %s", m.Rule, w))
		}
		if len(r.whitelist) > 0 && !slices.ContainsFunc(r.whitelist, func(e RegistryEntry) bool { return covers(e, m.To) }) {
			warn("rewrites", m.Index, fmt.Sprintf("rewrite %s: rule %q's allowedRegistries (%s) do not cover the mirror %s, so the images it rewrites would be refused; add %s to allowedRegistries",
				m.Rule, r.name, r.allowedList, m.To, m.To))
		}
		for _, d := range r.denied {
			if covers(d, m.To) || covers(m.To, d) {
				warn("rewrites", m.Index, fmt.Sprintf("rewrite %s: rule %q's deniedRepositories entry %s refuses images under the mirror %s", m.Rule, r.name, d, m.To))
				break
			}
		}
	}
}
