package policyfile_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/config"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/policyfile"
	"github.com/imagegate/imagegate/pkg/rewrite"
)

const examplePolicy = "../../examples/policy/policy.yaml"

// base is what a policy file's default rule starts from under serve and
// check: the default rule imagegate's flags describe when none is given.
var base = func() policy.RuleOptions {
	opts, err := config.DefaultPolicy().Options()
	if err != nil {
		panic(err)
	}
	return opts.Rule()
}()

// load reads and parses the file at path on base.
func load(path string, o policyfile.Overrides) (*policyfile.Loaded, error) {
	data, err := policyfile.Read(path)
	if err != nil {
		return nil, err
	}
	return policyfile.Parse(path, data, base, o)
}

// Every broken file is an error that names the file, the line and the field.
func TestLoadInvalidFiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file string // under testdata/
		want string // the whole error message
	}{
		{file: "invalid-unknown-field.yaml", want: `testdata/invalid-unknown-field.yaml:8: unknown field "allowedRegistry" in rules[0]; known fields: name, namespaces, allowedRegistries, rejectLatest, requireDigest, requireFullyQualified, exemptImages, deniedRepositories, mode, breakGlass, rewrites, pinDigests`},
		{file: "invalid-unknown-top-level.yaml", want: `testdata/invalid-unknown-top-level.yaml:3: unknown field "defaults" at the top level; did you mean "default"?`},
		{file: "invalid-unknown-breakglass-field.yaml", want: `testdata/invalid-unknown-breakglass-field.yaml:6: unknown field "requireTickets" in default.breakGlass; did you mean "requireTicket"?`},
		{file: "invalid-wrong-kind.yaml", want: `testdata/invalid-wrong-kind.yaml:1: apiVersion "imagegate.dev/v1" and kind "ImagePolicy": want apiVersion imagegate.dev/v1alpha1 and kind ImagePolicy`},
		{file: "invalid-bad-entry.yaml", want: `testdata/invalid-bad-entry.yaml:6: default.allowedRegistries[1]: registry entry "https://registry.evil.io": drop the URL scheme, write host[:port] or host[:port]/path`},
		{file: "invalid-bad-wildcard.yaml", want: `testdata/invalid-bad-wildcard.yaml:7: rules[0].allowedRegistries[0]: registry entry "*.com": a wildcard must keep at least two labels ("*.example.com", not "*.com")`},
		{file: "invalid-unquoted-wildcard.yaml", want: `testdata/invalid-unquoted-wildcard.yaml:5: did not find expected alphabetic or numeric character; quote entries that start with "*", as in "*.example.com"`},
		{file: "invalid-bad-namespace.yaml", want: `testdata/invalid-bad-namespace.yaml:7: rules[0].namespaces[1]: namespace "Team_B": a namespace name or glob uses lower-case letters, digits, '-' and '*' only`},
		{file: "invalid-wrong-type.yaml", want: "testdata/invalid-wrong-type.yaml:4: default.rejectLatest: cannot unmarshal !!str `sometimes` into bool"},
		{file: "invalid-bad-mode.yaml", want: `testdata/invalid-bad-mode.yaml:6: rules[0].mode: unknown mode "audit": want "enforce" or "warn"`},
		{file: "invalid-bad-maxage.yaml", want: `testdata/invalid-bad-maxage.yaml:5: default.breakGlass.maxAge: maxAge "1 day": want a positive duration such as 30m, 4h or 168h`},
		{file: "invalid-duplicate-key.yaml", want: `testdata/invalid-duplicate-key.yaml:5: default.rejectLatest: mapping key "rejectLatest" already defined at line 4`},
		{file: "invalid-rule-without-name.yaml", want: `testdata/invalid-rule-without-name.yaml:4: rules[0].name: every rule needs a name (it appears in audit annotations and explanations)`},
		{file: "invalid-bad-exempt.yaml", want: `testdata/invalid-bad-exempt.yaml:5: default.exemptImages[0]: exempt image "registry.k8s.io/Pause:3.10": invalid reference format: repository name (Pause) must be lowercase`},
		{file: "invalid-syntax.yaml", want: `testdata/invalid-syntax.yaml:3: did not find expected ',' or ']'`},
		{file: "invalid-two-documents.yaml", want: `testdata/invalid-two-documents.yaml:3: a policy file holds one YAML document; remove everything after the first`},
		{file: "invalid-bad-rewrite.yaml", want: `testdata/invalid-bad-rewrite.yaml:9: default.rewrites[1].to: rewrite quay.io=mirror/quay: TO "mirror/quay": "mirror" is not read as a registry host in an image reference (mirror/... is a Docker Hub repository); name a host with a dot or a port, or localhost`},
		{file: "invalid-unknown-rewrite-field.yaml", want: `testdata/invalid-unknown-rewrite-field.yaml:6: unknown field "mirror" in default.rewrites[0]; known fields: from, to`},
		{file: "invalid-rewrite-without-to.yaml", want: `testdata/invalid-rewrite-without-to.yaml:9: rules[0].rewrites[0].to: rewrite docker.io=: TO is empty; name the mirror registry and path, e.g. registry.my.com/dockerhub`},
		{file: "invalid-empty.yaml", want: `testdata/invalid-empty.yaml: the file is empty; it needs apiVersion: imagegate.dev/v1alpha1 and kind: ImagePolicy`},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			l, err := load(filepath.Join("testdata", tc.file), policyfile.Overrides{})
			if err == nil {
				t.Fatalf("Load accepted %s (hash %s)", tc.file, l.Hash)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("error =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestLoadReportsEveryError(t *testing.T) {
	t.Parallel()
	_, err := policyfile.Parse("p.yaml", []byte(`apiVersion: imagegate.dev/v1alpha1
kind: ImagePolicy
default:
  allowedRegistries: ["bad entry"]
rules:
  - name: a
    namespaces: ["A"]
    mode: loud
`), base, policyfile.Overrides{})
	want := `p.yaml:4: default.allowedRegistries[0]: registry entry "bad entry": not a valid registry host[:port]
p.yaml:8: rules[0].mode: unknown mode "loud": want "enforce" or "warn"
p.yaml:7: rules[0].namespaces[0]: namespace "A": a namespace name or glob uses lower-case letters, digits, '-' and '*' only`
	if err == nil || err.Error() != want {
		t.Errorf("error =\n%v\nwant\n%s", err, want)
	}
}

func TestLoadLintWarnings(t *testing.T) {
	t.Parallel()
	l, err := load("testdata/lint.yaml", policyfile.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`testdata/lint.yaml:6: default.allowedRegistries[1]: registry entry "bitnami" names a host that no image reference can use`,
		`testdata/lint.yaml:13: rules[1].allowedRegistries[0]: registry entry "*example.com" matches example.com itself as well as its subdomains`,
		`testdata/lint.yaml:11: rules[1].namespaces[0]: rule "second"'s namespace "team-a" is already claimed by rule "first", which wins`,
		`testdata/lint.yaml:10: rules[1]: rule "second" can never match`,
	}
	if len(l.Warnings) != len(want) {
		t.Fatalf("Warnings =\n%s\nwant %d", strings.Join(l.Warnings, "\n"), len(want))
	}
	for i := range want {
		if !strings.HasPrefix(l.Warnings[i], want[i]) {
			t.Errorf("warning %d =\n%s\nwant it to start with\n%s", i, l.Warnings[i], want[i])
		}
	}
}

// A mirror the rule itself would refuse is a warning where the rewrite is
// written, and again for every rule that inherits it but allows less.
func TestLoadLintWarnsAboutMirrorsTheRuleRefuses(t *testing.T) {
	t.Parallel()
	l, err := load("testdata/lint-rewrites.yaml", policyfile.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`testdata/lint-rewrites.yaml:6: default.rewrites[0]: rewrite docker.io=mirror.my.com/dockerhub: rule "default"'s allowedRegistries (registry.my.com) do not cover the mirror mirror.my.com/dockerhub, so the images it rewrites would be refused; add mirror.my.com/dockerhub to allowedRegistries`,
		`testdata/lint-rewrites.yaml:12: rules[1].rewrites[0]: rewrite docker.io=mirror.my.com/dockerhub: rule "team-b"'s allowedRegistries (registry.team-b.example.com) do not cover the mirror mirror.my.com/dockerhub`,
	}
	if len(l.Warnings) != len(want) {
		t.Fatalf("Warnings =\n%s\nwant %d", strings.Join(l.Warnings, "\n"), len(want))
	}
	for i := range want {
		if !strings.HasPrefix(l.Warnings[i], want[i]) {
			t.Errorf("warning %d =\n%s\nwant it to start with\n%s", i, l.Warnings[i], want[i])
		}
	}
}

// rewrites inherit like every other field: a rule without it has the
// default rule's, a rule with it has its own, and an empty list turns
// rewriting off. --registry-mirror replaces the default rule's list and so
// reaches the rules that inherit it.
func TestRewritesInheritAndFlagsOverride(t *testing.T) {
	t.Parallel()
	src := []byte(`apiVersion: imagegate.dev/v1alpha1
kind: ImagePolicy
default:
  allowedRegistries: [registry.my.com]
  rewrites:
    - {from: docker.io, to: registry.my.com/dockerhub}
rules:
  - name: inherit
    namespaces: [inherit]
  - name: own
    namespaces: [own]
    rewrites:
      - from: docker.io/library
        to: registry.my.com/official
  - name: off
    namespaces: [off]
    rewrites: []
`)
	rewritten := func(l *policyfile.Loaded, ns string) string {
		return l.Policy.Rewrite(policy.Input{Namespace: ns, Images: []policy.Image{{Ref: "nginx:1.25"}}}).Results[0].Rewritten
	}
	l, err := policyfile.Parse("p.yaml", src, base, policyfile.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	for ns, want := range map[string]string{
		"default": "registry.my.com/dockerhub/library/nginx:1.25",
		"inherit": "registry.my.com/dockerhub/library/nginx:1.25",
		"own":     "registry.my.com/official/nginx:1.25",
		"off":     "",
	} {
		if got := rewritten(l, ns); got != want {
			t.Errorf("file only: nginx:1.25 in %s rewritten to %q, want %q", ns, got, want)
		}
	}
	mirrors := []rewrite.Rule{{From: "docker.io", To: "registry.my.com/flag-hub"}}
	l, err = policyfile.Parse("p.yaml", src, base, policyfile.Overrides{Rewrites: &mirrors})
	if err != nil {
		t.Fatal(err)
	}
	for ns, want := range map[string]string{
		"default": "registry.my.com/flag-hub/library/nginx:1.25",
		"inherit": "registry.my.com/flag-hub/library/nginx:1.25",
		"own":     "registry.my.com/official/nginx:1.25",
		"off":     "",
	} {
		if got := rewritten(l, ns); got != want {
			t.Errorf("with --registry-mirror: nginx:1.25 in %s rewritten to %q, want %q", ns, got, want)
		}
	}
}

// The example policy is the documentation: it must load cleanly and decide
// what its comments say.
func TestExamplePolicy(t *testing.T) {
	t.Parallel()
	l, err := load(examplePolicy, policyfile.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Warnings) > 0 {
		t.Errorf("the example policy has lint warnings:\n%s", strings.Join(l.Warnings, "\n"))
	}
	const digest = "@sha256:4c9d9d4b6b4f1ce3e6a5d5e4c1b44ad9e4e0b3f0b1b51f19e3ef9c0f6d5a7e1a"
	tests := []struct {
		namespace, image string
		want             policy.Outcome
		wantRule         string // the rule that judged
	}{
		{namespace: "default", image: "registry.corp.example.com/shop/web:1.2.0", want: policy.OutcomeAllowed, wantRule: "default"},
		{namespace: "default", image: "quay.io/prometheus/node-exporter:v1.8.0", want: policy.OutcomeAllowed, wantRule: "default"},
		{namespace: "default", image: "registry.corp.example.com/deprecated/web:1", want: policy.OutcomeDenied, wantRule: "default"},
		{namespace: "default", image: "nginx:1.27", want: policy.OutcomeDenied, wantRule: "default"},
		{namespace: "kube-system", image: "registry.k8s.io/pause:3.10", want: policy.OutcomeAllowed, wantRule: "system"},
		{namespace: "kube-system", image: "busybox:1.36.1", want: policy.OutcomeAllowed, wantRule: "system"},
		{namespace: "kube-system", image: "registry.k8s.io/coredns/coredns:v1.11.3", want: policy.OutcomeAllowed, wantRule: "system"},
		{namespace: "team-a-dev", image: "eu.registry.team-a.example.com/api:2.0.1", want: policy.OutcomeAllowed, wantRule: "team-a"},
		{namespace: "team-a", image: "registry.team-a.example.com/api:2.0.1", want: policy.OutcomeDenied, wantRule: "team-a"},
		{namespace: "team-b", image: "eu.registry.team-a.example.com/api:2.0.1", want: policy.OutcomeDenied, wantRule: "default"},
		{namespace: "payments", image: "registry.corp.example.com/pay/api:3.1.0", want: policy.OutcomeDenied, wantRule: "payments"},
		{namespace: "payments-eu", image: "registry.corp.example.com/pay/api:3.1.0" + digest, want: policy.OutcomeAllowed, wantRule: "payments"},
		{namespace: "sandbox-42", image: "nginx", want: policy.OutcomeWarned, wantRule: "sandbox"},
	}
	// The default rule's rewrite sends Docker Hub to the proxy cache, for
	// every namespace but the system ones.
	for ns, want := range map[string]string{
		"default": "registry.corp.example.com/dockerhub/library/nginx:1.27", "team-a-dev": "registry.corp.example.com/dockerhub/library/nginx:1.27",
		"payments": "registry.corp.example.com/dockerhub/library/nginx:1.27", "kube-system": "",
	} {
		if got := l.Policy.Rewrite(policy.Input{Namespace: ns, Images: []policy.Image{{Ref: "nginx:1.27"}}}).Results[0].Rewritten; got != want {
			t.Errorf("%s nginx:1.27 rewritten to %q, want %q", ns, got, want)
		}
	}
	for _, tc := range tests {
		d := l.Policy.Evaluate(policy.Input{Namespace: tc.namespace, Images: []policy.Image{{Ref: tc.image}}})
		if d.Outcome != tc.want || d.RuleName != tc.wantRule {
			t.Errorf("%s %s: %s by rule %q, want %s by %q (%s)", tc.namespace, tc.image, d.Outcome, d.RuleName, tc.want, tc.wantRule, d.Reason())
		}
		if d.AuditAnnotations[policy.AuditPolicyHash] != l.Hash {
			t.Errorf("%s %s: audit annotations %v lack the policy hash %s", tc.namespace, tc.image, d.AuditAnnotations, l.Hash)
		}
	}
}

// Flags given on the command line override the default rule, and reach the
// namespace rules that inherit from it, but not fields a rule sets itself.
func TestOverridesApplyToTheDefaultRule(t *testing.T) {
	t.Parallel()
	src := []byte(`apiVersion: imagegate.dev/v1alpha1
kind: ImagePolicy
default:
  allowedRegistries: [registry.my.com]
  rejectLatest: false
  mode: warn
rules:
  - name: own
    namespaces: [own]
    allowedRegistries: [registry.own.example.com]
  - name: inherit
    namespaces: [inherit]
`)
	whitelist := []string{"flag.example.com"}
	yes, enforce := true, "enforce"
	l, err := policyfile.Parse("p.yaml", src, base, policyfile.Overrides{AllowedRegistries: &whitelist, RejectLatest: &yes, Mode: &enforce})
	if err != nil {
		t.Fatal(err)
	}
	def, own, inherit := l.Spec.Default, l.Spec.Rules[0], l.Spec.Rules[1]
	if strings.Join(def.AllowedRegistries, ",") != "flag.example.com" || !def.RejectLatest || def.Mode != policy.ModeEnforce {
		t.Errorf("default rule = %+v, want the flags' values", def)
	}
	if strings.Join(own.AllowedRegistries, ",") != "registry.own.example.com" || !own.RejectLatest {
		t.Errorf("rule own = %+v, want its own registries and the flag's rejectLatest", own)
	}
	if strings.Join(inherit.AllowedRegistries, ",") != "flag.example.com" || inherit.Mode != policy.ModeEnforce {
		t.Errorf("rule inherit = %+v, want what the default rule has after the flags", inherit)
	}
	plain, err := policyfile.Parse("p.yaml", src, base, policyfile.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if plain.Spec.Default.RejectLatest || plain.Spec.Default.Mode != policy.ModeWarn {
		t.Errorf("without flags the default rule = %+v, want the file's values", plain.Spec.Default)
	}
}

// What the file leaves out comes from the caller's base, through the
// default rule to the namespace rules that inherit it.
func TestTheDefaultRuleStartsFromTheBase(t *testing.T) {
	t.Parallel()
	src := []byte("apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\ndefault:\n  rejectLatest: false\nrules:\n  - name: a\n    namespaces: [a]\n")
	strict := policy.RuleOptions{RequireDigest: true, RejectLatest: true, Mode: policy.ModeWarn}
	l, err := policyfile.Parse("p.yaml", src, strict, policyfile.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []policy.RuleOptions{l.Spec.Default, l.Spec.Rules[0]} {
		if !r.RequireDigest || r.Mode != policy.ModeWarn || r.RejectLatest {
			t.Errorf("got rule %q %+v, want the base's requireDigest and mode and the file's rejectLatest", r.Name, r)
		}
	}
}

// The hash names what the policy does, not how the file is written.
func TestHashIgnoresFormatting(t *testing.T) {
	t.Parallel()
	a := "apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\ndefault:\n  allowedRegistries: [registry.my.com]\n  rejectLatest: true\n"
	b := "# a comment\nkind: ImagePolicy\napiVersion: imagegate.dev/v1alpha1\ndefault:\n  rejectLatest: true\n  allowedRegistries:\n    - registry.my.com\n"
	c := strings.Replace(a, "registry.my.com", "registry.other.com", 1)
	hash := func(src string) string {
		l, err := policyfile.Parse("p.yaml", []byte(src), base, policyfile.Overrides{})
		if err != nil {
			t.Fatal(err)
		}
		return l.Hash
	}
	if hash(a) != hash(b) {
		t.Errorf("hash changed with comments and key order: %s vs %s", hash(a), hash(b))
	}
	if hash(a) == hash(c) {
		t.Errorf("hash %s did not change with the registry", hash(a))
	}
	if len(hash(a)) != 16 {
		t.Errorf("hash %q: want 16 hex digits", hash(a))
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := load(filepath.Join(t.TempDir(), "nope.yaml"), policyfile.Overrides{})
	if !os.IsNotExist(err) {
		t.Errorf("Load(missing) = %v, want a not-exist error", err)
	}
}

// config/policy-file mounts a copy of the example: keep them one policy.
func TestConfigMapPolicyIsTheExample(t *testing.T) {
	t.Parallel()
	a, err := os.ReadFile(examplePolicy)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../../config/policy-file/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Error("config/policy-file/policy.yaml differs from examples/policy/policy.yaml; copy one onto the other")
	}
}

// requireFullyQualified and pinDigests are inherited like every rule field,
// and their flags override the default rule, so they reach the rules that
// inherit it.
func TestBoolFieldsAreInheritedAndOverridden(t *testing.T) {
	t.Parallel()
	on, off := true, false
	tests := []struct {
		name  string
		field string
		// file is the field's value in the default rule; own keeps the other.
		file bool
		// o are the command-line overrides.
		o policyfile.Overrides
		// get reads the field of a rule.
		get func(policy.RuleOptions) bool
		// want are the default, inherit and own rules' settings.
		want [3]bool
	}{
		{name: "requireFullyQualified, the file alone", field: "requireFullyQualified", file: true,
			get: func(r policy.RuleOptions) bool { return r.RequireFullyQualified }, want: [3]bool{true, true, false}},
		{name: "requireFullyQualified, the flag turned off", field: "requireFullyQualified", file: true,
			o:   policyfile.Overrides{RequireFullyQualified: &off},
			get: func(r policy.RuleOptions) bool { return r.RequireFullyQualified }, want: [3]bool{false, false, false}},
		{name: "pinDigests, the file alone", field: "pinDigests",
			get: func(r policy.RuleOptions) bool { return r.PinDigests }, want: [3]bool{false, false, true}},
		{name: "pinDigests, the flag turned on", field: "pinDigests", o: policyfile.Overrides{PinDigests: &on},
			get: func(r policy.RuleOptions) bool { return r.PinDigests }, want: [3]bool{true, true, true}},
		{name: "pinDigests, the flag turned off", field: "pinDigests", o: policyfile.Overrides{PinDigests: &off},
			get: func(r policy.RuleOptions) bool { return r.PinDigests }, want: [3]bool{false, false, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := fmt.Appendf(nil, `apiVersion: imagegate.dev/v1alpha1
kind: ImagePolicy
default:
  %[1]s: %[2]t
rules:
  - name: inherit
    namespaces: [inherit]
  - name: own
    namespaces: [own]
    %[1]s: %[3]t
`, tc.field, tc.file, !tc.file)
			l, err := policyfile.Parse("p.yaml", src, policy.RuleOptions{}, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			got := [3]bool{tc.get(l.Spec.Default), tc.get(l.Spec.Rules[0]), tc.get(l.Spec.Rules[1])}
			if got != tc.want {
				t.Errorf("got %s (default, inherit, own) %v, want %v", tc.field, got, tc.want)
			}
		})
	}
}
