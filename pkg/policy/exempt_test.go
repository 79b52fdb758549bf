package policy_test

import (
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
)

// An exact exemption compares what the runtime pulls: with a digest,
// repository@digest whatever the tag; without, repository:tag, where no
// tag means latest.
func TestExemptionsCompareWhatIsPulled(t *testing.T) {
	t.Parallel()
	const (
		d = "@sha256:4c9d9d4b6b4f1ce3e6a5d5e4c1b44ad9e4e0b3f0b1b51f19e3ef9c0f6d5a7e1a"
		x = "@sha256:0000000000000000000000000000000000000000000000000000000000000001"
	)
	tests := []struct {
		entry  string // the exemptImages entry
		image  string // the pod's image
		exempt bool   // whether the entry exempts it
	}{
		{entry: "docker.io/library/foo:latest", image: "foo", exempt: true},
		{entry: "docker.io/library/foo:latest", image: "foo:latest", exempt: true},
		{entry: "docker.io/library/foo:latest", image: "index.docker.io/library/foo", exempt: true},
		{entry: "docker.io/library/foo:latest", image: "foo:1.0"},
		{entry: "docker.io/library/foo:latest", image: "foo:latest" + d}, // pulls d, which may not be latest
		{entry: "docker.io/library/foo:1.0", image: "foo:1.0", exempt: true},
		{entry: "docker.io/library/foo:1.0", image: "foo:1.0" + x}, // pulls x
		{entry: "docker.io/library/foo:1.0", image: "foo"},
		{entry: "docker.io/library/bar" + d, image: "bar" + d, exempt: true},
		{entry: "docker.io/library/bar" + d, image: "bar:9.9" + d, exempt: true},
		{entry: "docker.io/library/bar" + d, image: "bar" + x},
		{entry: "docker.io/library/bar" + d, image: "bar:9.9"},
		{entry: "docker.io/library/bar" + d, image: "baz" + d}, // another repository
		{entry: "docker.io/library/bar:9.9" + d, image: "bar" + d, exempt: true},
		{entry: "docker.io/library/bar:9.9" + d, image: "bar:1.0" + d, exempt: true},
		{entry: "docker.io/library/bar:9.9" + d, image: "bar:9.9"}, // the tag may move off d
		{entry: "Registry.K8s.IO/pause:3.10", image: "registry.k8s.io/pause:3.10", exempt: true},
		{entry: "registry.k8s.io/pause", image: "registry.k8s.io/pause:3.10" + x, exempt: true}, // a repository entry: any tag or digest
	}
	for _, tc := range tests {
		t.Run(tc.entry+" exempts "+tc.image, func(t *testing.T) {
			t.Parallel()
			p := mustCompile(t, policy.Spec{Default: policy.RuleOptions{
				AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true, ExemptImages: []string{tc.entry},
			}})
			d := p.Evaluate(policy.Input{Namespace: "default", Images: []policy.Image{{Ref: tc.image}}})
			if got := d.Outcome == policy.OutcomeAllowed; got != tc.exempt {
				t.Errorf("got %s (%s), want exempt=%v", d.Outcome, d.Reason(), tc.exempt)
			}
		})
	}
}

// Entries that name the same pull are one exemption, so writing both
// changes neither the decisions nor the hash.
func TestExemptionsThatPullTheSameImageHashAlike(t *testing.T) {
	t.Parallel()
	const d = "@sha256:4c9d9d4b6b4f1ce3e6a5d5e4c1b44ad9e4e0b3f0b1b51f19e3ef9c0f6d5a7e1a"
	hash := func(exempt ...string) string {
		return mustCompile(t, policy.Spec{Default: policy.RuleOptions{ExemptImages: exempt}}).Hash()
	}
	if a, b := hash("docker.io/library/bar"+d), hash("docker.io/library/bar:9.9"+d, "docker.io/library/bar"+d); a != b {
		t.Errorf("got hashes %s and %s, want one", a, b)
	}
	if a, b := hash("docker.io/library/a:1", "docker.io/library/b:1"), hash("docker.io/library/b:1", "docker.io/library/a:1"); a != b {
		t.Errorf("got hashes %s and %s for the same exemptions in another order, want one", a, b)
	}
}
