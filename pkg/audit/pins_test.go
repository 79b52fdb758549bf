package audit_test

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/audit"
	"github.com/imagegate/imagegate/pkg/policy"
)

var (
	digestA = "sha256:" + strings.Repeat("a", 64)
	digestB = "sha256:" + strings.Repeat("b", 64)
)

// A pod whose containers run what their statuses say, and a Deployment
// admitted pinned: the audit tells which run unpinned and which tags moved.
const pinnedObjects = `{"apiVersion":"v1","kind":"List","items":[
{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"shop"},
 "spec":{"initContainers":[{"name":"setup","image":"registry.my.com/shop/setup:1"}],
  "containers":[{"name":"app","image":"registry.my.com/shop/app:1.0"},
   {"name":"side","image":"registry.my.com/shop/side:2"},
   {"name":"new","image":"registry.my.com/shop/new:3"},
   {"name":"refused","image":"quay.io/shop/app:1.0"}]},
 "status":{"initContainerStatuses":[{"name":"setup","imageID":"registry.my.com/shop/setup@` + "sha256:" + "bbbb" + `"}],
  "containerStatuses":[{"name":"app","imageID":"docker-pullable://registry.my.com/shop/app@DIGEST_B"},
   {"name":"side","imageID":"registry.my.com/shop/side@DIGEST_A"},
   {"name":"new","imageID":"sha256:DIGEST_A"}]}},
{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"api","namespace":"shop"},
 "spec":{"template":{"spec":{"containers":[
  {"name":"api","image":"registry.my.com/shop/api:1.0@DIGEST_A"},
  {"name":"worker","image":"registry.my.com/shop/worker:1.0@DIGEST_A"},
  {"name":"cron","image":"registry.my.com/shop/cron:1.0"},
  {"name":"gone","image":"registry.my.com/shop/gone:1.0"}]}}}}
]}`

func TestResolveTagsFindsUnpinnedAndMovedTags(t *testing.T) {
	t.Parallel()
	p, err := policy.Compile(policy.Spec{Default: policy.RuleOptions{Name: policy.DefaultRuleName, PinDigests: true,
		AllowedRegistries: []string{"registry.my.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Audit(p, strings.NewReader(strings.NewReplacer("DIGEST_A", digestA, "DIGEST_B", digestB).Replace(pinnedObjects)))
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int64
	today := map[string]string{ // what each tag resolves to now
		"registry.my.com/shop/setup:1": digestA, "registry.my.com/shop/app:1.0": digestA,
		"registry.my.com/shop/side:2": digestA, "registry.my.com/shop/new:3": digestB,
		"registry.my.com/shop/api:1.0": digestA, "registry.my.com/shop/worker:1.0": digestB,
		"registry.my.com/shop/cron:1.0": digestA,
	}
	rep.ResolveTags(context.Background(), admission.ResolverFunc(func(_ context.Context, ref string) (string, error) {
		asked.Add(1)
		if d, ok := today[ref]; ok {
			return d, nil
		}
		return "", errors.New("MANIFEST_UNKNOWN\n\x1b[31mnot found")
	}))
	want := []struct{ container, state, held string }{
		// The init container's imageID is not a valid digest: not known.
		{"setup", "unpinned", ""},
		// Pulled by tag, and the tag has moved since.
		{"app", "moved", digestB},
		{"side", "unpinned", digestA},
		// A bare image ID is a config digest, not the manifest's.
		{"new", "unpinned", ""},
		// quay.io is refused: not worth a lookup, so not listed.
		{"api", "current", digestA},
		{"worker", "moved", digestA},
		{"cron", "unpinned", ""},
		{"gone", "unresolved", ""},
	}
	if len(rep.Tags) != len(want) {
		t.Fatalf("got %d tags %+v, want %d", len(rep.Tags), rep.Tags, len(want))
	}
	for i, w := range want {
		tag := rep.Tags[i]
		held := tag.Pinned
		if held == "" {
			held = tag.Running
		}
		state := map[bool]string{true: "moved", false: "unpinned"}[tag.Moved]
		switch {
		case tag.Resolved == "":
			state = "unresolved"
		case !tag.Moved && tag.Pinned != "":
			state = "current"
		}
		if tag.Container != w.container || state != w.state || held != w.held {
			t.Errorf("tag %d: got %s %s held %q, want %s %s held %q", i, tag.Container, state, held, w.container, w.state, w.held)
		}
	}
	if got := asked.Load(); got != int64(len(want)) {
		t.Errorf("asked the registry %d times, want %d (once per tag)", got, len(want))
	}
	var out bytes.Buffer
	if err := rep.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, re := range []string{
		`(?m)^Tags of rules that pin digests, and the digest each resolves to today:$`,
		`(?m)^shop +Pod/web +app +registry\.my\.com/shop/app:1\.0 +moved +` + digestB + ` +` + digestA + `$`,
		`(?m)^shop +Deployment/api +gone +registry\.my\.com/shop/gone:1\.0 +unresolved +- +MANIFEST_UNKNOWN\S+\[31mnot found$`,
		`; 8 tag\(s\) of pinning rules: 4 unpinned, 2 moved, 1 unresolved, 1 current\n$`,
	} {
		if !regexp.MustCompile(re).MatchString(table) {
			t.Errorf("the table does not match %s:\n%s", re, table)
		}
	}
	if regexp.MustCompile(`Deployment/api +api `).MatchString(table) || strings.Contains(table, "\x1b") {
		t.Errorf("a current tag is listed, or the registry's escape printed:\n%s", table)
	}
}
