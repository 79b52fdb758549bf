package admission

import (
	"maps"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The mutating webhook rewrites exactly the kinds the validating webhook
// judges: a kind added to one and not the other would be judged without
// being rewritten, or rewritten without being judged.
func TestMutateReadsTheKindsValidateReads(t *testing.T) {
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
	validate := sorted(slices.Collect(maps.Keys(kinds)))
	lean := sorted(slices.Collect(maps.Keys(leanKinds)))
	mutate := sorted(slices.Collect(maps.Keys(mutateKinds)))
	if !slices.Equal(validate, mutate) || !slices.Equal(validate, lean) {
		t.Errorf("kinds differ:\nvalidate %v\nlean     %v\nmutate   %v", validate, lean, mutate)
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
