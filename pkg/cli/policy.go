package cli

import (
	"fmt"
	"io"

	"github.com/imagegate/imagegate/pkg/policy"
)

// writeExplanation prints how one image was judged, for check --explain.
func writeExplanation(w io.Writer, x *policy.Explanation, hash string) {
	fmt.Fprintf(w, "image %q\n", x.Image)
	if x.Normalized != "" {
		fmt.Fprintf(w, "  normalised:         %s\n", x.Normalized)
	}
	by := "no namespace rule matches"
	if x.MatchedBy != "" {
		by = fmt.Sprintf("matches %q", x.MatchedBy)
	}
	version := ""
	if hash != "" {
		version = " in policy " + hash
	}
	fmt.Fprintf(w, "  rule:               %s (namespace %q %s)%s\n", x.Rule, x.Namespace, by, version)
	// The checks below judge the rewritten image, as the cluster would
	// after the mutating webhook.
	switch {
	case x.RewriteBreakGlass:
		fmt.Fprintf(w, "  rewrite:            none: the pod asks for break-glass, which keeps its images as written\n")
	case x.Rewrite != nil:
		fmt.Fprintf(w, "  rewrite:            %s\n", x.Rewrite.Describe())
	}
	for _, s := range x.Steps {
		fmt.Fprintf(w, "  %-19s %-4s  %s\n", s.Check+":", s.Result, s.Detail)
	}
	d := &x.Decision
	verdict := string(d.Outcome)
	if r := d.Reason(); r != "" && d.Outcome != policy.OutcomeDenied {
		verdict += ": " + r
	} else if d.BreakGlassRefused != "" || d.BreakGlassDisabled {
		verdict += " (" + d.BreakGlassNote() + ")"
	}
	fmt.Fprintf(w, "  verdict:            %s\n", verdict)
}
