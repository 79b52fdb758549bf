package policy_test

import (
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/rewrite"
)

var shaDigest = "@sha256:" + strings.Repeat("a", 64)

// The registry must be written: the first component is a host as
// distribution/reference reads one, checked as written, before
// normalisation, so a tag's or digest's ':' does not count.
func TestFullyQualifiedNamesARegistryAsWritten(t *testing.T) {
	t.Parallel()
	tests := []struct {
		image string
		// want says whether the image names its registry.
		want bool
		// qualified is what a short name is denied with and rewritten to.
		qualified string
	}{
		{image: "nginx", qualified: "docker.io/library/nginx"},
		{image: "nginx:1.25", qualified: "docker.io/library/nginx:1.25"},
		{image: "nginx" + shaDigest, qualified: "docker.io/library/nginx" + shaDigest},
		{image: "nginx:1.25" + shaDigest, qualified: "docker.io/library/nginx:1.25" + shaDigest},
		{image: "library/nginx", qualified: "docker.io/library/nginx"},
		{image: "bitnami/redis:7.2", qualified: "docker.io/bitnami/redis:7.2"},
		{image: "registry/app:1.0", qualified: "docker.io/registry/app:1.0"},
		{image: "docker.io/nginx", want: true},
		{image: "docker.io/library/nginx:1.25", want: true},
		{image: "index.docker.io/library/nginx", want: true},
		{image: "a.b/c", want: true},
		{image: "localhost/x", want: true},
		{image: "localhost:5000/x", want: true},
		{image: "registry:5000/x", want: true},
		{image: "[::1]:5000/x:1", want: true},
		{image: "registry.my.com/team/app" + shaDigest, want: true},
	}
	p, err := policy.New(policy.Options{RequireFullyQualified: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.image, func(t *testing.T) {
			t.Parallel()
			if got := policy.FullyQualified(tc.image); got != tc.want {
				t.Errorf("FullyQualified(%q) = %v, want %v", tc.image, got, tc.want)
			}
			d := p.Evaluate(policy.Input{Images: []policy.Image{{Ref: tc.image}}})
			if tc.want {
				if !d.Allowed {
					t.Errorf("got denied %q, want allowed", d.Reason())
				}
				return
			}
			if d.Allowed || len(d.Violations) != 1 || d.Violations[0].Check != policy.CheckFullyQualified {
				t.Fatalf("got %s %+v, want one %s violation", d.Outcome, d.Violations, policy.CheckFullyQualified)
			}
			if want := "write " + tc.qualified; !strings.HasSuffix(d.Reason(), want) {
				t.Errorf("got reason %q, want it to end %q", d.Reason(), want)
			}
			plan, after := p.EvaluateMutated(policy.Input{Images: []policy.Image{{Ref: tc.image}}})
			if got := plan.Results[0]; got.Status != rewrite.StatusQualified || got.Rewritten != tc.qualified {
				t.Errorf("got rewrite %+v, want %s qualified to %s", got, tc.image, tc.qualified)
			}
			if !after.Allowed {
				t.Errorf("after the mutating webhook: got denied %q, want the qualified form allowed", after.Reason())
			}
		})
	}
}

// Off, the check neither denies nor rewrites, and the mutating webhook
// still has nothing to do for a policy without rewrite rules.
func TestShortNamesAreLeftAloneUnlessRequired(t *testing.T) {
	t.Parallel()
	p, err := policy.New(policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := policy.Input{Images: []policy.Image{{Ref: "nginx:1.25"}}}
	if d := p.Evaluate(in); !d.Allowed {
		t.Errorf("got denied %q, want allowed", d.Reason())
	}
	if plan := p.Rewrite(in); p.HasRewrites() || plan.Changed() {
		t.Errorf("got HasRewrites %v and plan %+v, want nothing to rewrite", p.HasRewrites(), plan.Results)
	}
	fq, err := policy.New(policy.Options{RequireFullyQualified: true})
	if err != nil {
		t.Fatal(err)
	}
	if !fq.HasRewrites() {
		t.Error("got HasRewrites false under --require-fully-qualified, want true: the mutating webhook qualifies short names")
	}
}

// A short name is qualified first, and the rewrite rules see the
// qualified reference; what the rules leave alone stays qualified.
func TestQualificationComposesWithRewrites(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, policy.Spec{Default: policy.RuleOptions{
		AllowedRegistries:     []string{"registry.my.com"},
		RequireFullyQualified: true,
		Rewrites:              rules("docker.io/library=registry.my.com/hub", "quay.io=registry.my.com/quay", "docker.io/acme/base=registry.my.com"),
	}})
	tests := []struct {
		image string
		// status and rewritten are what the plan makes of image.
		status    rewrite.Status
		rewritten string
		// denied is the check the mutated image still fails, if any.
		denied policy.Check
	}{
		{image: "nginx:1.25", status: rewrite.StatusRewritten, rewritten: "registry.my.com/hub/nginx:1.25"},
		{image: "docker.io/nginx:1.25", status: rewrite.StatusRewritten, rewritten: "registry.my.com/hub/nginx:1.25"},
		{image: "bitnami/redis:7.2", status: rewrite.StatusQualified, rewritten: "docker.io/bitnami/redis:7.2", denied: policy.CheckRegistry},
		{image: "acme/base:1", status: rewrite.StatusQualified, rewritten: "docker.io/acme/base:1", denied: policy.CheckRegistry},
		{image: "quay.io/x/y:1", status: rewrite.StatusRewritten, rewritten: "registry.my.com/quay/x/y:1"},
		{image: "registry.my.com/app:1", status: rewrite.StatusMirrored},
		{image: "Not/Valid", status: rewrite.StatusInvalid, denied: policy.CheckInvalidReference},
	}
	for _, tc := range tests {
		t.Run(tc.image, func(t *testing.T) {
			t.Parallel()
			plan, d := p.EvaluateMutated(policy.Input{Images: []policy.Image{{Ref: tc.image}}})
			got := plan.Results[0]
			if got.Status != tc.status || got.Rewritten != tc.rewritten || got.Image != tc.image {
				t.Errorf("got %s %q from %q, want %s %q", got.Status, got.Rewritten, got.Image, tc.status, tc.rewritten)
			}
			if tc.status == rewrite.StatusRewritten && !policy.FullyQualified(tc.image) && got.Qualified == "" {
				t.Errorf("got no Qualified for the short name %q, want the form the rules saw", tc.image)
			}
			var checks []policy.Check
			for _, v := range d.Violations {
				checks = append(checks, v.Check)
			}
			if tc.denied == "" && len(checks) > 0 || tc.denied != "" && (len(checks) != 1 || checks[0] != tc.denied) {
				t.Errorf("after rewriting: got violations %q, want %q", checks, tc.denied)
			}
		})
	}
}

// Break-glass overrides a short name as it overrides a registry, and a
// pod that asks for it keeps its images as written.
func TestBreakGlassOverridesAndKeepsShortNames(t *testing.T) {
	t.Parallel()
	p, err := policy.New(policy.Options{RequireFullyQualified: true, AllowBreakGlass: true})
	if err != nil {
		t.Fatal(err)
	}
	in := policy.Input{Images: []policy.Image{{Ref: "nginx:1.25"}}, Annotations: map[string]string{"ops.image-policy.k8s.io/break-glass": "true"}}
	plan, d := p.EvaluateMutated(in)
	if !plan.BreakGlass || plan.Changed() {
		t.Errorf("got plan %+v, want break-glass and nothing rewritten", plan)
	}
	if d.Outcome != policy.OutcomeBreakGlass || len(d.Violations) != 1 || d.Violations[0].Check != policy.CheckFullyQualified {
		t.Errorf("got %s %q, want the %s violation overridden", d.Outcome, d.Reason(), policy.CheckFullyQualified)
	}
}

// --explain shows the qualification as the rewrite and the check it
// passes afterwards; off, the check is not mentioned at all.
func TestExplainShowsTheQualification(t *testing.T) {
	t.Parallel()
	p, err := policy.New(policy.Options{RequireFullyQualified: true})
	if err != nil {
		t.Fatal(err)
	}
	x := p.Explain(policy.Input{}, "nginx:1.25")
	if x.Rewrite == nil || x.Rewrite.Status != rewrite.StatusQualified || x.Judged != "docker.io/library/nginx:1.25" {
		t.Fatalf("got rewrite %+v judged %q, want the qualified form judged", x.Rewrite, x.Judged)
	}
	if len(x.Steps) == 0 || x.Steps[0].Check != string(policy.CheckFullyQualified) || x.Steps[0].Result != "pass" {
		t.Errorf("got steps %+v, want fully-qualified passing first", x.Steps)
	}
	off, err := policy.New(policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range off.Explain(policy.Input{}, "nginx:1.25").Steps {
		if s.Check == string(policy.CheckFullyQualified) {
			t.Errorf("got step %+v with the check off, want none", s)
		}
	}
}

// FuzzQualify checks, for any image under a rule that requires fully
// qualified references and mirrors Docker Hub: a short name is never
// allowed as written; the mutating webhook's plan writes it out as the
// reference it normalises to (or mirrors that), which names its registry
// and is not rewritten again; and what the plan produces is refused for
// being short only when it cannot be written out.
func FuzzQualify(f *testing.F) {
	p := mustCompile(f, policy.Spec{Default: policy.RuleOptions{
		RequireFullyQualified: true, Rewrites: rules("docker.io/library=registry.my.com/hub"),
	}})
	for _, s := range []string{"nginx", "nginx:1.25", "library/nginx" + shaDigest, "bitnami/redis:7", "localhost/x", "registry:5000/x", "Team/app", "a.b/c", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, image string) {
		in := policy.Input{Images: []policy.Image{{Ref: image}}}
		if d := p.Evaluate(in); d.Allowed && !policy.FullyQualified(image) {
			t.Fatalf("allowed the short name %q", image)
		}
		plan, d := p.EvaluateMutated(in)
		for _, v := range d.Violations {
			// Only a name like "Team/app", whose first component
			// reference reads as a registry though it is no host, stays.
			if n, _ := policy.Normalize(image); v.Check == policy.CheckFullyQualified && policy.FullyQualified(n) {
				t.Fatalf("after the plan %+v: got %s, want no short name left", plan.Results[0], v)
			}
		}
		r := plan.Results[0]
		if r.Qualified == "" {
			if r.Changed() && !policy.FullyQualified(image) {
				t.Fatalf("rewrote the short name %q without qualifying it: %+v", image, r)
			}
			return
		}
		want, err := policy.Normalize(image)
		if err != nil || r.Qualified != want || !policy.FullyQualified(r.Qualified) || !policy.FullyQualified(r.Rewritten) {
			t.Fatalf("qualified %q as %q then %q, want %q (%v), naming a registry", image, r.Qualified, r.Rewritten, want, err)
		}
		if again := p.Rewrite(policy.Input{Images: []policy.Image{{Ref: r.Rewritten}}}); again.Changed() {
			t.Fatalf("rewrote %q again to %+v, want rewriting idempotent", r.Rewritten, again.Results[0])
		}
	})
}
