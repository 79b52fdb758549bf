package admission_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/rewrite"
)

// fakeDigest is the digest fakeResolver serves for ref: a function of the
// reference, so tests know it in advance.
func fakeDigest(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// fakeResolver serves fakeDigest for every reference under registry.my.com
// and fails for others, counting the lookups.
func fakeResolver(lookups *atomic.Int64) admission.Resolver {
	return admission.ResolverFunc(func(_ context.Context, ref string) (string, error) {
		lookups.Add(1)
		if !strings.HasPrefix(ref, "registry.my.com/") {
			return "", errors.New("the registry has no manifest for " + ref)
		}
		return fakeDigest(ref), nil
	})
}

// pinPolicy mirrors docker.io into registry.my.com, allows only
// registry.my.com, and pins digests.
func pinPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.New(policy.Options{
		AllowedRegistries: []string{"registry.my.com", "quay.io"}, RejectLatest: true, PinDigests: true,
		Rewrites: []rewrite.Rule{{From: "docker.io", To: "registry.my.com/hub"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The mutating webhook pins every image field, after the mirror rewrite,
// looking each reference up once; an image with a digest is left as
// written, one whose lookup fails is left unpinned with a warning, and a
// second pass over the patched pod changes nothing and asks nobody.
func TestMutatePinsAfterRewritingAndOnlyOnce(t *testing.T) {
	t.Parallel()
	p := pinPolicy(t)
	digested := "registry.my.com/team/db:7@" + fakeDigest("x")
	spec := `{"initContainers":[{"name":"setup","image":"registry.my.com/team/app:1.4"}],` +
		`"containers":[{"name":"app","image":"registry.my.com/team/app:1.4"},{"name":"web","image":"nginx:1.25"},{"name":"db","image":"` + digested + `"},{"name":"exp","image":"quay.io/team/exp:2"}],` +
		`"volumes":[{"name":"models","image":{"reference":"registry.my.com/ml/models:v3"}}]}`
	body := review("v1", request("apps", "v1", "Deployment", "CREATE", `{"spec":{"template":{"metadata":{},"spec":`+spec+`}}}`, "null"))
	var lookups atomic.Int64
	res := fakeResolver(&lookups)
	m, resp, err := admission.MutateWith(t.Context(), p, res, body)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/spec/template/spec/initContainers/0/image":    "registry.my.com/team/app:1.4@" + fakeDigest("registry.my.com/team/app:1.4"),
		"/spec/template/spec/containers/0/image":        "registry.my.com/team/app:1.4@" + fakeDigest("registry.my.com/team/app:1.4"),
		"/spec/template/spec/containers/1/image":        "registry.my.com/hub/library/nginx:1.25@" + fakeDigest("registry.my.com/hub/library/nginx:1.25"),
		"/spec/template/spec/volumes/0/image/reference": "registry.my.com/ml/models:v3@" + fakeDigest("registry.my.com/ml/models:v3"),
		"/spec/template/metadata/annotations":           "",
	}
	var ops []struct {
		Op, Path string
		Value    any
	}
	if err := json.Unmarshal(resp.Response.Patch, &ops); err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		if w, ok := want[op.Path]; !ok || w != "" && op.Value != w {
			t.Errorf("patch %s %s %v, want %q", op.Op, op.Path, op.Value, w)
		}
	}
	if len(ops) != 5 {
		t.Errorf("got %d operations, want 4 images and the annotation", len(ops))
	}
	if got := lookups.Load(); got != 4 {
		t.Errorf("got %d lookups, want 4 (one per reference)", got)
	}
	if len(m.Pinned) != 4 || len(m.Unpinned) != 1 || m.Unpinned[0].Image.Container != "exp" {
		t.Errorf("got pinned %+v, unpinned %+v; want 4 pinned and exp unpinned", m.Pinned, m.Unpinned)
	}
	warned := strings.Join(resp.Response.Warnings, "\n")
	if !strings.Contains(warned, `imagegate did not pin container "exp" image "quay.io/team/exp:2" to a digest, so it runs by tag: the registry has no manifest for quay.io/team/exp:2`) {
		t.Errorf("got warnings\n%s\nwant one naming the unpinned image and why", warned)
	}

	patch, err := jsonpatch.DecodePatch(resp.Response.Patch)
	if err != nil {
		t.Fatal(err)
	}
	obj := `{"spec":{"template":{"metadata":{},"spec":` + spec + `}}}`
	patched, err := patch.Apply([]byte(obj))
	if err != nil {
		t.Fatal(err)
	}
	lookups.Store(0)
	m2, resp2, err := admission.MutateWith(t.Context(), p, res, review("v1", request("apps", "v1", "Deployment", "CREATE", string(patched), "null")))
	if err != nil {
		t.Fatal(err)
	}
	if m2.Patched() || len(resp2.Response.Patch) > 0 || lookups.Load() != 1 {
		t.Errorf("second pass: got pinned %+v, patch %s, %d lookups; want nothing changed and only the unpinned image asked again", m2.Pinned, resp2.Response.Patch, lookups.Load())
	}
}

// A review whose deadline passes while a registry hangs is answered
// anyway: the images are left unpinned, with a warning.
func TestMutateAnswersWhenTheReviewDeadlinePasses(t *testing.T) {
	t.Parallel()
	hang := admission.ResolverFunc(func(ctx context.Context, _ string) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	body := review("v1", request("", "v1", "Pod", "CREATE", `{"spec":{"containers":[{"name":"app","image":"registry.my.com/team/app:1.4"}]}}`, "null"))
	m, resp, err := admission.MutateWith(ctx, pinPolicy(t), hang, body)
	if err != nil {
		t.Fatal(err)
	}
	if m.Patched() || len(m.Unpinned) != 1 || !resp.Response.Allowed || len(resp.Response.Warnings) != 1 {
		t.Errorf("got patched %v, unpinned %+v, reply %+v; want an allowed reply, unpinned, with one warning", m.Patched(), m.Unpinned, resp.Response)
	}
}

// A resolver's answer that would not make a valid reference is not patched in.
func TestMutateRefusesAnInvalidDigest(t *testing.T) {
	t.Parallel()
	bad := admission.ResolverFunc(func(context.Context, string) (string, error) { return "sha256:nothex/../x", nil })
	body := review("v1", request("", "v1", "Pod", "CREATE", `{"spec":{"containers":[{"name":"app","image":"registry.my.com/team/app:1.4"}]}}`, "null"))
	m, resp, err := admission.MutateWith(t.Context(), pinPolicy(t), bad, body)
	if err != nil {
		t.Fatal(err)
	}
	if m.Patched() || len(m.Unpinned) != 1 || len(resp.Response.Patch) > 0 {
		t.Errorf("got patch %s, unpinned %+v; want no patch and the image unpinned", resp.Response.Patch, m.Unpinned)
	}
}
