package policy_test

import (
	"slices"
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/rewrite"
)

// Pins names what the mutating webhook pins: tagged images the rule
// allows but for requireDigest, as they will be pulled, looked up
// normalised; nothing with a digest, nothing refused, nothing without pinDigests.
func TestPinsTaggedImagesTheRuleAllows(t *testing.T) {
	t.Parallel()
	pinning := policy.RuleOptions{Name: policy.DefaultRuleName, PinDigests: true, RequireDigest: true, RejectLatest: true,
		AllowedRegistries: []string{"registry.my.com"}, DeniedRepositories: []string{"registry.my.com/legacy"},
		Rewrites: []rewrite.Rule{{From: "docker.io", To: "registry.my.com/dockerhub"}}, BreakGlass: policy.BreakGlassOptions{Enabled: true}}
	notPinning := pinning
	notPinning.PinDigests = false
	qualifying := policy.RuleOptions{Name: policy.DefaultRuleName, PinDigests: true, RequireFullyQualified: true}
	tests := []struct {
		name        string
		rule        policy.RuleOptions
		image       string
		annotations map[string]string
		// want is the reference pinned, lookup what is looked up; both
		// empty when the image is not pinned.
		want, lookup string
	}{
		{name: "a tagged image is pinned as written", rule: pinning, image: "registry.my.com/team/app:1.4",
			want: "registry.my.com/team/app:1.4", lookup: "registry.my.com/team/app:1.4"},
		{name: "a mirrored image is pinned at the mirror", rule: pinning, image: "nginx:1.25",
			want: "registry.my.com/dockerhub/library/nginx:1.25", lookup: "registry.my.com/dockerhub/library/nginx:1.25"},
		{name: "a qualified short name is pinned qualified", rule: qualifying, image: "nginx:1.25",
			want: "docker.io/library/nginx:1.25", lookup: "docker.io/library/nginx:1.25"},
		{name: "a short name left as written is looked up normalised", rule: policy.RuleOptions{Name: policy.DefaultRuleName, PinDigests: true},
			image: "nginx:1.25", want: "nginx:1.25", lookup: "docker.io/library/nginx:1.25"},
		{name: "an image with a digest is left as written", rule: pinning, image: "registry.my.com/team/app:1.4" + shaDigest},
		{name: "an image without a tag is left to rejectLatest", rule: policy.RuleOptions{Name: policy.DefaultRuleName, PinDigests: true},
			image: "registry.my.com/team/app"},
		{name: "a refused registry is not looked up", rule: pinning, image: "quay.io/team/app:1.4"},
		{name: "a denied repository is not looked up", rule: pinning, image: "registry.my.com/legacy/app:1.4"},
		{name: "a latest tag the rule refuses is not looked up", rule: pinning, image: "registry.my.com/team/app:latest"},
		{name: "an invalid reference is not looked up", rule: pinning, image: "Registry.my.com/UPPER:1"},
		{name: "nothing is pinned without pinDigests", rule: notPinning, image: "registry.my.com/team/app:1.4"},
		{name: "nothing is pinned under honoured break-glass", rule: pinning, image: "registry.my.com/team/app:1.4",
			annotations: map[string]string{"ops.image-policy.k8s.io/break-glass": "true"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := policy.Compile(policy.Spec{Default: tc.rule})
			if err != nil {
				t.Fatal(err)
			}
			in := policy.Input{Namespace: "team-a", Annotations: tc.annotations,
				Images: []policy.Image{{Container: "sidecar", Ref: "registry.my.com/other" + shaDigest}, {Container: "app", Ref: tc.image}}}
			pins := p.Pins(in, p.Rewrite(in))
			var want []policy.Pin
			if tc.want != "" {
				want = []policy.Pin{{Index: 1, Ref: tc.want, Lookup: tc.lookup}}
			}
			if !slices.Equal(pins, want) {
				t.Errorf("got %+v, want %+v", pins, want)
			}
			if p.HasPins() != tc.rule.PinDigests {
				t.Errorf("got HasPins %v, want %v", p.HasPins(), tc.rule.PinDigests)
			}
		})
	}
}

// Tags is Pins with the images already pinned: an audit asks what their
// tag resolves to now, so Lookup drops the digest they carry.
func TestTagsIncludePinnedImages(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, policy.Options{PinDigests: true, AllowedRegistries: []string{"registry.my.com"}})
	in := policy.Input{Namespace: "team-a", Images: []policy.Image{
		{Container: "pinned", Ref: "registry.my.com/team/app:1.4" + shaDigest},
		{Container: "digest-only", Ref: "registry.my.com/team/app" + shaDigest},
		{Container: "tagged", Ref: "registry.my.com/team/web:2"},
		{Container: "refused", Ref: "quay.io/team/app:1.4" + shaDigest},
	}}
	plan := p.Rewrite(in)
	want := []policy.Pin{
		{Index: 0, Ref: "registry.my.com/team/app:1.4" + shaDigest, Lookup: "registry.my.com/team/app:1.4", Digest: shaDigest[1:]},
		{Index: 2, Ref: "registry.my.com/team/web:2", Lookup: "registry.my.com/team/web:2"},
	}
	if got := p.Tags(in, plan); !slices.Equal(got, want) {
		t.Errorf("Tags: got %+v, want %+v", got, want)
	}
	if got := p.Pins(in, plan); !slices.Equal(got, want[1:]) {
		t.Errorf("Pins: got %+v, want %+v", got, want[1:])
	}
}
