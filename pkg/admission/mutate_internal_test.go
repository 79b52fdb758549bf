package admission

import (
	"maps"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Both webhooks read objects through the lean types' templates, and the
// typed readers say what is wrong with an object they cannot read (and
// read objects for imagegate audit): a kind added to one and not the other
// would be read differently by the webhooks and the audit, or described
// wrongly.
func TestLeanReadsTheTypedKinds(t *testing.T) {
	t.Parallel()
	key := func(k metav1.GroupVersionKind) string { return k.String() }
	sorted := func(ks []metav1.GroupVersionKind) []string {
		out := make([]string, len(ks))
		for i, k := range ks {
			out[i] = key(k)
		}
		slices.Sort(out)
		return out
	}
	typed := sorted(slices.Collect(maps.Keys(kinds)))
	lean := sorted(slices.Collect(maps.Keys(templates)))
	if !slices.Equal(typed, lean) {
		t.Errorf("kinds differ:\ntyped %v\nlean  %v", typed, lean)
	}
}

func TestEscapePointer(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"imagegate.dev/original-images": "imagegate.dev~1original-images",
		"a~b/c":                         "a~0b~1c",
		"~1":                            "~01",
	} {
		if got := escapePointer(in); got != want {
			t.Errorf("escapePointer(%q) = %q, want %q", in, got, want)
		}
	}
}
