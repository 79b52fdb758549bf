package cli_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/cli"
	"github.com/imagegate/imagegate/pkg/digest/digesttest"
)

// check --pin-digests asks the registry, as the mutating webhook would,
// and shows the digest the tag names today; a tag it cannot resolve is
// judged unpinned, and the line says why.
func TestCheckPinDigestsShowsTheDigestToday(t *testing.T) {
	t.Parallel()
	reg := digesttest.New(t)
	host, ca := reg.Host(), reg.CAFile
	tag, d := host+"/team/app:1.0", reg.Push(t, "team/app:1.0")
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, []byte("apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\ndefault:\n  requireDigest: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		image string
		code  int
		want  string
	}{
		{name: "a tag the registry serves is pinned", image: tag, code: cli.ExitOK,
			want: "allowed\t\"" + tag + "\"\tpinned to " + tag + "@" + d + "\n"},
		{name: "a missing tag is left unpinned, and requireDigest refuses it", image: host + "/team/app:9", code: cli.ExitDenied,
			want: "; not pinned: the registry has no manifest for " + host + "/team/app:9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, nil, nil, "check", "--pin-digests", "--registry-ca-file="+ca, "--config="+file, tc.image)
			if r.code != tc.code || !strings.Contains(r.stdout, tc.want) {
				t.Errorf("got exit %d, stdout %q, stderr %q; want exit %d and %q", r.code, r.stdout, r.stderr, tc.code, tc.want)
			}
		})
	}
}

// audit --pin-digests lists the images that run by tag and the tags that
// have moved since the digest the object holds, with what each resolves
// to today; neither is a finding.
func TestAuditPinDigestsFindsMovedTags(t *testing.T) {
	t.Parallel()
	reg := digesttest.New(t)
	host, ca := reg.Host(), reg.CAFile
	old, oldDigest := host+"/team/app:1.0", reg.Push(t, "team/app:1.0")
	now := reg.Push(t, "team/app:1.0") // re-pushed: the tag has moved
	web, webDigest := host+"/team/web:2", reg.Push(t, "team/web:2")
	objects := filepath.Join(t.TempDir(), "objects.json")
	deployment := func(name, image string) string {
		return `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"` + name + `","namespace":"shop"},` +
			`"spec":{"template":{"spec":{"containers":[{"name":"app","image":"` + image + `"}]}}}}`
	}
	list := `{"apiVersion":"v1","kind":"List","items":[` + deployment("pinned", old+"@"+oldDigest) + "," +
		deployment("current", web+"@"+webDigest) + "," + deployment("by-tag", web) + "]}"
	if err := os.WriteFile(objects, []byte(list), 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, nil, nil, "audit", "--pin-digests", "--registry-whitelist="+host, "--registry-ca-file="+ca, "-f", objects)
	for _, re := range []string{
		`(?m)^shop +Deployment/pinned +app +` + regexp.QuoteMeta(old+"@"+oldDigest) + ` +moved +` + oldDigest + ` +` + now + `$`,
		`(?m)^shop +Deployment/by-tag +app +` + regexp.QuoteMeta(web) + ` +unpinned +- +` + webDigest + `$`,
		`(?m)^0 finding\(s\) in 3 object\(s\) with 3 image\(s\), policy [0-9a-f]{16}; 3 tag\(s\) of pinning rules: 1 unpinned, 1 moved, 0 unresolved, 1 current$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("stdout does not match %s:\n%s%s", re, r.stdout, r.stderr)
		}
	}
	if r.code != cli.ExitOK || strings.Contains(r.stdout, "Deployment/current") {
		t.Errorf("got exit %d, want 0 and no line for the current tag:\n%s", r.code, r.stdout)
	}
	if r := run(t, nil, nil, "audit", "--pin-digests", "--registry-whitelist="+host, "--registry-timeout=0s", "-f", objects); r.code != cli.ExitUsage {
		t.Errorf("--registry-timeout=0s: got exit %d, want %d", r.code, cli.ExitUsage)
	}
}
