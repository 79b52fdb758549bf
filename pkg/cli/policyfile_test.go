package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/cli"
	"github.com/imagegate/imagegate/pkg/policy"
)

const examplePolicy = "../../examples/policy/policy.yaml"

func writePolicy(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte("apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\n"+body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheckWithPolicyFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    []string // lines of stdout, in order (substrings)
		wantStderr string   // substring
		quiet      bool     // stderr must be empty
	}{
		{
			name:     "the namespace selects the rule",
			args:     []string{"--config", examplePolicy, "--namespace", "team-a-dev", "eu.registry.team-a.example.com/api:2.0.1", "ghcr.io/acme/app:1.0", "nginx:1.27"},
			wantCode: 1,
			wantOut: []string{
				"allowed\t\"eu.registry.team-a.example.com/api:2.0.1\"",
				"denied\t\"ghcr.io/acme/app:1.0\"\timage \"ghcr.io/acme/app:1.0\": registry ghcr.io is not allowed (allowed: registry.corp.example.com, *.registry.team-a.example.com)",
				// team-a inherits the default rule's rewrites.
				"allowed\t\"nginx:1.27\"\trewritten to registry.corp.example.com/dockerhub/library/nginx:1.27",
			},
		},
		{
			name:     "another namespace falls to the default rule",
			args:     []string{"--config", examplePolicy, "--namespace", "shop", "eu.registry.team-a.example.com/api:2.0.1"},
			wantCode: 1,
			wantOut:  []string{"denied\t\"eu.registry.team-a.example.com/api:2.0.1\"\timage \"eu.registry.team-a.example.com/api:2.0.1\": registry eu.registry.team-a.example.com is not allowed (allowed: registry.corp.example.com, quay.io/prometheus)"},
		},
		{
			name:     "explain says which rule and which entry",
			args:     []string{"--config", examplePolicy, "--namespace", "team-a-dev", "--explain", "eu.registry.team-a.example.com/api:2.0.1"},
			wantCode: 0,
			wantOut: []string{
				`image "eu.registry.team-a.example.com/api:2.0.1"`,
				"  normalised:         eu.registry.team-a.example.com/api:2.0.1",
				`  rule:               team-a (namespace "team-a-dev" matches "team-a-*") in policy `,
				"  rewrite:            none: no rewrite rule matches",
				"  registry:           pass  matches allowedRegistries entry *.registry.team-a.example.com",
				"  denied-repository:  pass  in no denied repository",
				`  latest-tag:         pass  tag "2.0.1"`,
				"  digest-required:    off   requireDigest is off",
				"  verdict:            allowed",
			},
		},
		{
			name:     "explain an exemption",
			args:     []string{"--config", examplePolicy, "--namespace", "kube-system", "--explain", "registry.k8s.io/pause"},
			wantCode: 0,
			wantOut:  []string{`image "registry.k8s.io/pause"`, "  normalised:", `  rule:               system (namespace "kube-system" matches "kube-system")`, "  exempt:             pass  exempt by exemptImages entry registry.k8s.io/pause", "  verdict:            allowed"},
		},
		{
			name:     "explain a denial by a default rule",
			args:     []string{"--config", examplePolicy, "--namespace", "shop", "--explain", "registry.corp.example.com/deprecated/web:1"},
			wantCode: 1,
			wantOut:  []string{`image "registry.corp.example.com/deprecated/web:1"`, "  normalised:", `  rule:               default (namespace "shop" no namespace rule matches)`, "  rewrite:            none: no rewrite rule matches", "  registry:           pass", "  denied-repository:  fail  matches deniedRepositories entry registry.corp.example.com/deprecated", "  latest-tag:         pass", "  digest-required:    off", "  verdict:            denied"},
		},
		{
			name:     "break-glass by an allowed group",
			args:     []string{"--config", examplePolicy, "--namespace", "team-a", "--annotation", "ops.image-policy.k8s.io/break-glass=true", "--annotation", "ops.image-policy.k8s.io/ticket=INC-7", "--annotation", "ops.image-policy.k8s.io/expires=2999-01-01T00:00:00Z", "--group", "team-a:oncall", "ghcr.io/acme/app:1.0"},
			wantCode: 1, // 2999 is further than maxAge: 24h (and a refused break-glass does not stop a rewrite: an image no rule rewrites)
			wantOut:  []string{"denied\t\"ghcr.io/acme/app:1.0\"\t"},
		},
		{
			name:     "flags override the file's default rule; an empty --registry-mirror turns its rewrites off",
			args:     []string{"--config", examplePolicy, "--namespace", "shop", "--registry-whitelist", "docker.io/library", "--registry-mirror=", "nginx:1.27"},
			wantCode: 0,
			wantOut:  []string{"allowed\t\"nginx:1.27\"\tdocker.io/library/nginx:1.27"},
		},
		{
			name:       "explain the rewrite, and the mirror a whitelist flag leaves out",
			args:       []string{"--config", examplePolicy, "--namespace", "shop", "--registry-whitelist", "docker.io/library", "--explain", "nginx:1.27"},
			wantCode:   1,
			wantOut:    []string{`image "nginx:1.27"`, "  normalised:         docker.io/library/nginx:1.27", `  rule:               default (namespace "shop" no namespace rule matches)`, "  rewrite:            registry.corp.example.com/dockerhub/library/nginx:1.27 (rule docker.io=registry.corp.example.com/dockerhub)", "  registry:           fail  registry registry.corp.example.com is not allowed (allowed: docker.io/library)", "  denied-repository:  pass", "  latest-tag:         pass", "  digest-required:    off", "  verdict:            denied"},
			wantStderr: `rewrite docker.io=registry.corp.example.com/dockerhub: rule "default"'s allowedRegistries (docker.io/library) do not cover the mirror`,
		},
		{
			name:     "explain a short name qualified, then mirrored",
			args:     []string{"--config", examplePolicy, "--namespace", "shop", "--require-fully-qualified", "--explain", "nginx:1.27"},
			wantCode: 0,
			wantOut: []string{`image "nginx:1.27"`, "  normalised:         docker.io/library/nginx:1.27", `  rule:               default (namespace "shop" no namespace rule matches) in policy `,
				"  rewrite:            registry.corp.example.com/dockerhub/library/nginx:1.27 (qualified as docker.io/library/nginx:1.27, then rule docker.io=registry.corp.example.com/dockerhub)",
				"  fully-qualified:    pass  names registry registry.corp.example.com", "  registry:           pass", "  denied-repository:  pass", "  latest-tag:         pass", "  digest-required:    off", "  verdict:            allowed"},
		},
		{
			name:     "explain a short name no mirror takes",
			args:     []string{"--config", examplePolicy, "--namespace", "shop", "--require-fully-qualified", "--registry-whitelist", "docker.io/library", "--registry-mirror=", "--explain", "nginx:1.27"},
			wantCode: 0,
			wantOut: []string{`image "nginx:1.27"`, "  normalised:", "  rule:", "  rewrite:            docker.io/library/nginx:1.27 (the short name written out)",
				"  fully-qualified:    pass  names registry docker.io", "  registry:           pass", "  denied-repository:  pass", "  latest-tag:         pass", "  digest-required:    off", "  verdict:            allowed"},
		},
		{
			name:       "lint warnings are printed",
			args:       []string{"--config", "../policyfile/testdata/lint.yaml", "registry.my.com/app:1"},
			wantCode:   0,
			wantOut:    []string{"allowed"},
			wantStderr: `imagegate check: warning: ../policyfile/testdata/lint.yaml:10: rules[1]: rule "second" can never match`,
		},
		{
			name:       "strict config fails on warnings",
			args:       []string{"--config", "../policyfile/testdata/lint.yaml", "--strict-config", "registry.my.com/app:1"},
			wantCode:   2,
			wantStderr: "--strict-config: the policy has 4 warning(s)",
		},
		{
			name:     "strict config passes a clean policy",
			args:     []string{"--config", examplePolicy, "--strict-config", "registry.corp.example.com/app:1"},
			wantCode: 0,
			wantOut:  []string{"allowed"},
			quiet:    true,
		},
		{
			name:       "a broken file is a usage error naming the line",
			args:       []string{"--config", "../policyfile/testdata/invalid-unknown-field.yaml", "nginx:1"},
			wantCode:   2,
			wantStderr: `invalid-unknown-field.yaml:8: unknown field "allowedRegistry" in rules[0]`,
		},
		{
			name:       "a missing file is a usage error",
			args:       []string{"--config", "does-not-exist.yaml", "nginx:1"},
			wantCode:   2,
			wantStderr: "does-not-exist.yaml",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, nil, nil, append([]string{"check"}, tc.args...)...)
			if r.code != tc.wantCode {
				t.Errorf("exit code = %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tc.wantCode, r.stdout, r.stderr)
			}
			lines := splitLines(r.stdout)
			if len(lines) != len(tc.wantOut) {
				t.Fatalf("stdout has %d lines, want %d:\n%s", len(lines), len(tc.wantOut), r.stdout)
			}
			for i, want := range tc.wantOut {
				if !strings.HasPrefix(lines[i], want) {
					t.Errorf("line %d = %q, want it to start with %q", i, lines[i], want)
				}
			}
			if tc.quiet && r.stderr != "" {
				t.Errorf("stderr = %q, want nothing", r.stderr)
			}
			if !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", r.stderr, tc.wantStderr)
			}
		})
	}
}

// With --config, only settings given explicitly override the file's
// default rule: the flags' built-in defaults do not.
func TestServeRecordsExplicitPolicySettings(t *testing.T) {
	t.Parallel()
	tls := []string{"--tls-cert-file", "c", "--tls-key-file", "k"}
	path := writePolicy(t, "default:\n  allowedRegistries: [registry.my.com]\n  rejectLatest: false\n")
	r := run(t, nil, nil, append([]string{"serve", "--config", path, "--mode", "Warn"}, tls...)...)
	if r.code != 0 || r.served == nil {
		t.Fatalf("serve exited %d: %s", r.code, r.stderr)
	}
	o := r.served.Policy.FileOverrides
	if o.AllowedRegistries != nil || o.RejectLatest != nil || o.AllowBreakGlass != nil || o.Mode == nil || *o.Mode != "warn" {
		t.Errorf("FileOverrides = %+v, want only mode=warn", o)
	}
	d := r.policy.Evaluate(policy.Input{Images: []policy.Image{{Ref: "registry.my.com/app"}, {Ref: "quay.io/app:1"}}})
	if d.Outcome != policy.OutcomeWarned || len(d.Violations) != 1 || d.Violations[0].Check != policy.CheckRegistry {
		t.Errorf("got %s %q, want the file's rejectLatest and registries and the flag's mode", d.Outcome, d.Reason())
	}

	env := map[string]string{"BOUNCER_REGISTRY_WHITELIST": "env.example.com"}
	r = run(t, env, nil, append([]string{"serve", "--config", path}, tls...)...)
	if o := r.served.Policy.FileOverrides; o.AllowedRegistries == nil || strings.Join(*o.AllowedRegistries, ",") != "env.example.com" {
		t.Errorf("FileOverrides = %+v, want the environment's whitelist", o)
	}
	r = run(t, env, nil, append([]string{"serve", "--config", path, "--registry-whitelist", "flag.example.com"}, tls...)...)
	if o := r.served.Policy.FileOverrides; o.AllowedRegistries == nil || strings.Join(*o.AllowedRegistries, ",") != "flag.example.com" {
		t.Errorf("FileOverrides = %+v, want the flag's whitelist over the environment's", o)
	}
}

// --registry-mirror given with --config replaces the file default rule's
// rewrites; not given, the file's rewrites stand.
func TestRegistryMirrorFlagOverridesTheFileRewrites(t *testing.T) {
	t.Parallel()
	path := writePolicy(t, "default:\n  allowedRegistries: [registry.my.com]\n  rewrites:\n    - {from: docker.io, to: registry.my.com/file-hub}\n")
	r := run(t, nil, nil, "check", "--config", path, "nginx:1.25")
	if r.code != 0 || !strings.Contains(r.stdout, "rewritten to registry.my.com/file-hub/library/nginx:1.25") {
		t.Errorf("the file's rewrite: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = run(t, nil, nil, "check", "--config", path, "--registry-mirror", "docker.io=registry.my.com/flag-hub", "nginx:1.25")
	if r.code != 0 || !strings.Contains(r.stdout, "rewritten to registry.my.com/flag-hub/library/nginx:1.25") {
		t.Errorf("the flag's rewrite: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = run(t, nil, nil, "check", "--config", path, "--registry-mirror", "docker.io", "nginx:1.25")
	if r.code != 2 || !strings.Contains(r.stderr, `--registry-mirror: registry mirror "docker.io": want FROM=TO`) {
		t.Errorf("a broken flag with a file: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = run(t, nil, nil, "serve", "--config", path, "--registry-mirror", "docker.io", "--tls-cert-file", "c", "--tls-key-file", "k")
	if r.code != 2 || r.served != nil {
		t.Errorf("serve with a broken flag and a file: exit %d (served %v), want 2", r.code, r.served != nil)
	}
}

func TestServeRefusesABrokenPolicyFile(t *testing.T) {
	t.Parallel()
	path := writePolicy(t, "default:\n  allowedRegistries: [\"https://x\"]\n")
	r := run(t, nil, nil, "serve", "--config", path, "--tls-cert-file", "c", "--tls-key-file", "k")
	if r.code != 2 || r.served != nil {
		t.Fatalf("serve exited %d (served %v), want 2 before serving", r.code, r.served != nil)
	}
	if want := path + `:4: default.allowedRegistries[0]: registry entry "https://x"`; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr = %q, want it to contain %q", r.stderr, want)
	}
}

func TestAudit(t *testing.T) {
	t.Parallel()
	fixture := "../audit/testdata/cluster.json"
	r := run(t, nil, nil, "audit", "--config", examplePolicy, "-f", fixture)
	if r.code != 1 || !strings.Contains(r.stdout, "5 finding(s) in 12 object(s)") || !strings.Contains(r.stdout, "4 image(s) rewritten to a mirror, 3 of them fixed by it") {
		t.Errorf("audit exited %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = run(t, nil, nil, "audit", "--config", examplePolicy, "-f", fixture, "-o", "json")
	if r.code != 1 || !strings.HasPrefix(r.stdout, "{\n  \"findings\": [") {
		t.Errorf("audit -o json exited %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Flags alone: everything from docker.io is fine, nothing is latest.
	r = run(t, nil, nil, "audit", "--registry-whitelist", "registry.k8s.io,docker.io,registry.corp.example.com,quay.io,eu.registry.team-a.example.com,us.registry.team-a.example.com", "--reject-latest=false", "-f", fixture)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "0 finding(s)") {
		t.Errorf("a permissive audit exited %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, args := range [][]string{{}, {"-f", fixture, "extra"}, {"-f", fixture, "-o", "yaml"}, {"-f", "missing.json"}} {
		if r := run(t, nil, nil, append([]string{"audit"}, args...)...); r.code != 2 {
			t.Errorf("audit %q exited %d, want 2: %s", args, r.code, r.stderr)
		}
	}
}

func TestAuditReadsStandardInput(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../audit/testdata/pod.json")
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	app := &cli.App{Stdin: strings.NewReader(string(data)), Stdout: &stdout, Stderr: &stderr, LookupEnv: func(string) (string, bool) { return "", false }}
	// The pod's two Docker Hub images are fixed by the example's rewrite:
	// no finding, so exit 0.
	if code := app.Run(t.Context(), []string{"audit", "--config", examplePolicy, "-f", "-"}); code != 0 || !strings.Contains(stdout.String(), "0 finding(s) in 1 object(s) with 3 image(s), policy ") ||
		!strings.Contains(stdout.String(), "2 image(s) rewritten to a mirror, 2 of them fixed by it") {
		t.Errorf("audit -f - exited %d:\n%s%s", code, stdout.String(), stderr.String())
	}
}
