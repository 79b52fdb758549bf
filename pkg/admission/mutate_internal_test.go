package admission

import "testing"

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
