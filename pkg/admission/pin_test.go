package admission_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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
	for _, pin := range m.Pinned { // only web was rewritten (to the mirror), then pinned
		if want := pin.Image.Container == "web"; pin.Rewritten != want {
			t.Errorf("pin of %s: Rewritten = %v, want %v", pin.Image.Container, pin.Rewritten, want)
		}
	}
	if len(m.Rewritten) != 1 || m.Rewritten[0].Pinned != want["/spec/template/spec/containers/1/image"] {
		t.Errorf("got rewritten %+v, want web's rewrite with its pinned reference", m.Rewritten)
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

// cachingResolver answers from cached as *digest.Resolver answers from its
// cache, and anything else through Resolve, recording what it asked.
type cachingResolver struct {
	cached map[string]error // ref -> nil: fakeDigest(ref) is cached; else the failure
	mu     sync.Mutex
	asked  []string
}

func (c *cachingResolver) Cached(ref string) (string, bool, error) {
	err, ok := c.cached[ref]
	if !ok || err != nil {
		return "", ok, err
	}
	return fakeDigest(ref), true, nil
}

func (c *cachingResolver) Resolve(_ context.Context, ref string) (string, error) {
	c.mu.Lock()
	c.asked = append(c.asked, ref)
	c.mu.Unlock()
	if d, ok, err := c.Cached(ref); ok {
		return d, err
	}
	return fakeDigest(ref), nil
}

// A resolver with a cache is asked only for what it has not cached: a
// review whose tags are all cached is pinned from the cache, even once its
// deadline has passed, cached failures included, and many images of one
// reference are one lookup. The patch is the one a resolver without a
// cache gives for the same answers.
func TestMutatePinsFromTheCacheAndLooksUpOnlyMisses(t *testing.T) {
	t.Parallel()
	gone := errors.New("the registry has no manifest for registry.my.com/team/gone:1")
	var many, manyAsked []string // more images than ResolveEach compares one by one, of 20 references
	for i := range 40 {
		many = append(many, fmt.Sprintf("registry.my.com/team/app-%02d:1", i%20))
		if i > 0 && i < 20 { // app-00 is cached
			manyAsked = append(manyAsked, many[i])
		}
	}
	for _, tc := range []struct {
		name   string
		images []string
		// cached is what the resolver has cached: nil for a digest, else
		// the failure.
		cached map[string]error
		// cancelled runs the review past its deadline.
		cancelled bool
		// asked are the references looked up through Resolve, sorted.
		asked []string
		// pinned and unpinned count the images.
		pinned, unpinned int
	}{
		{
			name:   "every tag cached: nothing is looked up",
			images: []string{"registry.my.com/team/app:1.4", "nginx:1.25", "registry.my.com/team/app:1.4"},
			cached: map[string]error{"registry.my.com/team/app:1.4": nil, "registry.my.com/hub/library/nginx:1.25": nil},
			pinned: 3,
		},
		{
			name:      "every tag cached, past the deadline: pinned all the same",
			images:    []string{"registry.my.com/team/app:1.4", "nginx:1.25"},
			cached:    map[string]error{"registry.my.com/team/app:1.4": nil, "registry.my.com/hub/library/nginx:1.25": nil},
			cancelled: true,
			pinned:    2,
		},
		{
			name:     "a cached failure: unpinned, not asked again",
			images:   []string{"registry.my.com/team/app:1.4", "registry.my.com/team/gone:1"},
			cached:   map[string]error{"registry.my.com/team/app:1.4": nil, "registry.my.com/team/gone:1": gone},
			pinned:   1,
			unpinned: 1,
		},
		{
			name:   "one miss among hits: only it is looked up",
			images: []string{"registry.my.com/team/app:1.4", "registry.my.com/team/new:2", "registry.my.com/team/new:2"},
			cached: map[string]error{"registry.my.com/team/app:1.4": nil},
			asked:  []string{"registry.my.com/team/new:2"},
			pinned: 3,
		},
		{
			name:   "two misses: each looked up once",
			images: []string{"registry.my.com/team/a:1", "registry.my.com/team/b:1", "registry.my.com/team/a:1"},
			asked:  []string{"registry.my.com/team/a:1", "registry.my.com/team/b:1"},
			pinned: 3,
		},
		{
			name:   "many images of fewer references: one lookup per reference",
			images: many,
			cached: map[string]error{"registry.my.com/team/app-00:1": nil},
			asked:  manyAsked,
			pinned: 40,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var containers []string
			for i, img := range tc.images {
				containers = append(containers, fmt.Sprintf(`{"name":"c%d","image":%q}`, i, img))
			}
			body := review("v1", request("", "v1", "Pod", "CREATE", `{"spec":{"containers":[`+strings.Join(containers, ",")+`]}}`, "null"))
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tc.cancelled {
				cancel()
			}
			res := &cachingResolver{cached: tc.cached}
			m, resp, err := admission.MutateWith(ctx, pinPolicy(t), res, body)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(res.asked)
			if !slices.Equal(res.asked, tc.asked) {
				t.Errorf("looked up %q, want %q", res.asked, tc.asked)
			}
			if len(m.Pinned) != tc.pinned || len(m.Unpinned) != tc.unpinned {
				t.Errorf("got %d pinned, %d unpinned (%+v); want %d and %d", len(m.Pinned), len(m.Unpinned), m.Unpinned, tc.pinned, tc.unpinned)
			}
			// The same answers through Resolve alone make the same reply.
			plain := admission.ResolverFunc(func(_ context.Context, ref string) (string, error) {
				if err := tc.cached[ref]; err != nil {
					return "", err
				}
				return fakeDigest(ref), nil
			})
			if tc.cancelled {
				return // without a cache, a review past its deadline pins nothing
			}
			_, want, err := admission.MutateWith(t.Context(), pinPolicy(t), plain, body)
			if err != nil {
				t.Fatal(err)
			}
			if string(resp.Response.Patch) != string(want.Response.Patch) || !slices.Equal(resp.Response.Warnings, want.Response.Warnings) {
				t.Errorf("with a cache: patch %s, warnings %q; without: patch %s, warnings %q",
					resp.Response.Patch, resp.Response.Warnings, want.Response.Patch, want.Response.Warnings)
			}
		})
	}
}
