package policy

import (
	"errors"
	"fmt"

	"github.com/distribution/reference"
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
// applied and what each check found. in.Images is replaced by the image.
func (p *Policy) Explain(in Input, image string) Explanation {
	in.Images = []Image{{Ref: image}}
	r, by := p.ruleFor(in.Namespace)
	x := Explanation{Image: image, Namespace: in.Namespace, Rule: r.name, MatchedBy: by, Decision: p.Evaluate(in)}
	named, err := reference.ParseNormalizedNamed(image)
	if image == "" {
		err = errors.New("the reference is empty")
	}
	if err != nil {
		x.Steps = append(x.Steps, Step{Check: string(RuleInvalidReference), Result: "fail", Detail: err.Error()})
		return x
	}
	x.Normalized = named.String()
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
