package admission

import (
	"fmt"
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/rewrite"
)

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

// rewriteWarning writes, for an image rewritten and not pinned, what the
// fmt formats it replaced wrote, and for one pinned too the pinned
// reference and why, in one warning.
func TestRewriteWarning(t *testing.T) {
	t.Parallel()
	rule, err := rewrite.ParseRule("docker.io=registry.my.com/dockerhub")
	if err != nil {
		t.Fatal(err)
	}
	mirror, err := rewrite.Compile(rule)
	if err != nil {
		t.Fatal(err)
	}
	img := policy.Image{Container: "app", Ref: "nginx:1.25"}
	const pinned = "registry.my.com/dockerhub/library/nginx:1.25@sha256:" + hex64
	for _, tc := range []struct {
		name   string
		result rewrite.Result
		pinned string
		want   string
	}{
		{name: "mirrored", result: rewrite.Result{Status: rewrite.StatusRewritten, Rewritten: "registry.my.com/dockerhub/library/nginx:1.25", Mirror: &mirror},
			want: fmt.Sprintf("imagegate rewrote %s to %q (mirror rule %s)", describeImage(img), "registry.my.com/dockerhub/library/nginx:1.25", &mirror)},
		{name: "qualified, then mirrored", result: rewrite.Result{Status: rewrite.StatusRewritten, Rewritten: "registry.my.com/dockerhub/library/nginx:1.25", Qualified: "docker.io/library/nginx:1.25", Mirror: &mirror},
			want: fmt.Sprintf("imagegate rewrote %s to %q (qualified as %s, then mirror rule %s)", describeImage(img), "registry.my.com/dockerhub/library/nginx:1.25", "docker.io/library/nginx:1.25", &mirror)},
		{name: "qualified", result: rewrite.Result{Status: rewrite.StatusQualified, Rewritten: "docker.io/library/nginx:1.25"},
			want: fmt.Sprintf("imagegate rewrote %s to %q (rule %q requires fully qualified references)", describeImage(img), "docker.io/library/nginx:1.25", "default")},
		{name: "qualified, the mirror failing", result: rewrite.Result{Status: rewrite.StatusQualified, Rewritten: "docker.io/library/nginx:1.25", Mirror: &mirror, Reason: "too long"},
			want: fmt.Sprintf("imagegate rewrote %s to %q (rule %q requires fully qualified references); mirror rule %s matches, but %s", describeImage(img), "docker.io/library/nginx:1.25", "default", &mirror, "too long")},
		{name: "mirrored and pinned", pinned: pinned, result: rewrite.Result{Status: rewrite.StatusRewritten, Rewritten: "registry.my.com/dockerhub/library/nginx:1.25", Mirror: &mirror},
			want: `imagegate rewrote container "app" image "nginx:1.25" to "` + pinned + `" (mirror rule docker.io=registry.my.com/dockerhub; rule "default" pins tags to the digest their registry serves)`},
		{name: "qualified, then mirrored and pinned", pinned: pinned, result: rewrite.Result{Status: rewrite.StatusRewritten, Rewritten: "registry.my.com/dockerhub/library/nginx:1.25", Qualified: "docker.io/library/nginx:1.25", Mirror: &mirror},
			want: `imagegate rewrote container "app" image "nginx:1.25" to "` + pinned + `" (qualified as docker.io/library/nginx:1.25, then mirror rule docker.io=registry.my.com/dockerhub; rule "default" pins tags to the digest their registry serves)`},
		{name: "qualified and pinned", pinned: "docker.io/library/nginx:1.25@sha256:" + hex64, result: rewrite.Result{Status: rewrite.StatusQualified, Rewritten: "docker.io/library/nginx:1.25", Mirror: &mirror, Reason: "too long"},
			want: `imagegate rewrote container "app" image "nginx:1.25" to "docker.io/library/nginx:1.25@sha256:` + hex64 + `" (rule "default" requires fully qualified references and pins tags to the digest their registry serves); mirror rule docker.io=registry.my.com/dockerhub matches, but too long`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := rewriteWarning(&Rewrite{Image: img, Result: tc.result, Pinned: tc.pinned}, "default"); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}
