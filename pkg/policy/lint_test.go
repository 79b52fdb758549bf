package policy_test

import (
	"fmt"
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
)

// largeWhitelist is n entries: 500 registries, then repositories under
// them, then a wildcard covering every registry.
func largeWhitelist(n int) []string {
	out := make([]string, 0, n)
	for i := range 500 {
		out = append(out, fmt.Sprintf("registry%d.example.com", i))
	}
	for i := len(out); i < n-1; i++ {
		out = append(out, fmt.Sprintf("registry%d.example.com/team/app%d", i%500, i))
	}
	return append(out, "*.example.com")
}

// A 20,000-entry list compiles, and every covered entry is reported with
// the first entry that covers it: a repository with its registry, written
// before the wildcard; a registry with the wildcard.
func TestCompileLintsALargeWhitelist(t *testing.T) {
	t.Parallel()
	list := largeWhitelist(20_000)
	p := mustCompile(t, policy.Spec{Source: "p.yaml", Default: policy.RuleOptions{AllowedRegistries: list}})
	got := warnings(p)
	if len(got) != len(list)-1 {
		t.Fatalf("got %d warnings, want %d (every entry but the wildcard)", len(got), len(list)-1)
	}
	for _, tc := range []struct {
		entry int    // index in list
		want  string // its warning
	}{
		{entry: 7, want: `default.allowedRegistries[7]: registry entry "registry7.example.com" is already covered by "*.example.com"`},
		{entry: 1234, want: `default.allowedRegistries[1234]: registry entry "registry234.example.com/team/app1234" is already covered by "registry234.example.com"`},
	} {
		if got[tc.entry] != tc.want { // the wildcard, last, is the only entry without a warning
			t.Errorf("got warning %q, want %q", got[tc.entry], tc.want)
		}
	}
}

func BenchmarkCompileLargeWhitelist(b *testing.B) {
	list := largeWhitelist(20_000)
	for b.Loop() {
		mustCompile(b, policy.Spec{Source: "p.yaml", Default: policy.RuleOptions{AllowedRegistries: list}})
	}
}
