package policy

import (
	"strconv"
	"strings"
)

// Rule names a policy rule; it is stable and safe to use as a metric label.
type Rule string

const (
	// RuleInvalidReference means the image is not a parsable reference.
	RuleInvalidReference Rule = "invalid-reference"
	// RuleRegistry means the image's registry or repository is not whitelisted.
	RuleRegistry Rule = "registry"
	// RuleLatestTag means the image is untagged or tagged latest, without digest.
	RuleLatestTag Rule = "latest-tag"
	// RuleNoImages means the request named no image at all.
	RuleNoImages Rule = "no-images"
	// RuleDeniedRepository means the image is in a denied repository.
	RuleDeniedRepository Rule = "denied-repository"
	// RuleDigestRequired means the rule requires a digest and the image has none.
	RuleDigestRequired Rule = "digest-required"
)

// Overridable reports whether break-glass may override a violation of r.
// An unparsable reference cannot run anywhere and an empty request is not a
// pod, so overriding those would only hide a broken request.
func (r Rule) Overridable() bool {
	return r == RuleRegistry || r == RuleLatestTag || r == RuleDeniedRepository || r == RuleDigestRequired
}

// Violation is one reason an image is refused.
type Violation struct {
	// Container names the container using the image, when known.
	Container string
	// Source says what Container names ("container" when empty), as in
	// [Image].
	Source string
	// Image is the reference as written in the pod spec.
	Image string
	// Normalized is the fully qualified reference; empty when unparsable.
	Normalized string
	// Rule is the rule that was violated.
	Rule Rule
	// Message says what is wrong and how to fix it.
	Message string
}

// String renders the violation as one self-contained sentence, e.g.
// `container "app" image "nginx:1.25": registry docker.io is not allowed ...`.
func (v Violation) String() string {
	var b strings.Builder
	v.writeTo(&b)
	return b.String()
}

func (v Violation) writeTo(b *strings.Builder) {
	// Quoting escapes control characters and quotes, so an image written to
	// confuse the reader still reads as exactly one quoted string.
	if v.Container != "" {
		if v.Source == "" {
			b.WriteString("container ")
		} else {
			b.WriteString(v.Source)
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Quote(v.Container))
		b.WriteByte(' ')
	}
	if v.Rule != RuleNoImages {
		b.WriteString("image ")
		b.WriteString(strconv.Quote(v.Image))
		b.WriteString(": ")
	}
	b.WriteString(v.Message)
}

// Outcome summarises a Decision for logs and metrics.
type Outcome string

const (
	// OutcomeAllowed means no violation.
	OutcomeAllowed Outcome = "allowed"
	// OutcomeDenied means at least one violation, enforced.
	OutcomeDenied Outcome = "denied"
	// OutcomeBreakGlass means violations overridden by a break-glass annotation.
	OutcomeBreakGlass Outcome = "break-glass"
	// OutcomeWarned means violations reported but not enforced (warn mode).
	OutcomeWarned Outcome = "warned"
)

// Audit annotation keys set on a Decision. The kube-apiserver records them in
// its audit log under its own prefix
// (imagepolicywebhook.image-policy.k8s.io/<key> for ImagePolicyWebhook).
const (
	AuditBreakGlass = "break-glass"
	AuditTicket     = "ticket"
	AuditOverridden = "overridden-violations"
	AuditWarned     = "warn-mode-violations"
	// AuditBreakGlassRefused says why a break-glass request was refused.
	AuditBreakGlassRefused = "break-glass-refused"
	// AuditPolicyHash and AuditPolicyRule name the policy version (see
	// [Policy.Hash]) and the rule that judged; set on every decision of a
	// policy that has a hash, i.e. one loaded from a policy file.
	AuditPolicyHash = "policy-hash"
	AuditPolicyRule = "policy-rule"
)

// Decision is the policy's answer for one pod.
type Decision struct {
	// Allowed says whether the pod may run.
	Allowed bool
	// Outcome says why it is allowed or not.
	Outcome Outcome
	// Mode is the mode of the rule that decided.
	Mode Mode
	// RuleName names the rule that decided: "default" or a namespace
	// rule's name.
	RuleName string
	// Violations lists every problem found, in the order of the pod's
	// images and then of the rules; duplicates of one container and image
	// are judged once.
	Violations []Violation
	// BreakGlass describes the pod's break-glass request, if any.
	BreakGlass BreakGlass
	// BreakGlassDisabled is set when the pod asked for break-glass but the
	// policy does not allow it.
	BreakGlassDisabled bool
	// BreakGlassRefused says why the rule refused the pod's break-glass
	// request (no ticket, a user not allowed, an expired annotation); empty
	// when it was not refused.
	BreakGlassRefused string
	// AuditAnnotations are key/value pairs the caller should record in the
	// audit log (see the Audit* keys).
	AuditAnnotations map[string]string
}

// resolve turns the violations and break-glass request into the verdict.
func (d *Decision) resolve(allowBreakGlass bool, refusal string) {
	bg := d.BreakGlass.Requested
	switch {
	case bg && !allowBreakGlass:
		d.BreakGlassDisabled = true
		bg = false
	case bg && refusal != "":
		d.BreakGlassRefused = refusal
		bg = false
	}
	switch {
	case len(d.Violations) == 0:
		d.Allowed, d.Outcome = true, OutcomeAllowed
	case bg && d.allOverridable():
		d.Allowed, d.Outcome = true, OutcomeBreakGlass
	case d.Mode == ModeWarn:
		d.Allowed, d.Outcome = true, OutcomeWarned
	default:
		d.Allowed, d.Outcome = false, OutcomeDenied
	}
	// Break-glass is never silent: it is audited even when nothing needed
	// overriding, so the audit log shows who carries the annotation.
	if bg && d.Allowed {
		d.AuditAnnotations = map[string]string{AuditBreakGlass: "true"}
		if t := d.BreakGlass.Ticket(); t != "" {
			d.AuditAnnotations[AuditTicket] = t
		}
		if len(d.Violations) > 0 {
			d.AuditAnnotations[AuditOverridden] = d.Summary()
		}
	} else if d.Outcome == OutcomeWarned {
		d.AuditAnnotations = map[string]string{AuditWarned: d.Summary()}
	}
	if d.BreakGlassRefused != "" {
		if d.AuditAnnotations == nil {
			d.AuditAnnotations = map[string]string{}
		}
		d.AuditAnnotations[AuditBreakGlassRefused] = d.BreakGlassRefused
	}
}

func (d *Decision) allOverridable() bool {
	for _, v := range d.Violations {
		if !v.Rule.Overridable() {
			return false
		}
	}
	return true
}

// Summary joins every violation into one line, in order, separated by "; ".
func (d *Decision) Summary() string {
	var b strings.Builder
	for i, v := range d.Violations {
		if i > 0 {
			b.WriteString("; ")
		}
		v.writeTo(&b)
	}
	return b.String()
}

// Reason is the human-readable explanation of the decision: empty for a
// clean allow, otherwise every violation and what happened to it.
func (d *Decision) Reason() string {
	switch d.Outcome {
	case OutcomeAllowed:
		return ""
	case OutcomeBreakGlass:
		return "break-glass" + d.BreakGlass.ticketSuffix() + " overrode: " + d.Summary()
	case OutcomeWarned:
		return "warn mode, not enforced: " + d.Summary()
	}
	s := d.Summary()
	switch {
	case d.BreakGlassDisabled:
		s += "; break-glass was requested but is disabled on this server"
	case d.BreakGlassRefused != "":
		s += "; break-glass refused: " + d.BreakGlassRefused
	case d.BreakGlass.Requested:
		s += "; break-glass cannot override an invalid image reference or an empty request"
	}
	return s
}
