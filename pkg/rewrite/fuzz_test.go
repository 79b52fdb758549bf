package rewrite_test

import (
	"testing"

	"github.com/distribution/reference"

	"github.com/imagegate/imagegate/pkg/rewrite"
)

// FuzzRewrite rewrites arbitrary images under the test rules plus one
// arbitrary rule, and checks what the mutating webhook relies on: an image
// that does not parse is never rewritten; a rewritten reference parses,
// lies under the matching rule's TO, keeps the tag and digest exactly, and
// is left alone by a second rewrite.
func FuzzRewrite(f *testing.F) {
	seeds := []string{
		"nginx", "nginx:1.25", "library/nginx:1.25", "docker.io/library/nginx:1.25@" + digest,
		"index.docker.io/library/busybox:1.36", "quay.io/prometheus/node-exporter:v1.8.0",
		"registry:5000/app:1", "registry:5001/app", "registry.my.com/dockerhub/library/nginx:1.25",
		"docker.io.evil.io/x:1", "quay.io.evil/x", "Nginx:1", "", "nginx:1.25 ", "ghcr.io/acme:2",
		"[::1]:5000/app:1", "localhost/app@" + digest,
	}
	for _, s := range seeds {
		f.Add(s, "docker.io/library", "registry.my.com/hub")
		f.Add(s, "registry.my.com", "mirror.my.com:5000/x")
	}
	f.Fuzz(func(t *testing.T, image, from, to string) {
		rules := make([]rewrite.Rule, 0, len(testRules)+1)
		for _, raw := range testRules {
			r, _ := rewrite.ParseRule(raw)
			rules = append(rules, r)
		}
		rw, err := rewrite.New(append(rules, rewrite.Rule{From: from, To: to}))
		if err != nil {
			rw, err = rewrite.New(rules) // the extra rule is invalid or conflicts
			if err != nil {
				t.Fatal(err)
			}
		}
		got := rw.Rewrite(image)
		orig, origErr := reference.ParseNormalizedNamed(image)
		if origErr != nil || image == "" {
			if got.Changed() || got.Status != rewrite.StatusInvalid {
				t.Fatalf("Rewrite(%q) of an invalid reference = %s %q, want it left alone as invalid", image, got.Status, got.Rewritten)
			}
			return
		}
		if !got.Changed() {
			if got.Rewritten != "" {
				t.Fatalf("Rewrite(%q) = %s with Rewritten %q", image, got.Status, got.Rewritten)
			}
			return
		}
		out, err := reference.ParseNormalizedNamed(got.Rewritten)
		if err != nil {
			t.Fatalf("Rewrite(%q) = %q, which does not parse: %v", image, got.Rewritten, err)
		}
		if !got.Mirror.To.Matches(reference.Domain(out), reference.Path(out)) {
			t.Fatalf("Rewrite(%q) = %q, not under the rule's TO %s", image, got.Rewritten, got.Mirror.To)
		}
		if tagOf(orig) != tagOf(out) || digestOf(orig) != digestOf(out) {
			t.Fatalf("Rewrite(%q) = %q changed the tag or digest: %q@%q -> %q@%q",
				image, got.Rewritten, tagOf(orig), digestOf(orig), tagOf(out), digestOf(out))
		}
		if again := rw.Rewrite(got.Rewritten); again.Changed() {
			t.Fatalf("Rewrite(%q) = %q, and again %q: not idempotent", image, got.Rewritten, again.Rewritten)
		}
	})
}

func tagOf(n reference.Named) string {
	if t, ok := n.(reference.Tagged); ok {
		return t.Tag()
	}
	return ""
}

func digestOf(n reference.Named) string {
	if d, ok := n.(reference.Digested); ok {
		return d.Digest().String()
	}
	return ""
}
