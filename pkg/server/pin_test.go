package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/digest"
	"github.com/imagegate/imagegate/pkg/digest/digesttest"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/rewrite"
	"github.com/imagegate/imagegate/pkg/server"
)

// The Resolver serve uses answers cached tags without a goroutine: it is a
// CachedResolver, which /mutate asks first.
var _ admission.CachedResolver = (*digest.Resolver)(nil)

// "Pin where you can, require where you must", end to end through the
// handlers and a real registry: /mutate pins a multi-arch tag to its index
// digest and /validate allows the result; a registry that hangs costs one
// deadline, /mutate still answers, unpinned with a warning, and /validate
// refuses the tag because requireDigest is on.
func TestPinWhereYouCanRequireWhereYouMust(t *testing.T) {
	t.Parallel()
	reg := digesttest.New(t)
	want, _ := reg.PushIndex(t, "team/app:1.0")
	image := reg.Host() + "/team/app:1.0"
	res, err := digest.New(digest.Options{CAFile: reg.CAFile, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, policy.Options{}, func(o *server.Options) {
		o.Resolver, o.PinTimeout = res, time.Second
	})
	p, err := policy.Compile(policy.Spec{Default: policy.RuleOptions{Name: policy.DefaultRuleName, PinDigests: true, RequireDigest: true}})
	if err != nil {
		t.Fatal(err)
	}
	f.active.Store(p)
	h := f.srv.Handler()
	podReview := func(image string) []byte {
		return fmt.Appendf(nil, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1",`+
			`"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"team-a","operation":"CREATE",`+
			`"userInfo":{"username":"alice"},"object":{"metadata":{"name":"web"},"spec":{"containers":[{"name":"app","image":%q}]}}}}`, image)
	}
	validate := func(object []byte) (bool, string) {
		t.Helper()
		rec := post(h, server.PathValidate, "application/json", object)
		resp := parseHeader(t, rec.Body.Bytes())
		if resp.Response == nil {
			t.Fatalf("validate: %d %s", rec.Code, rec.Body)
		}
		return resp.Response.Allowed, rec.Body.String()
	}

	body := podReview(image)
	reply := parseMutateReply(t, post(h, server.PathMutate, "application/json", body).Body.Bytes())
	patch, err := jsonpatch.DecodePatch(reply.Response.Patch)
	if err != nil {
		t.Fatalf("pinning: no patch (%v); warnings %q", err, reply.Response.Warnings)
	}
	podObject := fmt.Appendf(nil, `{"metadata":{"name":"web"},"spec":{"containers":[{"name":"app","image":%q}]}}`, image)
	patched, err := patch.Apply(podObject)
	if err != nil {
		t.Fatal(err)
	}
	pinned := image + "@" + want
	if !strings.Contains(string(patched), pinned) {
		t.Errorf("pinned pod %s, want the image %s (the index digest)", patched, pinned)
	}
	if ok, reason := validate(podReview(pinned)); !ok {
		t.Errorf("validation of the pinned pod refused it: %s", reason)
	}

	reg.Hanging.Store(true)
	other := reg.Host() + "/team/other:2.0"
	reply = parseMutateReply(t, post(h, server.PathMutate, "application/json", podReview(other)).Body.Bytes())
	if !reply.Response.Allowed || len(reply.Response.Patch) > 0 || len(reply.Response.Warnings) != 1 ||
		!strings.Contains(reply.Response.Warnings[0], `did not pin container "app" image "`+other+`"`) {
		t.Errorf("with the registry hanging: got allowed %v, patch %s, warnings %q; want allowed unpinned with a warning naming the image",
			reply.Response.Allowed, reply.Response.Patch, reply.Response.Warnings)
	}
	if ok, reason := validate(podReview(other)); ok || !strings.Contains(reason, "digest") {
		t.Errorf("validation of the unpinned pod: allowed %v (%s); want refused for its missing digest", ok, reason)
	}
	if !strings.Contains(f.logs.String(), `"msg":"image not pinned"`) {
		t.Errorf("no log line for the unpinned image:\n%s", f.logs)
	}
}

// Each pinned image is logged once at info: an image rewritten to a mirror
// and then pinned on its "image rewritten" line (pinned=), an image pinned
// as written on an "image pinned" line; one that could not be pinned on
// an "image not pinned" line at warn.
func TestMutateLogsEachPinOnce(t *testing.T) {
	t.Parallel()
	fake := admission.ResolverFunc(func(_ context.Context, ref string) (string, error) {
		if strings.Contains(ref, "/missing:") {
			return "", errors.New("the registry has no manifest for " + ref)
		}
		return "sha256:" + strings.Repeat("ab", 32), nil
	})
	f := newFixture(t, policy.Options{}, func(o *server.Options) { o.Resolver, o.PinTimeout = fake, time.Second })
	p, err := policy.New(policy.Options{
		AllowedRegistries: []string{"registry.my.com"}, PinDigests: true,
		Rewrites: []rewrite.Rule{{From: "docker.io", To: "registry.my.com/hub"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.active.Store(p)
	body := []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1",` +
		`"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"team-a","operation":"CREATE",` +
		`"userInfo":{"username":"alice"},"object":{"metadata":{"name":"web"},"spec":{"containers":[` +
		`{"name":"web","image":"nginx:1.25"},{"name":"app","image":"registry.my.com/team/app:1.4"},{"name":"gone","image":"registry.my.com/team/missing:1"}]}}}}`)
	reply := parseMutateReply(t, post(f.srv.Handler(), server.PathMutate, "application/json", body).Body.Bytes())
	if n := strings.Count(string(reply.Response.Patch), "@sha256:"); n != 2 {
		t.Fatalf("got %d pinned images in the patch %s, want 2", n, reply.Response.Patch)
	}
	digest := "@sha256:" + strings.Repeat("ab", 32)
	type line struct{ Msg, Level, Container, Image, Rewritten, Pinned string }
	want := []line{
		{"image rewritten", "INFO", "web", "nginx:1.25", "registry.my.com/hub/library/nginx:1.25", "registry.my.com/hub/library/nginx:1.25" + digest},
		{"image pinned", "INFO", "app", "registry.my.com/team/app:1.4", "", "registry.my.com/team/app:1.4" + digest},
		{"image not pinned", "WARN", "gone", "registry.my.com/team/missing:1", "", ""},
	}
	var got []line
	for raw := range strings.SplitSeq(strings.TrimSpace(f.logged()), "\n") {
		var l struct {
			Msg, Level, Container, Image, Rewritten, Pinned string
		}
		if json.Unmarshal([]byte(raw), &l) == nil && strings.HasPrefix(l.Msg, "image ") {
			got = append(got, line(l))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("got log lines\n%+v\nwant\n%+v", got, want)
	}
}
