package policy_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
)

func mustPolicy(t testing.TB, opts policy.Options) *policy.Policy {
	t.Helper()
	p, err := policy.New(opts)
	if err != nil {
		t.Fatalf("policy.New(%+v): %v", opts, err)
	}
	return p
}

func TestParseRegistryEntry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		input   string // the entry as an operator writes it
		want    string // normalised form; empty when an error is expected
		wantErr string // substring of the error
	}{
		{input: "registry.my.com", want: "registry.my.com"},
		{input: "Registry.My.Com", want: "registry.my.com"},
		{input: " registry.my.com ", want: "registry.my.com"},
		{input: "registry.my.com:5000", want: "registry.my.com:5000"},
		{input: "localhost:5000", want: "localhost:5000"},
		{input: "[::1]:5000", want: "[::1]:5000"},
		{input: "index.docker.io", want: "docker.io"},
		{input: "INDEX.DOCKER.IO", want: "docker.io"},
		{input: "docker.io/library", want: "docker.io/library"},
		{input: "docker.io/nginx", want: "docker.io/nginx"},
		{input: "docker.io/library/nginx", want: "docker.io/library/nginx"},
		{input: "library/nginx", want: "docker.io/library/nginx"},
		{input: "index.docker.io/bitnami", want: "docker.io/bitnami"},
		{input: "quay.io/prometheus", want: "quay.io/prometheus"},
		{input: "Quay.IO/prometheus", want: "quay.io/prometheus"},
		{input: "registry.my.com:5000/team/app", want: "registry.my.com:5000/team/app"},
		{input: "", wantErr: "empty"},
		{input: "https://registry.my.com", wantErr: "URL scheme"},
		{input: "*.my.com", wantErr: "wildcard"},
		{input: "registry.my.com@sha256:abc", wantErr: "digest"},
		{input: "registry.my.com/app:1.0", wantErr: "tag or digest"},
		{input: "registry.my.com/", wantErr: "invalid reference format"},
		{input: "registry.my.com/App", wantErr: "lowercase"},
		{input: "registry.my.com.", wantErr: "not a valid registry host"},
		{input: "registry..my.com", wantErr: "not a valid registry host"},
		{input: "registry.my.com:port", wantErr: "not a valid registry host"},
		{input: "reg istry.my.com", wantErr: "not a valid registry host"},
	}
	for _, tc := range tests {
		t.Run(tc.input, func(t *testing.T) {
			t.Parallel()
			got, err := policy.ParseRegistryEntry(tc.input)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseRegistryEntry(%q) error = %v, want one containing %q", tc.input, err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.input) && tc.input != "" {
					t.Errorf("error %q does not name the entry %q", err, tc.input)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRegistryEntry(%q): %v", tc.input, err)
			}
			if got.String() != tc.want {
				t.Errorf("ParseRegistryEntry(%q) = %q, want %q", tc.input, got, tc.want)
			}
		})
	}
}

func TestRegistryEntryMatchesOnPathBoundaries(t *testing.T) {
	t.Parallel()
	e, err := policy.ParseRegistryEntry("quay.io/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		domain, path string
		want         bool
	}{
		{"quay.io", "prometheus", true},
		{"quay.io", "prometheus/node-exporter", true},
		{"QUAY.IO", "prometheus/a/b", true},
		{"quay.io", "prometheusx", false},
		{"quay.io", "prometheus-evil/x", false},
		{"quay.io", "prom", false},
		{"quay.io", "evil/prometheus", false},
		{"quay.io.evil.com", "prometheus", false},
		{"quay.io:443", "prometheus", false},
	}
	for _, tc := range tests {
		if got := e.Matches(tc.domain, tc.path); got != tc.want {
			t.Errorf("%v.Matches(%q, %q) = %v, want %v", e, tc.domain, tc.path, got, tc.want)
		}
	}
}

func TestNewReportsEveryInvalidEntry(t *testing.T) {
	t.Parallel()
	_, err := policy.New(policy.Options{AllowedRegistries: []string{"registry.my.com", "https://bad.io", "also bad", "quay.io/ok"}})
	if err == nil {
		t.Fatal("New accepted invalid entries")
	}
	for _, want := range []string{`"https://bad.io"`, `"also bad"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name entry %s", err, want)
		}
	}
}

func TestNewRejectsUnknownMode(t *testing.T) {
	t.Parallel()
	if _, err := policy.New(policy.Options{Mode: "audit"}); err == nil || !strings.Contains(err.Error(), `"audit"`) {
		t.Fatalf("New(Mode: audit) error = %v, want one naming the mode", err)
	}
}

func TestNewWarnings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		whitelist []string
		want      []string // substrings, one per expected warning
	}{
		{name: "no whitelist allows every registry", whitelist: nil, want: []string{"every registry"}},
		{name: "bare name is a Docker Hub namespace", whitelist: []string{"bitnami"}, want: []string{`"docker.io/bitnami"`}},
		{name: "Docker Hub namespace that shadows an official image", whitelist: []string{"docker.io/nginx"}, want: []string{`"docker.io/library/nginx"`}},
		{name: "hosts with a dot or port are fine", whitelist: []string{"registry.my.com", "localhost", "reg:5000", "docker.io/library", "docker.io/library/nginx"}, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := warnings(mustPolicy(t, policy.Options{AllowedRegistries: tc.whitelist}))
			if len(got) != len(tc.want) {
				t.Fatalf("Warnings() = %q, want %d warnings", got, len(tc.want))
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("warning %q does not contain %q", got[i], tc.want[i])
				}
			}
		})
	}
}

func TestEvaluateWithoutWhitelistAllowsAnyRegistry(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, policy.Options{RejectLatest: true})
	if d := p.Evaluate(policy.Input{Images: []policy.Image{{Ref: "evil.io/x:1"}}}); !d.Allowed {
		t.Errorf("Evaluate denied with the registry rule off: %s", d.Reason())
	}
	if d := p.Evaluate(policy.Input{Images: []policy.Image{{Ref: "evil.io/x"}}}); d.Allowed {
		t.Error("Evaluate allowed an untagged image with reject-latest on")
	}
	lax := mustPolicy(t, policy.Options{AllowedRegistries: []string{"registry.my.com"}})
	if d := lax.Evaluate(policy.Input{Images: []policy.Image{{Ref: "registry.my.com/x"}}}); !d.Allowed {
		t.Errorf("Evaluate denied an untagged image with reject-latest off: %s", d.Reason())
	}
}

// The reason is what a person reads in kubectl's error: pin it exactly.
func TestEvaluateReportsEveryViolationInOrder(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, policy.Options{AllowedRegistries: []string{"registry.my.com", "quay.io/prometheus"}, RejectLatest: true, AllowBreakGlass: true})
	in := policy.Input{Namespace: "team-a", Images: []policy.Image{
		{Container: "init", Ref: "registry.my.com/setup:1.0"},
		{Container: "app", Ref: "prometheus:2.6.1"},
		{Container: "app", Ref: "prometheus:2.6.1"}, // duplicate: judged once
		{Container: "sidecar", Ref: "registry.my.com/proxy"},
		{Container: "exporter", Ref: "quay.io/other/exporter:latest"},
	}}
	d := p.Evaluate(in)
	if d.Allowed || d.Outcome != policy.OutcomeDenied {
		t.Fatalf("Evaluate = %v/%s, want denied", d.Allowed, d.Outcome)
	}
	want := `container "app" image "prometheus:2.6.1": registry docker.io is not allowed (allowed: registry.my.com, quay.io/prometheus); push or mirror the image to an allowed registry and use that reference; ` +
		`container "sidecar" image "registry.my.com/proxy": it has no tag, so it means the mutable "latest"; pin a version tag or a digest (@sha256:...); ` +
		`container "exporter" image "quay.io/other/exporter:latest": repository quay.io/other/exporter is not under an allowed path of registry quay.io (allowed: registry.my.com, quay.io/prometheus); use an image from an allowed repository; ` +
		`container "exporter" image "quay.io/other/exporter:latest": tag "latest" is mutable; pin a version tag or a digest (@sha256:...)`
	if got := d.Reason(); got != want {
		t.Errorf("Reason() =\n%s\nwant\n%s", got, want)
	}
	if d.AuditAnnotations != nil {
		t.Errorf("a plain denial carries audit annotations %v", d.AuditAnnotations)
	}
	// Without container names (ImageReview), the same image is one violation.
	anon := p.Evaluate(policy.Input{Images: []policy.Image{{Ref: "nginx:1.25"}, {Ref: "nginx:1.25"}}})
	if got, want := anon.Reason(), `image "nginx:1.25": registry docker.io is not allowed (allowed: registry.my.com, quay.io/prometheus); push or mirror the image to an allowed registry and use that reference`; got != want {
		t.Errorf("Reason() = %q, want %q", got, want)
	}
}

// Adapters that read whole pod specs say what uses an image; the reason
// names it so a user finds the right field.
func TestViolationNamesWhatUsesTheImage(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, policy.Options{AllowedRegistries: []string{"registry.my.com"}})
	d := p.Evaluate(policy.Input{Images: []policy.Image{
		{Container: "setup", Source: "init container", Ref: "busybox:1.36"},
		{Container: "app", Ref: "nginx:1.25"},
		{Container: "data", Source: "volume", Ref: "quay.io/x/data:1"},
	}})
	want := `init container "setup" image "busybox:1.36": registry docker.io is not allowed (allowed: registry.my.com); push or mirror the image to an allowed registry and use that reference; ` +
		`container "app" image "nginx:1.25": registry docker.io is not allowed (allowed: registry.my.com); push or mirror the image to an allowed registry and use that reference; ` +
		`volume "data" image "quay.io/x/data:1": registry quay.io is not allowed (allowed: registry.my.com); push or mirror the image to an allowed registry and use that reference`
	if got := d.Reason(); got != want {
		t.Errorf("Reason() =\n%s\nwant\n%s", got, want)
	}
	if got := d.Violations[2].Source; got != "volume" {
		t.Errorf("Violations[2].Source = %q, want volume", got)
	}
}

func TestEvaluateDeniesEmptyRequest(t *testing.T) {
	t.Parallel()
	p := mustPolicy(t, policy.Options{AllowBreakGlass: true})
	d := p.Evaluate(policy.Input{Annotations: map[string]string{"ops.image-policy.k8s.io/break-glass": "true"}})
	if d.Allowed {
		t.Fatal("Evaluate allowed a request without images")
	}
	if !strings.Contains(d.Reason(), "no container images") {
		t.Errorf("Reason() = %q, want it to say there are no images", d.Reason())
	}
}

func TestBreakGlass(t *testing.T) {
	t.Parallel()
	bad := []policy.Image{{Ref: "prometheus:2.6.1"}}
	tests := []struct {
		name        string
		allow       bool              // --allow-break-glass
		mode        policy.Mode       // policy mode
		images      []policy.Image    // the pod's images
		annotations map[string]string // the pod's annotations
		wantOutcome policy.Outcome
		wantReason  string            // substring
		wantAudit   map[string]string // exact audit annotations
	}{
		{
			name: "override is audited with its ticket", allow: true, images: bad,
			annotations: map[string]string{"ops.image-policy.k8s.io/break-glass": "true", "ops.image-policy.k8s.io/ticket": "INC-42"},
			wantOutcome: policy.OutcomeBreakGlass, wantReason: `break-glass (ticket INC-42) overrode: image "prometheus:2.6.1": registry docker.io`,
			wantAudit: map[string]string{
				"break-glass": "true", "ticket": "INC-42",
				"overridden-violations": `image "prometheus:2.6.1": registry docker.io is not allowed (allowed: registry.my.com); push or mirror the image to an allowed registry and use that reference`,
			},
		},
		{
			name: "ticket keys from the Kubernetes docs are sorted and joined", allow: true, images: bad,
			annotations: map[string]string{"b.image-policy.k8s.io/ticket-2": "break-glass", "a.image-policy.k8s.io/ticket-1": "break-glass"},
			wantOutcome: policy.OutcomeBreakGlass, wantReason: "(ticket ticket-1,ticket-2)",
		},
		{
			name: "break-glass on a compliant pod is still audited", allow: true,
			images:      []policy.Image{{Ref: "registry.my.com/app:1"}},
			annotations: map[string]string{"ops.image-policy.k8s.io/break-glass": "true"},
			wantOutcome: policy.OutcomeAllowed, wantAudit: map[string]string{"break-glass": "true"},
		},
		{
			name: "disabled break-glass says so", allow: false, images: bad,
			annotations: map[string]string{"ops.image-policy.k8s.io/break-glass": "true"},
			wantOutcome: policy.OutcomeDenied, wantReason: "break-glass was requested but is disabled on this server",
		},
		{
			name: "invalid reference is not overridable", allow: true,
			images:      []policy.Image{{Ref: "prometheus:2.6.1"}, {Ref: "BAD"}},
			annotations: map[string]string{"ops.image-policy.k8s.io/break-glass": "true"},
			wantOutcome: policy.OutcomeDenied, wantReason: "break-glass cannot override an invalid image reference",
		},
		{
			name: "warn mode allows and audits the violations", allow: true, mode: policy.ModeWarn, images: bad,
			wantOutcome: policy.OutcomeWarned, wantReason: `warn mode, not enforced: image "prometheus:2.6.1"`,
			wantAudit: map[string]string{"warn-mode-violations": `image "prometheus:2.6.1": registry docker.io is not allowed (allowed: registry.my.com); push or mirror the image to an allowed registry and use that reference`},
		},
		{
			name: "warn mode allows invalid references too", allow: true, mode: policy.ModeWarn,
			images: []policy.Image{{Ref: "BAD"}}, wantOutcome: policy.OutcomeWarned, wantReason: "not a valid image reference",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := mustPolicy(t, policy.Options{AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true, AllowBreakGlass: tc.allow, Mode: tc.mode})
			d := p.Evaluate(policy.Input{Images: tc.images, Annotations: tc.annotations})
			if d.Outcome != tc.wantOutcome {
				t.Fatalf("Outcome = %s, want %s (reason %q)", d.Outcome, tc.wantOutcome, d.Reason())
			}
			if d.Allowed != (tc.wantOutcome != policy.OutcomeDenied) {
				t.Errorf("Allowed = %v for outcome %s", d.Allowed, d.Outcome)
			}
			if !strings.Contains(d.Reason(), tc.wantReason) {
				t.Errorf("Reason() = %q, want it to contain %q", d.Reason(), tc.wantReason)
			}
			if tc.wantAudit != nil && !maps.Equal(d.AuditAnnotations, tc.wantAudit) {
				t.Errorf("AuditAnnotations = %q, want %q", d.AuditAnnotations, tc.wantAudit)
			}
		})
	}
}

func TestParseBreakGlass(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		annotations map[string]string
		wantKeys    []string // nil: not requested
		wantTickets []string
	}{
		{name: "none", annotations: nil},
		{name: "unrelated annotations", annotations: map[string]string{"app": "x", "ops.image-policy.k8s.io/owner": "me"}},
		{
			name:        "flag with ticket",
			annotations: map[string]string{"ops.image-policy.k8s.io/break-glass": "true", "ops.image-policy.k8s.io/ticket": " INC-1 "},
			wantKeys:    []string{"ops.image-policy.k8s.io/break-glass"}, wantTickets: []string{"INC-1"},
		},
		{
			name:        "ticket key form, deduplicated",
			annotations: map[string]string{"a.image-policy.k8s.io/INC-7": "break-glass", "b.image-policy.k8s.io/INC-7": "break-glass"},
			wantKeys:    []string{"a.image-policy.k8s.io/INC-7", "b.image-policy.k8s.io/INC-7"}, wantTickets: []string{"INC-7"},
		},
		{
			name:        "multi-label prefix",
			annotations: map[string]string{"team.ops.example.com.image-policy.k8s.io/break-glass": "true"},
			wantKeys:    []string{"team.ops.example.com.image-policy.k8s.io/break-glass"},
		},
		{
			name:        "overlong ticket is truncated",
			annotations: map[string]string{"ops.image-policy.k8s.io/break-glass": "true", "ops.image-policy.k8s.io/ticket": strings.Repeat("x", 300)},
			wantKeys:    []string{"ops.image-policy.k8s.io/break-glass"}, wantTickets: []string{strings.Repeat("x", 128) + "..."},
		},
		{name: "ticket alone asks for nothing", annotations: map[string]string{"ops.image-policy.k8s.io/ticket": "INC-1"}},
		{name: "name too long", annotations: map[string]string{"ops.image-policy.k8s.io/" + strings.Repeat("t", 64): "break-glass"}},
		{name: "prefix with underscore", annotations: map[string]string{"o_ps.image-policy.k8s.io/break-glass": "true"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := policy.ParseBreakGlass(tc.annotations)
			if got.Requested != (tc.wantKeys != nil) {
				t.Fatalf("Requested = %v, want %v", got.Requested, tc.wantKeys != nil)
			}
			if !slices.Equal(got.Keys, tc.wantKeys) || !slices.Equal(got.Tickets, tc.wantTickets) {
				t.Errorf("ParseBreakGlass = keys %q tickets %q, want %q %q", got.Keys, got.Tickets, tc.wantKeys, tc.wantTickets)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]policy.Mode{"enforce": policy.ModeEnforce, "Warn": policy.ModeWarn, " warn ": policy.ModeWarn} {
		if got, err := policy.ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := policy.ParseMode("dryrun"); err == nil {
		t.Error("ParseMode(dryrun) accepted an unknown mode")
	}
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"prometheus:2.6.1":                                        "docker.io/library/prometheus:2.6.1",
		"index.docker.io/bitnami/x":                               "docker.io/bitnami/x",
		"registry.my.com:5000/app":                                "registry.my.com:5000/app",
		"registry.my.com/app:1@sha256:" + strings.Repeat("a", 64): "registry.my.com/app:1@sha256:" + strings.Repeat("a", 64),
	} {
		if got, err := policy.Normalize(in); err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := policy.Normalize("registry.my.com/UPPER"); err == nil {
		t.Error("Normalize accepted an upper-case repository")
	}
}

// warnings renders p's warnings as users read them.
func warnings(p *policy.Policy) []string {
	out := make([]string, len(p.Warnings()))
	for i, w := range p.Warnings() {
		out[i] = w.String()
	}
	return out
}

// Checks is what the metrics start at zero, so it holds every Rule the
// package declares.
func TestChecksListsEveryRule(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var want []policy.Check
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			if g, ok := decl.(*ast.GenDecl); ok && g.Tok == token.CONST {
				for _, spec := range g.Specs {
					v := spec.(*ast.ValueSpec)
					if id, ok := v.Type.(*ast.Ident); ok && id.Name == "Check" {
						s, _ := strconv.Unquote(v.Values[0].(*ast.BasicLit).Value)
						want = append(want, policy.Check(s))
					}
				}
			}
		}
	}
	got := policy.Checks()
	slices.Sort(got)
	slices.Sort(want)
	if len(want) < 8 || !slices.Equal(got, want) {
		t.Errorf("got Checks() %q, want every Check constant: %q", got, want)
	}
}
