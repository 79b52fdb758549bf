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
	whitelist := make([]policy.RegistryEntry, 0, len(corpus.Policy.RegistryWhitelist))
	for _, raw := range corpus.Policy.RegistryWhitelist {
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
		if p, err := policy.New(policy.Options{RegistryWhitelist: []string{raw}}); err != nil || len(p.Warnings()) > 0 {
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
