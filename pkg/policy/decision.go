package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// Check names one of the checks a rule applies; it is stable and safe to
// use as a metric label (imagegate's metrics call it "rule").
type Check string

const (
	// CheckInvalidReference means the image is not a parsable reference.
	CheckInvalidReference Check = "invalid-reference"
	// CheckRegistry means the image's registry or repository is not whitelisted.
	CheckRegistry Check = "registry"
	// CheckLatestTag means the image is untagged or tagged latest, without digest.
	CheckLatestTag Check = "latest-tag"
	// CheckNoImages means the request named no image at all.
	CheckNoImages Check = "no-images"
	// CheckDeniedRepository means the image is in a denied repository.
	CheckDeniedRepository Check = "denied-repository"
	// CheckDigestRequired means the rule requires a digest and the image has none.
	CheckDigestRequired Check = "digest-required"
	// CheckTooManyImages means the request lists more than [MaxImages].
	CheckTooManyImages Check = "too-many-images"
	// CheckUnreadable means the request could not be read: too large, or
	// an object imagegate cannot decode (see [Policy.Refuse]).
	CheckUnreadable Check = "unreadable-request"
	// CheckFullyQualified means the rule requires references that name
	// their registry and the image is a short name ("nginx:1.25"), which
	// CRI-O and Podman resolve through registries.conf, not as Docker Hub.
	CheckFullyQualified Check = "fully-qualified"
)

// Checks returns every Rule: the values of the rule label of metrics.
func Checks() []Check {
	return []Check{
		CheckInvalidReference, CheckRegistry, CheckLatestTag, CheckNoImages,
		CheckDeniedRepository, CheckDigestRequired, CheckTooManyImages, CheckUnreadable,
		CheckFullyQualified,
	}
}

// Overridable reports whether break-glass may override a violation of r.
// An unparsable reference cannot run anywhere, and an empty or oversized
// request is not a pod, so overriding those would only hide a broken request.
// A short name is a real image whose registry the node chooses, a risk of
// the same kind as a registry outside the whitelist, so it is overridable.
func (r Check) Overridable() bool {
	return r == CheckRegistry || r == CheckLatestTag || r == CheckDeniedRepository || r == CheckDigestRequired ||
		r == CheckFullyQualified
}

// aboutImage reports whether a violation of r names an image, even an
// empty one; the others are about the whole request.
func (r Check) aboutImage() bool {
	return r != CheckNoImages && r != CheckTooManyImages && r != CheckUnreadable
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
	// Rewritten is the reference judged instead of Image, the mutating
	// webhook's rewrite of it (see [Policy.EvaluateMutated]); empty when
	// Image itself was judged.
	Rewritten string
	// Normalized is the fully qualified form of the reference judged;
	// empty when unparsable.
	Normalized string
	// Check is the check that failed.
	Check Check
	// Message says what is wrong and how to fix it.
	Message string
}

// String renders the violation as one self-contained sentence about the
// reference judged, e.g.
// `container "app" image "nginx:1.25": registry docker.io is not allowed ...`.
func (v Violation) String() string {
	var b strings.Builder
	v.writeTo(&b)
	return b.String()
}

func (v Violation) writeTo(b *strings.Builder) {
	if v.Container != "" {
		if v.Source == "" {
			b.WriteString("container ")
		} else {
			b.WriteString(v.Source)
			b.WriteByte(' ')
		}
		writeQuoted(b, v.Container)
		b.WriteByte(' ')
	}
	if v.Check.aboutImage() {
		b.WriteString("image ")
		judged := v.Image
		if v.Rewritten != "" {
			judged = v.Rewritten
		}
		writeQuoted(b, judged)
		b.WriteString(": ")
	}
	b.WriteString(v.Message)
}

// maxQuoted bounds a name or image as a message quotes it: valid ones are
// far shorter (a reference's name is at most 255 bytes).
const maxQuoted = 300

// writeQuoted quotes s, cut to maxQuoted bytes. Quoting escapes control
// characters and quotes, so a string written to confuse the reader still
// reads as exactly one quoted string on one line.
func writeQuoted(b *strings.Builder, s string) {
	if len(s) <= maxQuoted {
		b.WriteString(strconv.Quote(s))
		return
	}
	b.WriteString(strconv.Quote(truncate(s, maxQuoted)))
	fmt.Fprintf(b, " (%d bytes)", len(s))
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
		if !v.Check.Overridable() {
			return false
		}
	}
	return true
}

// MaxSummaryViolations bounds how many violations [Decision.Summary]
// spells out; the rest are counted. With every quoted string bounded too,
// a reason, an audit annotation or a log line stays a few kilobytes
// whatever the request held.
const MaxSummaryViolations = 20

// Summary joins the violations into one line, in order, separated by "; ":
// the first MaxSummaryViolations, then "and N more".
func (d *Decision) Summary() string {
	var b strings.Builder
	for i, v := range d.Violations {
		if i == MaxSummaryViolations {
			fmt.Fprintf(&b, "; and %d more", len(d.Violations)-i)
			break
		}
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
	if note := d.BreakGlassNote(); note != "" {
		return d.Summary() + "; " + note
	}
	return d.Summary()
}

// BreakGlassNote says why the pod's break-glass request did not admit
// it: disabled, refused by the rule, or not overriding what it violates;
// "" when it asked for none, or when break-glass admitted it.
func (d *Decision) BreakGlassNote() string {
	switch {
	case d.BreakGlassDisabled:
		return "break-glass was requested but is disabled on this server"
	case d.BreakGlassRefused != "":
		return "break-glass refused: " + d.BreakGlassRefused
	case d.BreakGlass.Requested && !d.Allowed:
		return "break-glass cannot override an invalid image reference, an empty request or one with too many images"
	}
	return ""
}

// Refuse is the decision on a request in namespace that the policy cannot
// judge (it is too large to read, or its object does not decode): denied
// whatever the mode, since nothing in it could be allowed, with the audit
// annotations of every decision.
func (p *Policy) Refuse(namespace, why string) Decision {
	r, _ := p.ruleFor(namespace)
	d := Decision{Mode: r.mode, RuleName: r.name, Outcome: OutcomeDenied,
		Violations: []Violation{{Check: CheckUnreadable, Message: why}}}
	p.annotateDecision(&d, r)
	return d
}

// Pass is the decision on a request with nothing to judge (a DELETE, an
// UPDATE that adds no image): allowed, with the audit annotations of every
// decision.
func (p *Policy) Pass(namespace string) Decision {
	r, _ := p.ruleFor(namespace)
	d := Decision{Allowed: true, Outcome: OutcomeAllowed, Mode: r.mode, RuleName: r.name}
	p.annotateDecision(&d, r)
	return d
}

// annotateDecision adds the policy-hash and policy-rule audit annotations
// to d, for a policy loaded from a file.
func (p *Policy) annotateDecision(d *Decision, r *rule) {
	if !p.annotate {
		return
	}
	if d.AuditAnnotations == nil {
		d.AuditAnnotations = make(map[string]string, 2)
	}
	d.AuditAnnotations[AuditPolicyHash] = p.hash
	d.AuditAnnotations[AuditPolicyRule] = r.name
}
