package policy_test

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
)

// A verdict remembered from an earlier review is exactly the verdict a
// policy that never saw the image gives, whoever uses the image.
func TestCachedVerdictsEqualFreshOnes(t *testing.T) {
	t.Parallel()
	warm, c := loadCorpus(t)
	opts := policy.Options{AllowedRegistries: c.Policy.AllowedRegistries, RejectLatest: c.Policy.RejectLatest, AllowBreakGlass: c.Policy.AllowBreakGlass}
	for _, tc := range c.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			first := policy.Input{Namespace: "a", Images: []policy.Image{{Container: "first", Ref: tc.Image}}, Annotations: tc.Annotations}
			second := policy.Input{Namespace: "b", Images: []policy.Image{{Container: "second", Source: "init container", Ref: tc.Image}}, Annotations: tc.Annotations}
			warm.Evaluate(first)
			got := warm.Evaluate(second)
			want := mustPolicy(t, opts).Evaluate(second)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("cached verdict for %q:\n got %+v\nwant %+v", tc.Image, got, want)
			}
		})
	}
}

// A reloaded policy judges with its own rules from the first review on: the
// old policy's verdicts are not carried over.
func TestReloadStartsWithAnEmptyCache(t *testing.T) {
	t.Parallel()
	in := policy.Input{Images: []policy.Image{{Container: "app", Ref: "registry.my.com/app:1.0"}}}
	old := mustPolicy(t, policy.Options{AllowedRegistries: []string{"registry.my.com"}})
	if d := old.Evaluate(in); !d.Allowed {
		t.Fatalf("old policy: got %v, want allowed", d.Violations)
	}
	reloaded := mustPolicy(t, policy.Options{AllowedRegistries: []string{"quay.io"}})
	if n := policy.CacheLen(reloaded); n != 0 {
		t.Fatalf("a new policy holds %d verdicts, want none", n)
	}
	if d := reloaded.Evaluate(in); d.Allowed {
		t.Errorf("reloaded policy: got allowed, want the image denied by the new whitelist")
	}
}

// A flood of distinct names never grows the cache past its bound, and names
// longer than any valid reference are not kept at all.
func TestCacheIsBounded(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, policy.Options{AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true})
	for i := range 3 * policy.CacheCap {
		p.Evaluate(policy.Input{Images: []policy.Image{{Ref: fmt.Sprintf("registry.my.com/flood/app-%d:v1", i)}}})
	}
	if n := policy.CacheLen(p); n > policy.CacheCap || n < policy.CacheCap/4 {
		t.Errorf("after %d distinct images the cache holds %d verdicts, want at most %d (and not almost none)", 3*policy.CacheCap, n, policy.CacheCap)
	}

	q := mustPolicy(t, policy.Options{AllowedRegistries: []string{"registry.my.com"}})
	long := "registry.my.com/" + strings.Repeat("a", 1000) + ":1"
	if d := q.Evaluate(policy.Input{Images: []policy.Image{{Ref: long}}}); d.Allowed {
		t.Fatalf("a 1 KiB reference was allowed")
	}
	if n := policy.CacheLen(q); n != 0 {
		t.Errorf("a 1 KiB reference was cached (%d verdicts), want it judged afresh each time", n)
	}
}

// The references Pins parses are kept under the same bound, and only those
// of images the rule allows.
func TestPinNamesAreBounded(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, policy.Options{PinDigests: true, AllowedRegistries: []string{"registry.my.com"}})
	for i := range 3 * policy.CacheCap {
		in := policy.Input{Images: []policy.Image{{Ref: fmt.Sprintf("registry.my.com/flood/app-%d:v1", i)}, {Ref: fmt.Sprintf("quay.io/refused/app-%d:v1", i)}}}
		if pins := p.Pins(in, p.Rewrite(in)); len(pins) != 1 || pins[0].Lookup != in.Images[0].Ref {
			t.Fatalf("Pins(%v) = %+v, want the allowed image alone", in.Images, pins)
		}
	}
	if n := policy.NamesLen(p); n > policy.CacheCap || n < policy.CacheCap/4 {
		t.Errorf("after %d distinct allowed images the cache holds %d parsed references, want at most %d (and not almost none)", 3*policy.CacheCap, n, policy.CacheCap)
	}
}

// Images in use survive a flood: an entry read since the last rotation is
// kept when the cache makes room.
func TestCacheKeepsImagesInUse(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, policy.Options{AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true})
	hot := policy.Input{Images: []policy.Image{{Container: "app", Ref: "docker.io/library/nginx:1.27"}}}
	want := p.Evaluate(hot)
	for i := range 2 * policy.CacheCap {
		p.Evaluate(policy.Input{Images: []policy.Image{{Ref: fmt.Sprintf("registry.my.com/flood/app-%d:v1", i)}}})
		if i%64 == 0 {
			if got := p.Evaluate(hot); !reflect.DeepEqual(got, want) {
				t.Fatalf("after %d other images: got %+v, want %+v", i, got, want)
			}
		}
	}
}

// Reviews judged at once from many goroutines share the cache safely (run
// with -race) and each gets its own container names back.
func TestCacheConcurrentReviews(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, policy.Options{AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				container := fmt.Sprintf("c%d", g)
				d := p.Evaluate(policy.Input{Images: []policy.Image{
					{Container: container, Ref: fmt.Sprintf("nginx:%d", i%50)},
					{Container: container, Ref: "registry.my.com/app:1"},
				}})
				if len(d.Violations) != 1 || d.Violations[0].Container != container {
					t.Errorf("goroutine %d: got %+v, want one registry violation for container %s", g, d.Violations, container)
					return
				}
			}
		})
	}
	wg.Wait()
}
