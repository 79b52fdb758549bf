package policy_test

import (
	"strings"
	"testing"

	"github.com/distribution/reference"

	"github.com/imagegate/imagegate/pkg/policy"
)

// FuzzEvaluate feeds arbitrary images and annotations to the corpus policy
// and checks that every allow is one the rules justify: the decision never
// panics and never fails open.
func FuzzEvaluate(f *testing.F) {
	p, corpus := loadCorpus(f)
	for _, tc := range corpus.Cases {
		key, value := "", ""
		for k, v := range tc.Annotations {
			key, value = k, v
		}
		f.Add(tc.Image, key, value)
	}
	whitelist := make([]policy.RegistryEntry, 0, len(corpus.Policy.AllowedRegistries))
	for _, raw := range corpus.Policy.AllowedRegistries {
		e, err := policy.ParseRegistryEntry(raw)
		if err != nil {
			f.Fatal(err)
		}
		whitelist = append(whitelist, e)
	}
	f.Fuzz(func(t *testing.T, image, key, value string) {
		d := p.Evaluate(policy.Input{Images: []policy.Image{{Ref: image}}, Annotations: map[string]string{key: value}})
		if d.Allowed == (d.Outcome == policy.OutcomeDenied) {
			t.Fatalf("Allowed = %v with outcome %s", d.Allowed, d.Outcome)
		}
		if !d.Allowed {
			if d.Reason() == "" {
				t.Fatalf("denied %q without a reason", image)
			}
			return
		}
		if d.Outcome == policy.OutcomeBreakGlass {
			prefix, _, _ := strings.Cut(key, "/")
			if sub, ok := strings.CutSuffix(prefix, ".image-policy.k8s.io"); !ok || sub == "" || strings.ToLower(sub) != sub {
				t.Fatalf("break-glass honoured for key %q", key)
			}
			if d.AuditAnnotations["break-glass"] != "true" {
				t.Fatalf("break-glass allow without audit annotation: %v", d.AuditAnnotations)
			}
		}
		named, err := reference.ParseNormalizedNamed(image)
		if err != nil {
			t.Fatalf("allowed unparsable %q (%s): %v", image, d.Outcome, err)
		}
		if d.Outcome != policy.OutcomeAllowed {
			return
		}
		// Independent oracle for a clean allow: the normalised name sits on a
		// whitelisted registry, on a path boundary, and is pinned.
		name := strings.ToLower(reference.Domain(named)) + "/" + reference.Path(named)
		name = strings.Replace(name, "index.docker.io/", "docker.io/", 1)
		covered := false
		for _, e := range whitelist {
			covered = covered || name == e.String() || strings.HasPrefix(name, e.String()+"/") || (e.Path == "" && strings.HasPrefix(name, e.Domain+"/"))
		}
		if !covered {
			t.Fatalf("allowed %q (%s) outside the whitelist", image, name)
		}
		_, tagged := named.(reference.Tagged)
		_, digested := named.(reference.Digested)
		if !digested && (!tagged || strings.EqualFold(named.(reference.Tagged).Tag(), "latest")) {
			t.Fatalf("allowed unpinned %q", image)
		}
	})
}

// FuzzEvaluateMutated checks that whatever the images, EvaluateMutated
// decides what Evaluate decides on the images as the plan rewrites them,
// and that its violations name the images as written.
func FuzzEvaluateMutated(f *testing.F) {
	p := mustCompile(f, mirrorSpec)
	f.Add("nginx", "ghcr.io/x:1", "default", "")
	f.Add("quay.io/prometheus/prometheus:v2", "registry.my.com/dockerhub/library/nginx", "team-b", "true")
	f.Add("BAD", "", "legacy", "true")
	f.Fuzz(func(t *testing.T, a, b, namespace, breakGlass string) {
		in := policy.Input{Namespace: namespace, Images: []policy.Image{{Container: "a", Ref: a}, {Container: "b", Ref: b}},
			Annotations: map[string]string{bgFlag: breakGlass}}
		plan, d := p.EvaluateMutated(in)
		judged := policy.Input{Namespace: namespace, Annotations: in.Annotations}
		written := map[string]string{} // container -> image as written
		for i, img := range in.Images {
			written[img.Container] = img.Ref
			if r := plan.Results[i]; r.Changed() {
				img.Ref = r.Rewritten
			}
			judged.Images = append(judged.Images, img)
		}
		want := p.Evaluate(judged)
		if d.Outcome != want.Outcome || d.Reason() != want.Reason() || len(d.Violations) != len(want.Violations) {
			t.Fatalf("got %s %q, want what Evaluate decides on the rewritten images: %s %q", d.Outcome, d.Reason(), want.Outcome, want.Reason())
		}
		for i, v := range d.Violations {
			judgedRef := v.Image
			if v.Rewritten != "" {
				judgedRef = v.Rewritten
			}
			if v.Image != written[v.Container] || judgedRef != want.Violations[i].Image {
				t.Fatalf("got violation %+v, want the image as written %q and the reference judged %q", v, written[v.Container], want.Violations[i].Image)
			}
		}
	})
}

// FuzzParseRegistryEntry checks that a parsed entry is stable: its
// normalised form parses to itself.
func FuzzParseRegistryEntry(f *testing.F) {
	for _, s := range []string{"registry.my.com", "docker.io/library", "quay.io/prometheus", "[::1]:5000", "localhost:5000/x", "index.docker.io"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		e, err := policy.ParseRegistryEntry(raw)
		if err != nil {
			return
		}
		if p, err := policy.New(policy.Options{AllowedRegistries: []string{raw}}); err != nil || len(p.Warnings()) > 0 {
			// Single-label hosts ("aA000/x" parses as host aA000) cannot
			// round-trip; the policy warns about them instead.
			return
		}
		again, err := policy.ParseRegistryEntry(e.String())
		if err != nil || again.String() != e.String() {
			t.Fatalf("entry %q normalises to %q, which parses to %q, %v", raw, e.String(), again.String(), err)
		}
	})
}
