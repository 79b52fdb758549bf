package rewrite_test

import (
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/rewrite"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// testRules is a realistic mirror set: Docker Hub and quay.io behind a
// pull-through mirror, one official image with its own mirror path, a
// registry on a port, and one organisation on ghcr.io.
var testRules = []string{
	"docker.io=registry.my.com/dockerhub",
	"quay.io=registry.my.com/quay",
	"docker.io/library/busybox=registry.my.com/busybox-mirror",
	"registry:5000=registry.my.com/r5000",
	"ghcr.io/acme=registry.my.com/acme",
}

func mustRewriter(t testing.TB, raws ...string) *rewrite.Rewriter {
	t.Helper()
	rules := make([]rewrite.Rule, 0, len(raws))
	for _, raw := range raws {
		r, err := rewrite.ParseRule(raw)
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, r)
	}
	rw, err := rewrite.New(rules)
	if err != nil {
		t.Fatal(err)
	}
	return rw
}

func TestRewrite(t *testing.T) {
	t.Parallel()
	rw := mustRewriter(t, testRules...)
	long := strings.Repeat("a", 240)
	tests := []struct {
		image string
		// want is the rewritten reference; empty when the image is left
		// alone.
		want string
		// status is what happened.
		status rewrite.Status
		// rule is the matching rule's FROM, when one matched.
		rule string
		// reason is part of Result.Reason, for invalid and failed images.
		reason string
	}{
		// Docker Hub, every way it is written.
		{image: "nginx", want: "registry.my.com/dockerhub/library/nginx", status: rewrite.StatusRewritten, rule: "docker.io"},
		{image: "nginx:1.25", want: "registry.my.com/dockerhub/library/nginx:1.25", status: rewrite.StatusRewritten, rule: "docker.io"},
		{image: "library/nginx:1.25", want: "registry.my.com/dockerhub/library/nginx:1.25", status: rewrite.StatusRewritten, rule: "docker.io"},
		{image: "docker.io/nginx:1.25", want: "registry.my.com/dockerhub/library/nginx:1.25", status: rewrite.StatusRewritten, rule: "docker.io"},
		{image: "docker.io/library/nginx:1.25", want: "registry.my.com/dockerhub/library/nginx:1.25", status: rewrite.StatusRewritten, rule: "docker.io"},
		{image: "index.docker.io/library/nginx:1.25", want: "registry.my.com/dockerhub/library/nginx:1.25", status: rewrite.StatusRewritten, rule: "docker.io"},
		{image: "INDEX.DOCKER.IO/library/nginx:1.25", want: "registry.my.com/dockerhub/library/nginx:1.25", status: rewrite.StatusRewritten, rule: "docker.io"},
		{image: "bitnami/redis:7.2", want: "registry.my.com/dockerhub/bitnami/redis:7.2", status: rewrite.StatusRewritten, rule: "docker.io"},
		{image: "prometheus:2.6.1", want: "registry.my.com/dockerhub/library/prometheus:2.6.1", status: rewrite.StatusRewritten, rule: "docker.io"},
		// "registry" without a port is a Docker Hub repository, not a host.
		{image: "registry/app:1", want: "registry.my.com/dockerhub/registry/app:1", status: rewrite.StatusRewritten, rule: "docker.io"},
		// Tags and digests are kept exactly, also tags that look odd.
		{image: "nginx@" + digest, want: "registry.my.com/dockerhub/library/nginx@" + digest, status: rewrite.StatusRewritten, rule: "docker.io"},
		{image: "nginx:1.25@" + digest, want: "registry.my.com/dockerhub/library/nginx:1.25@" + digest, status: rewrite.StatusRewritten, rule: "docker.io"},
		{image: "nginx:Latest", want: "registry.my.com/dockerhub/library/nginx:Latest", status: rewrite.StatusRewritten, rule: "docker.io"},
		{image: "nginx:1.25-Alpine_3.19", want: "registry.my.com/dockerhub/library/nginx:1.25-Alpine_3.19", status: rewrite.StatusRewritten, rule: "docker.io"},
		// The most specific FROM wins, on "/" boundaries.
		{image: "busybox:1.36", want: "registry.my.com/busybox-mirror:1.36", status: rewrite.StatusRewritten, rule: "docker.io/library/busybox"},
		{image: "library/busybox/extra:1", want: "registry.my.com/busybox-mirror/extra:1", status: rewrite.StatusRewritten, rule: "docker.io/library/busybox"},
		{image: "busyboxx:1", want: "registry.my.com/dockerhub/library/busyboxx:1", status: rewrite.StatusRewritten, rule: "docker.io"},
		{image: "quay.io/prometheus/node-exporter:v1.8.0", want: "registry.my.com/quay/prometheus/node-exporter:v1.8.0", status: rewrite.StatusRewritten, rule: "quay.io"},
		{image: "ghcr.io/acme/api:2", want: "registry.my.com/acme/api:2", status: rewrite.StatusRewritten, rule: "ghcr.io/acme"},
		{image: "ghcr.io/acme-evil/api:2", status: rewrite.StatusNoMatch},
		{image: "ghcr.io/acme:2", want: "registry.my.com/acme:2", status: rewrite.StatusRewritten, rule: "ghcr.io/acme"},
		// Ports are part of the registry.
		{image: "registry:5000/app:1", want: "registry.my.com/r5000/app:1", status: rewrite.StatusRewritten, rule: "registry:5000"},
		{image: "registry:5001/app:1", status: rewrite.StatusNoMatch},
		// Already mirrored: left alone, so a second pass changes nothing.
		{image: "registry.my.com/dockerhub/library/nginx:1.25", status: rewrite.StatusMirrored, rule: "docker.io"},
		{image: "REGISTRY.MY.COM/quay/prometheus/prometheus:v2", status: rewrite.StatusMirrored, rule: "quay.io"},
		{image: "registry.my.com/busybox-mirror:1.36", status: rewrite.StatusMirrored, rule: "docker.io/library/busybox"},
		// No rule: left alone.
		{image: "registry.my.com/team/app:1", status: rewrite.StatusNoMatch},
		{image: "gcr.io/distroless/static:nonroot", status: rewrite.StatusNoMatch},
		// Hostile lookalikes are other registries.
		{image: "docker.io.evil.io/x:1", status: rewrite.StatusNoMatch},
		{image: "quay.io.evil/x:1", status: rewrite.StatusNoMatch},
		{image: "quay.iox/x:1", status: rewrite.StatusNoMatch},
		{image: "evil.io/docker.io/x:1", status: rewrite.StatusNoMatch},
		{image: "evil.io/registry.my.com/dockerhub/x:1", status: rewrite.StatusNoMatch},
		// A Docker Hub image named like the mirror is Docker Hub's.
		{image: "registry.my.com@" + digest, want: "registry.my.com/dockerhub/library/registry.my.com@" + digest, status: rewrite.StatusRewritten, rule: "docker.io"},
		// Invalid references are never rewritten.
		{image: "", status: rewrite.StatusInvalid, reason: "empty"},
		{image: "Nginx:1.25", status: rewrite.StatusInvalid, reason: "must be lowercase"},
		{image: "nginx:1.25 ", status: rewrite.StatusInvalid, reason: "invalid reference format"},
		{image: "https://docker.io/nginx:1", status: rewrite.StatusInvalid, reason: "invalid reference format"},
		{image: "nginx@sha256:abc", status: rewrite.StatusInvalid, reason: "invalid reference format"},
		// A result that would not be a valid reference is not produced.
		// The repository path may be at most 255 characters: this one has
		// 248 on Docker Hub, 258 under the mirror's path.
		{image: "bitnami/" + long + ":1", status: rewrite.StatusFailed, rule: "docker.io", reason: "must not be more than 255 characters"},
	}
	for _, tc := range tests {
		t.Run(tc.image, func(t *testing.T) {
			t.Parallel()
			got := rw.Rewrite(tc.image)
			if got.Status != tc.status || got.Rewritten != tc.want {
				t.Fatalf("Rewrite(%q) = %s %q (%s), want %s %q", tc.image, got.Status, got.Rewritten, got.Reason, tc.status, tc.want)
			}
			if got.Changed() != (tc.status == rewrite.StatusRewritten) {
				t.Errorf("Changed() = %v with status %s", got.Changed(), got.Status)
			}
			rule := ""
			if got.Mirror != nil {
				rule = got.Mirror.Rule.From
			}
			if rule != tc.rule {
				t.Errorf("matched rule FROM %q, want %q", rule, tc.rule)
			}
			if !strings.Contains(got.Reason, tc.reason) || (tc.reason == "") != (got.Reason == "") {
				t.Errorf("reason %q, want one containing %q", got.Reason, tc.reason)
			}
			if got.Changed() {
				if again := rw.Rewrite(got.Rewritten); again.Status != rewrite.StatusMirrored {
					t.Errorf("rewriting %q again: %s %q, want it left alone as mirrored", got.Rewritten, again.Status, again.Rewritten)
				}
			}
		})
	}
}

// A mirror path may sit under its own FROM (a Docker Hub organisation
// mirroring Docker Hub): images already there are not rewritten again.
func TestRewriteIsIdempotentWhenTOIsUnderFROM(t *testing.T) {
	t.Parallel()
	rw := mustRewriter(t, "docker.io=docker.io/acmemirror")
	first := rw.Rewrite("nginx:1.25")
	if first.Rewritten != "docker.io/acmemirror/library/nginx:1.25" {
		t.Fatalf("Rewrite(nginx:1.25) = %s %q, want docker.io/acmemirror/library/nginx:1.25", first.Status, first.Rewritten)
	}
	if second := rw.Rewrite(first.Rewritten); second.Status != rewrite.StatusMirrored {
		t.Errorf("second rewrite = %s %q, want mirrored", second.Status, second.Rewritten)
	}
}

// An image under one rule's TO is left alone even when another rule's
// FROM covers it, so no two rules can chain into a loop.
func TestRewriteLeavesImagesUnderAnyTOAlone(t *testing.T) {
	t.Parallel()
	rw := mustRewriter(t, "quay.io=mirror.my.com/quay", "mirror.my.com=mirror2.my.com")
	if got := rw.Rewrite("mirror.my.com/quay/x:1"); got.Status != rewrite.StatusMirrored {
		t.Errorf("Rewrite(mirror.my.com/quay/x:1) = %s %q, want mirrored", got.Status, got.Rewritten)
	}
	if got := rw.Rewrite("mirror.my.com/other/x:1"); got.Rewritten != "mirror2.my.com/other/x:1" {
		t.Errorf("Rewrite(mirror.my.com/other/x:1) = %s %q, want mirror2.my.com/other/x:1", got.Status, got.Rewritten)
	}
}

// A FROM that names one repository sends it to TO's path itself; with no
// path in TO there is nowhere to put it, and the image is left alone.
func TestRewriteOfARepositoryOntoABareRegistryFails(t *testing.T) {
	t.Parallel()
	rw := mustRewriter(t, "quay.io/prometheus/prometheus=registry.my.com")
	got := rw.Rewrite("quay.io/prometheus/prometheus:v2.53.0")
	if got.Status != rewrite.StatusFailed || !strings.Contains(got.Reason, "has no path") {
		t.Errorf("Rewrite = %s %q (%s), want failed: TO has no path", got.Status, got.Rewritten, got.Reason)
	}
	if got := rw.Rewrite("quay.io/prometheus/prometheus/sub:1"); got.Rewritten != "registry.my.com/sub:1" {
		t.Errorf("Rewrite(quay.io/prometheus/prometheus/sub:1) = %s %q, want registry.my.com/sub:1", got.Status, got.Rewritten)
	}
}

func TestNilRewriterRewritesNothing(t *testing.T) {
	t.Parallel()
	var rw *rewrite.Rewriter
	if got := rw.Rewrite("nginx:1.25"); got.Status != rewrite.StatusNoMatch || rw.Len() != 0 {
		t.Errorf("nil Rewriter: %s, Len %d; want no match and 0", got.Status, rw.Len())
	}
}

func TestInvalidRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rules []string
		// field is the RuleError's Field, index its Index.
		field string
		index int
		// wantErr is part of the message, which must name the rule.
		wantErr string
	}{
		{rules: []string{"=registry.my.com/hub"}, field: "from", wantErr: "FROM is empty"},
		{rules: []string{"docker.io="}, field: "to", wantErr: "TO is empty"},
		{rules: []string{"*.example.com=registry.my.com/x"}, field: "from", wantErr: "no wildcard"},
		{rules: []string{"docker.io=*.my.com/x"}, field: "to", wantErr: "without wildcard"},
		{rules: []string{"https://docker.io=registry.my.com/hub"}, field: "from", wantErr: "drop the URL scheme"},
		{rules: []string{"docker.io=https://registry.my.com/hub"}, field: "to", wantErr: "drop the URL scheme"},
		{rules: []string{"docker.io=mirror/hub"}, field: "to", wantErr: `"mirror" is not read as a registry host`},
		{rules: []string{"docker.io=mirror"}, field: "to", wantErr: `"mirror" is not read as a registry host`},
		{rules: []string{"docker.io=registry.my.com/hub:1.0"}, field: "to", wantErr: "must not carry a tag or digest"},
		{rules: []string{"docker.io/library/nginx:1.25=registry.my.com/hub"}, field: "from", wantErr: "must not carry a tag or digest"},
		{rules: []string{"nginx:1.25=registry.my.com/hub"}, field: "from", wantErr: "not a valid registry host"},
		{rules: []string{"docker.io=registry.my.com/Hub"}, field: "to", wantErr: "must be lowercase"},
		{rules: []string{"index.docker.io=docker.io"}, field: "to", wantErr: "the same repository"},
		{rules: []string{"quay.io=registry.my.com/quay", "docker.io=registry.my.com/a", "docker.io=registry.my.com/b"}, field: "from", index: 2, wantErr: "already rewritten to registry.my.com/a"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.rules, " "), func(t *testing.T) {
			t.Parallel()
			var rules []rewrite.Rule
			for _, raw := range tc.rules {
				r, err := rewrite.ParseRule(raw)
				if err != nil {
					t.Fatal(err)
				}
				rules = append(rules, r)
			}
			_, err := rewrite.New(rules)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New(%q) error = %v, want one containing %q", tc.rules, err, tc.wantErr)
			}
			bad := tc.rules[tc.index]
			if !strings.Contains(err.Error(), bad) {
				t.Errorf("error %q does not name the rule %q", err, bad)
			}
			var re *rewrite.RuleError
			if !asRuleError(err, &re) || re.Field != tc.field || re.Index != tc.index {
				t.Errorf("error %#v, want a RuleError for field %q of rule %d", err, tc.field, tc.index)
			}
		})
	}
}

func asRuleError(err error, target **rewrite.RuleError) bool {
	for _, e := range flatten(err) {
		if re, ok := e.(*rewrite.RuleError); ok {
			*target = re
			return true
		}
	}
	return false
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestParseRuleNeedsAnEqualsSign(t *testing.T) {
	t.Parallel()
	if _, err := rewrite.ParseRule("docker.io"); err == nil || !strings.Contains(err.Error(), "want FROM=TO") {
		t.Errorf("ParseRule(docker.io) error = %v, want FROM=TO", err)
	}
	r, err := rewrite.ParseRule(" docker.io = registry.my.com/hub ")
	if err != nil || r.From != "docker.io" || r.To != "registry.my.com/hub" {
		t.Errorf("ParseRule with blanks = %+v, %v; want them trimmed", r, err)
	}
}

// The same rule twice (a flag repeated) is kept once; it is not a
// conflict.
func TestDuplicateRuleIsKeptOnce(t *testing.T) {
	t.Parallel()
	rw := mustRewriter(t, "docker.io=registry.my.com/hub", "index.docker.io=REGISTRY.MY.COM/hub")
	if rw.Len() != 1 {
		t.Errorf("Len() = %d, want 1", rw.Len())
	}
}

// A qualified result counts as a change and says what happened, with or
// without a mirror; a nil mirror renders as nothing rather than panicking.
func TestQualifiedResultsDescribeThemselves(t *testing.T) {
	t.Parallel()
	compiled, err := rewrite.Compile(rewrite.Rule{From: "docker.io", To: "registry.my.com/hub"})
	if err != nil {
		t.Fatal(err)
	}
	m := &compiled
	tests := []struct {
		name string
		res  rewrite.Result
		want string
	}{
		{name: "qualified only", res: rewrite.Result{Status: rewrite.StatusQualified, Rewritten: "docker.io/library/nginx:1", Qualified: "docker.io/library/nginx:1"},
			want: "docker.io/library/nginx:1 (the short name written out)"},
		{name: "qualified, then mirrored", res: rewrite.Result{Status: rewrite.StatusRewritten, Rewritten: "registry.my.com/hub/library/nginx:1", Qualified: "docker.io/library/nginx:1", Mirror: m},
			want: "registry.my.com/hub/library/nginx:1 (qualified as docker.io/library/nginx:1, then rule docker.io=registry.my.com/hub)"},
		{name: "qualified, the mirror failed", res: rewrite.Result{Status: rewrite.StatusQualified, Rewritten: "docker.io/library/nginx:1", Qualified: "docker.io/library/nginx:1", Mirror: m, Reason: "too long"},
			want: "docker.io/library/nginx:1 (the short name written out; rule docker.io=registry.my.com/hub matches, but too long)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if !tc.res.Changed() {
				t.Error("got Changed false, want true")
			}
			if got := tc.res.Describe(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	if got := (*rewrite.Mirror)(nil).String(); got != "" {
		t.Errorf("got nil mirror %q, want \"\"", got)
	}
}
