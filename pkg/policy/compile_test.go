package policy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// quadraticCovered is the lint as it was before lintCovered: every pair.
func quadraticCovered(es []RegistryEntry) []string {
	var out []string
	for i, e := range es {
		for j, other := range es {
			if i != j && covers(other, e) && (!covers(e, other) || j < i) {
				out = append(out, fmt.Sprintf("%d: registry entry %q is already covered by %q", i, e.Raw, other.Raw))
				break
			}
		}
	}
	return out
}

// The indexed lint reports what comparing every pair reports, entry for
// entry and coverer for coverer, on lists mixing hosts, ports, paths,
// wildcards with and without apex, and duplicates.
func TestLintCoveredAgreesWithComparingEveryPair(t *testing.T) {
	t.Parallel()
	pool := []string{
		"registry.my.com", "Registry.My.Com", "registry.my.com/team", "registry.my.com/team/app", "registry.my.com/teamx",
		"registry.my.com:5000", "registry.my.com:5000/team", "my.com", "a.registry.my.com", "a.b.registry.my.com/team",
		"*.my.com", "*my.com", "*.registry.my.com", "*registry.my.com", "*.my.com/team", "*my.com/team/app",
		"*.my.com:5000", "*.my.com:5000/team", "*.b.registry.my.com", "docker.io/library", "docker.io/library/nginx",
		"index.docker.io/library/nginx", "docker.io", "[::1]:5000", "[::1]:5000/x", "localhost:5000/a/b", "localhost:5000",
	}
	rng := rand.New(rand.NewPCG(1, 2)) //nolint:gosec // seeded, so a failing list is reproducible
	for round := range 2000 {
		raws := slices.Clone(pool)
		rng.Shuffle(len(raws), func(i, j int) { raws[i], raws[j] = raws[j], raws[i] })
		raws = raws[:1+rng.IntN(len(raws))]
		var es []RegistryEntry
		for _, raw := range raws {
			e, err := ParseAllowedEntry(raw)
			if err != nil {
				t.Fatalf("ParseAllowedEntry(%q): %v", raw, err)
			}
			es = append(es, e)
		}
		var got []string
		lintCovered(es, func(i int, msg string) { got = append(got, fmt.Sprintf("%d: %s", i, msg)) })
		if want := quadraticCovered(es); !slices.Equal(got, want) {
			t.Fatalf("round %d, entries %q:\ngot  %q\nwant %q", round, raws, got, want)
		}
	}
}
