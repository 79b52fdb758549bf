package admission

import (
	"fmt"
	"net/http"
	"strings"
	"unicode"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagegate/imagegate/pkg/policy"
)

// Response is the reply body: an AdmissionReview in the version that was
// sent, carrying only the response. v1beta1's AdmissionResponse has the same
// fields and JSON names as v1's, so one type serves both.
type Response struct {
	APIVersion string                         `json:"apiVersion"`
	Kind       string                         `json:"kind"`
	Response   *admissionv1.AdmissionResponse `json:"response"`
}

// NewResponse renders a decision as the reply to review, echoing its
// apiVersion and request.uid: the apiserver rejects a reply whose uid or
// type does not match what it sent.
func NewResponse(review *admissionv1.AdmissionReview, d *policy.Decision) Response {
	resp := &admissionv1.AdmissionResponse{
		Allowed:          d.Allowed,
		AuditAnnotations: d.AuditAnnotations,
		Warnings:         Warnings(d),
	}
	if review.Request != nil {
		resp.UID = review.Request.UID
	}
	if !d.Allowed {
		resp.Result = &metav1.Status{
			Status:  metav1.StatusFailure,
			Message: d.Reason(),
			Reason:  metav1.StatusReasonForbidden,
			Code:    http.StatusForbidden,
		}
	}
	return Response{APIVersion: review.APIVersion, Kind: Kind, Response: resp}
}

// Warning limits. The apiserver sends each warning as an HTTP Warning
// header and, once their total passes 4096 characters, cuts every one to 256;
// it drops a warning with control characters or invalid UTF-8. imagegate
// stays inside that budget so what kubectl prints is what imagegate wrote:
// at most maxViolationWarnings violations, plus a header and a trailer line,
// of at most maxWarningBytes each.
const (
	maxViolationWarnings = 8
	maxWarningBytes      = 400
)

// Warnings renders what kubectl should show the user about an allowed
// request that did not simply pass: one line per violation in warn mode or
// under break-glass, after a line saying break-glass bypassed the policy.
// Full details are in the audit annotations and imagegate's log.
func Warnings(d *policy.Decision) []string {
	var out []string
	prefix := ""
	switch d.Outcome {
	case policy.OutcomeWarned:
		prefix = "imagegate warn mode, not enforced: "
	case policy.OutcomeBreakGlass:
		out = append(out, "imagegate: break-glass"+ticket(d)+" bypassed the image policy; the override is recorded in the audit log")
		prefix = "imagegate break-glass overrode: "
	case policy.OutcomeAllowed:
		if d.AuditAnnotations[policy.AuditBreakGlass] == "true" {
			out = append(out, "imagegate: break-glass"+ticket(d)+" was requested but every image passes the policy; the request is audited anyway, so consider removing the annotation")
		}
	}
	if prefix != "" {
		for i, v := range d.Violations {
			if i == maxViolationWarnings {
				out = append(out, fmt.Sprintf("imagegate: %d more violations are not shown; see the audit log", len(d.Violations)-i))
				break
			}
			out = append(out, prefix+v.String())
		}
	}
	for i, w := range out {
		out[i] = warningText(w)
	}
	return out
}

func ticket(d *policy.Decision) string {
	if t := d.BreakGlass.Ticket(); t != "" {
		return " (ticket " + t + ")"
	}
	return ""
}

// warningText makes s a warning the apiserver forwards unchanged: valid
// UTF-8, no control characters, at most maxWarningBytes.
func warningText(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return unicode.ReplacementChar
		}
		return r
	}, strings.ToValidUTF8(s, string(unicode.ReplacementChar)))
	if len(s) <= maxWarningBytes {
		return s
	}
	n := maxWarningBytes - len("...")
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
