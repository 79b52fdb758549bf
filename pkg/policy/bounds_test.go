package policy_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
)

func images(n int, format string) []policy.Image {
	out := make([]policy.Image, n)
	for i := range out {
		out[i] = policy.Image{Container: fmt.Sprintf("c%d", i), Ref: fmt.Sprintf(format, i)}
	}
	return out
}

func TestEvaluateDeniesMoreImagesThanTheCapWhole(t *testing.T) {
	t.Parallel()
	// Warn mode reports it like any violation; break-glass cannot override it.
	p := mustPolicy(t, policy.Options{AllowedRegistries: []string{"registry.my.com"}, AllowBreakGlass: true})
	tests := []struct {
		name    string
		images  int
		allowed bool
	}{
		{name: "at the cap, every image allowed", images: policy.MaxImages, allowed: true},
		{name: "one over the cap, even with break-glass", images: policy.MaxImages + 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := p.Evaluate(policy.Input{
				Images:      images(tc.images, "registry.my.com/app:%d"),
				Annotations: map[string]string{"x.image-policy.k8s.io/break-glass": "true"},
			})
			if d.Allowed != tc.allowed {
				t.Fatalf("allowed = %v, want %v: %s", d.Allowed, tc.allowed, d.Reason())
			}
			if tc.allowed {
				return
			}
			if len(d.Violations) != 1 || d.Violations[0].Check != policy.CheckTooManyImages {
				t.Fatalf("violations = %+v, want one %s", d.Violations, policy.CheckTooManyImages)
			}
			if want := fmt.Sprintf("the request lists %d images, more than the %d", tc.images, policy.MaxImages); !strings.Contains(d.Reason(), want) {
				t.Errorf("reason %q does not say %q", d.Reason(), want)
			}
		})
	}
}

func TestEvaluateJudgesRepeatedImagesOnce(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, policy.Options{AllowedRegistries: []string{"registry.my.com"}})
	// Past the scan, the map must still see every earlier image.
	in := policy.Input{Images: append(images(40, "evil.io/app:%d"), images(40, "evil.io/app:%d")...)}
	if got := len(p.Evaluate(in).Violations); got != 40 {
		t.Errorf("%d violations for 40 distinct images written twice, want 40", got)
	}
}

func TestTextsAreBoundedWhateverTheReviewHolds(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, policy.Options{AllowedRegistries: []string{"registry.my.com"}, AllowBreakGlass: true, Mode: policy.ModeWarn})
	long := "evil.io/" + strings.Repeat("a", 100_000) + ":1"
	tests := []struct {
		name       string
		images     []policy.Image
		wantMore   string // the count of violations not spelled out
		wantQuoted string
	}{
		{name: "many violations", images: images(policy.MaxImages, "evil.io/app:%d"), wantMore: fmt.Sprintf("; and %d more", policy.MaxImages-policy.MaxSummaryViolations)},
		{name: "a huge image", images: []policy.Image{{Container: strings.Repeat("c", 5000), Ref: long}}, wantQuoted: fmt.Sprintf("(%d bytes)", len(long))},
		{name: "a line break in an image", images: []policy.Image{{Ref: "evil.io/a:1\nlevel=ERROR msg=forged"}}, wantQuoted: `"evil.io/a:1\nlevel=ERROR msg=forged"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := p.Evaluate(policy.Input{Images: tc.images})
			for _, text := range []string{d.Reason(), d.Summary(), d.AuditAnnotations[policy.AuditWarned]} {
				if len(text) > 16<<10 {
					t.Errorf("text of %d bytes, want at most 16 KiB", len(text))
				}
				if strings.ContainsAny(text, "\n\r") {
					t.Errorf("text %q spans lines", text)
				}
				if !strings.Contains(text, tc.wantMore) || !strings.Contains(text, tc.wantQuoted) {
					t.Errorf("text %.300q... lacks %q and %q", text, tc.wantMore, tc.wantQuoted)
				}
			}
		})
	}
}

func TestRefuseAndPassCarryThePolicysAnnotations(t *testing.T) {
	t.Parallel()
	p, err := policy.Compile(policy.Spec{
		Source:  "policy.yaml",
		Default: policy.RuleOptions{AllowedRegistries: []string{"registry.my.com"}, Mode: policy.ModeWarn},
		Rules:   []policy.RuleOptions{{Name: "team-a", Namespaces: []string{"team-a"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	refused := p.Refuse("team-a", "too large")
	if refused.Allowed || refused.Outcome != policy.OutcomeDenied || refused.Violations[0].Check != policy.CheckUnreadable {
		t.Errorf("Refuse = %+v, want denied as %s even in warn mode", refused, policy.CheckUnreadable)
	}
	if refused.Reason() != "too large" {
		t.Errorf("Refuse reason = %q, want the why alone", refused.Reason())
	}
	passed := p.Pass("team-a")
	if !passed.Allowed || passed.Outcome != policy.OutcomeAllowed {
		t.Errorf("Pass = %+v, want allowed", passed)
	}
	for _, d := range []policy.Decision{refused, passed} {
		if d.AuditAnnotations[policy.AuditPolicyHash] != p.Hash() || d.AuditAnnotations[policy.AuditPolicyRule] != "team-a" {
			t.Errorf("annotations = %v, want the policy hash and rule team-a", d.AuditAnnotations)
		}
	}
}
