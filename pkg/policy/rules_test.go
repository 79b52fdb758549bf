package policy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/policy"
)

func mustCompile(t testing.TB, spec policy.Spec) *policy.Policy {
	t.Helper()
	p, err := policy.Compile(spec)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p
}

func TestRuleForPicksTheMostSpecificRule(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, policy.Spec{
		Source: "test",
		Rules: []policy.RuleOptions{
			{Name: "teams", Namespaces: []string{"team-*"}},
			{Name: "team-a", Namespaces: []string{"team-a", "team-a-*"}},
			{Name: "prod", Namespaces: []string{"*-prod"}},  // 5 literal characters, like "team-"
			{Name: "middle", Namespaces: []string{"a*b*c"}}, // several stars
			{Name: "catch-all", Namespaces: []string{"*"}},  // beats only the default
			{Name: "system", Namespaces: []string{"kube-system", "kube-public"}},
		},
	})
	tests := []struct {
		namespace string // the pod's namespace
		wantRule  string // rule that judges it
		wantBy    string // the namespace entry that selected it
	}{
		{namespace: "team-a", wantRule: "team-a", wantBy: "team-a"},           // exact beats team-*
		{namespace: "team-a-dev", wantRule: "team-a", wantBy: "team-a-*"},     // 7 literal characters beat 5
		{namespace: "team-b", wantRule: "teams", wantBy: "team-*"},            //
		{namespace: "team-b-prod", wantRule: "teams", wantBy: "team-*"},       // tie at 5: written first wins
		{namespace: "shop-prod", wantRule: "prod", wantBy: "*-prod"},          //
		{namespace: "kube-system", wantRule: "system", wantBy: "kube-system"}, //
		{namespace: "axxbyyc", wantRule: "middle", wantBy: "a*b*c"},           //
		{namespace: "abc", wantRule: "middle", wantBy: "a*b*c"},               // stars match nothing too
		{namespace: "acb", wantRule: "catch-all", wantBy: "*"},                // parts must come in order
		{namespace: "team", wantRule: "catch-all", wantBy: "*"},               // "team-*" needs the dash
		{namespace: "", wantRule: "catch-all", wantBy: "*"},                   // ImageReview without namespace
	}
	for _, tc := range tests {
		t.Run(tc.namespace, func(t *testing.T) {
			t.Parallel()
			rule, by := p.RuleFor(tc.namespace)
			if rule != tc.wantRule || by != tc.wantBy {
				t.Errorf("RuleFor(%q) = %q by %q, want %q by %q", tc.namespace, rule, by, tc.wantRule, tc.wantBy)
			}
		})
	}
	noCatchAll := mustCompile(t, policy.Spec{Rules: []policy.RuleOptions{{Name: "teams", Namespaces: []string{"team-*"}}}})
	if rule, by := noCatchAll.RuleFor("default"); rule != policy.DefaultRuleName || by != "" {
		t.Errorf("RuleFor(default) = %q by %q, want the default rule", rule, by)
	}
}

func TestEvaluateUsesTheNamespaceRule(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, policy.Spec{
		Default: policy.RuleOptions{AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true},
		Rules: []policy.RuleOptions{
			{Name: "team-a", Namespaces: []string{"team-a"}, AllowedRegistries: []string{"registry.my.com", "*.team-a.example.com"}, RejectLatest: true},
			{Name: "payments", Namespaces: []string{"payments-*"}, AllowedRegistries: []string{"registry.my.com"}, RequireDigest: true,
				DeniedRepositories: []string{"registry.my.com/legacy"}},
			{Name: "system", Namespaces: []string{"kube-system"}, ExemptImages: []string{"registry.k8s.io/pause", "docker.io/library/busybox:1.36"},
				AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true},
			{Name: "observe", Namespaces: []string{"lab"}, AllowedRegistries: []string{"registry.my.com"}, Mode: policy.ModeWarn},
		},
	})
	const digest = "@sha256:4c9d9d4b6b4f1ce3e6a5d5e4c1b44ad9e4e0b3f0b1b51f19e3ef9c0f6d5a7e1a"
	tests := []struct {
		namespace string
		image     string
		want      policy.Outcome
		wantRules []policy.Check // violated checks, in order
	}{
		{namespace: "default", image: "registry.my.com/app:1", want: policy.OutcomeAllowed},
		{namespace: "default", image: "eu.team-a.example.com/app:1", want: policy.OutcomeDenied, wantRules: []policy.Check{policy.CheckRegistry}},
		{namespace: "team-a", image: "eu.team-a.example.com/app:1", want: policy.OutcomeAllowed},
		{namespace: "team-a", image: "a.b.team-a.example.com/app:1", want: policy.OutcomeAllowed},
		{namespace: "team-a", image: "team-a.example.com/app:1", want: policy.OutcomeDenied, wantRules: []policy.Check{policy.CheckRegistry}},     // not the apex
		{namespace: "team-a", image: "evilteam-a.example.com/app:1", want: policy.OutcomeDenied, wantRules: []policy.Check{policy.CheckRegistry}}, // label boundary
		{namespace: "team-a", image: "eu.team-a.example.com:5000/app:1", want: policy.OutcomeDenied, wantRules: []policy.Check{policy.CheckRegistry}},
		{namespace: "team-a", image: "eu.team-a.example.com.evil.io/app:1", want: policy.OutcomeDenied, wantRules: []policy.Check{policy.CheckRegistry}},
		{namespace: "payments-eu", image: "registry.my.com/pay:1", want: policy.OutcomeDenied, wantRules: []policy.Check{policy.CheckDigestRequired}},
		{namespace: "payments-eu", image: "registry.my.com/pay:1" + digest, want: policy.OutcomeAllowed},
		{namespace: "payments-eu", image: "registry.my.com/legacy/pay" + digest, want: policy.OutcomeDenied, wantRules: []policy.Check{policy.CheckDeniedRepository}},
		{namespace: "payments-eu", image: "registry.my.com/legacy-new/pay" + digest, want: policy.OutcomeAllowed}, // path boundary
		{namespace: "kube-system", image: "registry.k8s.io/pause:3.10", want: policy.OutcomeAllowed},
		{namespace: "kube-system", image: "registry.k8s.io/pause", want: policy.OutcomeAllowed}, // exempt from reject-latest too
		{namespace: "kube-system", image: "busybox:1.36", want: policy.OutcomeAllowed},
		{namespace: "kube-system", image: "busybox:1.37", want: policy.OutcomeDenied, wantRules: []policy.Check{policy.CheckRegistry}},
		{namespace: "kube-system", image: "REGISTRY.K8S.IO/Pause:3.10", want: policy.OutcomeDenied, wantRules: []policy.Check{policy.CheckInvalidReference}},
		{namespace: "default", image: "registry.k8s.io/pause:3.10", want: policy.OutcomeDenied, wantRules: []policy.Check{policy.CheckRegistry}},
		{namespace: "lab", image: "nginx", want: policy.OutcomeWarned, wantRules: []policy.Check{policy.CheckRegistry}},
	}
	for _, tc := range tests {
		t.Run(tc.namespace+"/"+tc.image, func(t *testing.T) {
			t.Parallel()
			d := p.Evaluate(policy.Input{Namespace: tc.namespace, Images: []policy.Image{{Ref: tc.image}}})
			if d.Outcome != tc.want {
				t.Fatalf("Outcome = %s, want %s (reason %q)", d.Outcome, tc.want, d.Reason())
			}
			var got []policy.Check
			for _, v := range d.Violations {
				got = append(got, v.Check)
			}
			if strings.Join(ruleStrings(got), ",") != strings.Join(ruleStrings(tc.wantRules), ",") {
				t.Errorf("violated %v, want %v (reason %q)", got, tc.wantRules, d.Reason())
			}
		})
	}
}

func ruleStrings(rs []policy.Check) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return out
}

func TestMessagesOfTheNewChecks(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, policy.Spec{
		Source: "policy.yaml",
		Rules:  []policy.RuleOptions{{Name: "payments", Namespaces: []string{"payments"}, RequireDigest: true, DeniedRepositories: []string{"registry.my.com/legacy"}}},
	})
	d := p.Evaluate(policy.Input{Namespace: "payments", Images: []policy.Image{{Container: "app", Ref: "registry.my.com/legacy/app:1"}}})
	want := `container "app" image "registry.my.com/legacy/app:1": repository registry.my.com/legacy/app is denied by rule "payments" (entry registry.my.com/legacy); use another image; ` +
		`container "app" image "registry.my.com/legacy/app:1": rule "payments" requires images pinned by digest; append the digest (@sha256:...)`
	if got := d.Reason(); got != want {
		t.Errorf("Reason() =\n%s\nwant\n%s", got, want)
	}
	if d.RuleName != "payments" || d.AuditAnnotations[policy.AuditPolicyHash] != p.Hash() || d.AuditAnnotations[policy.AuditPolicyRule] != "payments" {
		t.Errorf("RuleName %q, audit %v: want rule payments and the policy hash", d.RuleName, d.AuditAnnotations)
	}
}

func TestBreakGlassRestrictions(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	p := mustCompile(t, policy.Spec{
		Default: policy.RuleOptions{AllowedRegistries: []string{"registry.my.com"}, BreakGlass: policy.BreakGlassOptions{Enabled: true}},
		Rules: []policy.RuleOptions{
			{Name: "ticketed", Namespaces: []string{"ticketed"}, AllowedRegistries: []string{"registry.my.com"},
				BreakGlass: policy.BreakGlassOptions{Enabled: true, RequireTicket: true}},
			{Name: "oncall", Namespaces: []string{"oncall"}, AllowedRegistries: []string{"registry.my.com"},
				BreakGlass: policy.BreakGlassOptions{Enabled: true, AllowedUsers: []string{"alice"}, AllowedGroups: []string{"sre"}}},
			{Name: "bounded", Namespaces: []string{"bounded"}, AllowedRegistries: []string{"registry.my.com"},
				BreakGlass: policy.BreakGlassOptions{Enabled: true, MaxAge: 4 * time.Hour}},
			{Name: "off", Namespaces: []string{"off"}, AllowedRegistries: []string{"registry.my.com"}},
		},
	})
	flag := map[string]string{"ops.image-policy.k8s.io/break-glass": "true"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{"ops.image-policy.k8s.io/break-glass": "true"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name        string
		namespace   string
		annotations map[string]string
		user        string
		groups      []string
		want        policy.Outcome
		wantReason  string // substring
	}{
		{name: "default rule honours plain break-glass", namespace: "default", annotations: flag, want: policy.OutcomeBreakGlass},
		{name: "ticket required and missing", namespace: "ticketed", annotations: flag, want: policy.OutcomeDenied, wantReason: `break-glass refused: rule "ticketed" requires a ticket`},
		{name: "ticket required and given", namespace: "ticketed", annotations: with("ops.image-policy.k8s.io/ticket", "INC-1"), want: policy.OutcomeBreakGlass},
		{name: "ticket in the key form", namespace: "ticketed", annotations: map[string]string{"ops.image-policy.k8s.io/INC-2": "break-glass"}, want: policy.OutcomeBreakGlass},
		{name: "allowed user", namespace: "oncall", annotations: flag, user: "alice", want: policy.OutcomeBreakGlass},
		{name: "allowed group", namespace: "oncall", annotations: flag, user: "bob", groups: []string{"dev", "sre"}, want: policy.OutcomeBreakGlass},
		{name: "other user", namespace: "oncall", annotations: flag, user: "mallory", groups: []string{"dev"}, want: policy.OutcomeDenied, wantReason: `does not let user "mallory" break glass`},
		{name: "no identity (ImageReview)", namespace: "oncall", annotations: flag, want: policy.OutcomeDenied, wantReason: "an ImageReview carries no user"},
		{name: "maxAge without expiry", namespace: "bounded", annotations: flag, want: policy.OutcomeDenied, wantReason: "requires an expiry"},
		{name: "expiry within maxAge", namespace: "bounded", annotations: with("ops.image-policy.k8s.io/expires", "2025-06-01T15:00:00Z"), want: policy.OutcomeBreakGlass},
		{name: "expiry with an offset", namespace: "bounded", annotations: with("ops.image-policy.k8s.io/expires", "2025-06-01T17:00:00+02:00"), want: policy.OutcomeBreakGlass},
		{name: "expiry too distant", namespace: "bounded", annotations: with("ops.image-policy.k8s.io/expires", "2025-06-02T12:00:00Z"), want: policy.OutcomeDenied, wantReason: "more than 4h0m0s ahead"},
		{name: "expired", namespace: "default", annotations: with("ops.image-policy.k8s.io/expires", "2025-06-01T11:59:59Z"), want: policy.OutcomeDenied, wantReason: "break-glass expired at 2025-06-01T11:59:59Z"},
		{name: "one of two expiries expired", namespace: "bounded", annotations: with("ops.image-policy.k8s.io/expires", "2025-06-01T13:00:00Z", "x.image-policy.k8s.io/expires", "2025-06-01T11:00:00Z"), want: policy.OutcomeDenied, wantReason: "expired"},
		{name: "unparsable expiry", namespace: "default", annotations: with("ops.image-policy.k8s.io/expires", "tomorrow"), want: policy.OutcomeDenied, wantReason: `expiry "tomorrow" is not an RFC 3339 time`},
		{name: "disabled", namespace: "off", annotations: flag, want: policy.OutcomeDenied, wantReason: "disabled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := p.Evaluate(policy.Input{Namespace: tc.namespace, Images: []policy.Image{{Ref: "nginx:1.25"}}, Annotations: tc.annotations, User: tc.user, Groups: tc.groups, Time: now})
			if d.Outcome != tc.want {
				t.Fatalf("Outcome = %s, want %s (reason %q)", d.Outcome, tc.want, d.Reason())
			}
			if !strings.Contains(d.Reason(), tc.wantReason) {
				t.Errorf("Reason() = %q, want it to contain %q", d.Reason(), tc.wantReason)
			}
			if d.BreakGlassRefused != "" && d.AuditAnnotations[policy.AuditBreakGlassRefused] != d.BreakGlassRefused {
				t.Errorf("refusal %q not audited: %v", d.BreakGlassRefused, d.AuditAnnotations)
			}
		})
	}
}

func TestParseAllowedEntry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		input   string // as written in allowedRegistries
		want    string // normalised; empty when an error is expected
		wantErr string // substring of the error
	}{
		{input: "*.example.com", want: "*.example.com"},
		{input: "*.Example.COM:5000/team", want: "*.example.com:5000/team"},
		{input: "*example.com", want: "*example.com"},
		{input: "registry.my.com", want: "registry.my.com"},
		{input: "*.com", wantErr: "at least two labels"},
		{input: "*.*.example.com", wantErr: "one leading"},
		{input: "foo.*.example.com", wantErr: "wildcard"},
		{input: "*.example.com/Team", wantErr: "lowercase"},
		{input: "*.example.com/team:1", wantErr: "tag or digest"},
		{input: "*.[::1]", wantErr: "not a registry host"},
	}
	for _, tc := range tests {
		t.Run(tc.input, func(t *testing.T) {
			t.Parallel()
			e, err := policy.ParseAllowedEntry(tc.input)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseAllowedEntry(%q) = %v, %v; want error containing %q", tc.input, e, err, tc.wantErr)
				}
				return
			}
			if err != nil || e.String() != tc.want {
				t.Fatalf("ParseAllowedEntry(%q) = %q, %v; want %q", tc.input, e, err, tc.want)
			}
		})
	}
}

func TestCompileErrorsNameTheField(t *testing.T) {
	t.Parallel()
	_, err := policy.Compile(policy.Spec{
		Default: policy.RuleOptions{AllowedRegistries: []string{"https://bad.io"}, Mode: "audit"},
		Rules: []policy.RuleOptions{
			{Name: "", Namespaces: []string{"a"}},
			{Name: "Team", Namespaces: []string{"Team_A"}},
			{Name: "x", ExemptImages: []string{"registry.k8s.io/Pause:1"}, BreakGlass: policy.BreakGlassOptions{Enabled: true, MaxAge: -time.Hour}},
			{Name: "x", Namespaces: []string{"b"}},
		},
	})
	if err == nil {
		t.Fatal("Compile accepted a broken spec")
	}
	for _, want := range []string{
		`default.allowedRegistries[0]: registry entry "https://bad.io"`,
		`default.mode: unknown mode "audit"`,
		`rules[0].name: every rule needs a name`,
		`rules[1].name: rule name "Team"`,
		`rules[1].namespaces[0]: namespace "Team_A"`,
		`rules[2].namespaces: rule "x" claims no namespace`,
		`rules[2].exemptImages[0]: exempt image "registry.k8s.io/Pause:1"`,
		`rules[2].breakGlass.maxAge: maxAge -1h0m0s must not be negative`,
		`rules[3].name: rule name "x" is already used by rules[2]`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
}

func TestCompileWarnings(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, policy.Spec{
		Source:  "policy.yaml",
		Default: policy.RuleOptions{AllowedRegistries: []string{"registry.my.com", "registry.my.com/team", "bitnami", "*example.com"}},
		Rules: []policy.RuleOptions{
			{Name: "a", Namespaces: []string{"team-a"}, AllowedRegistries: []string{"registry.my.com"}},
			{Name: "b", Namespaces: []string{"team-a"}, AllowedRegistries: []string{"registry.my.com"}},
			{Name: "all", Namespaces: []string{"*"}, AllowedRegistries: []string{"registry.my.com"}},
		},
	})
	want := []string{
		`default.allowedRegistries[2]: registry entry "bitnami" names a host that no image reference can use`,
		`default.allowedRegistries[3]: registry entry "*example.com" matches example.com itself as well as its subdomains`,
		`default.allowedRegistries[1]: registry entry "registry.my.com/team" is already covered by "registry.my.com"`,
		`rules[1].namespaces[0]: rule "b"'s namespace "team-a" is already claimed by rule "a"`,
		`rules[1]: rule "b" can never match`,
		`rules[2].namespaces[0]: rule "all" claims every namespace with "*", so the default rule never applies`,
	}
	got := warnings(p)
	if len(got) != len(want) {
		t.Fatalf("Warnings() =\n%s\nwant %d", strings.Join(got, "\n"), len(want))
	}
	if w := p.Warnings()[4]; w.Path != "rules[1]" || !strings.HasPrefix(w.Message, `rule "b" can never match`) {
		t.Errorf("got warning %+v, want the path rules[1] apart from its message", w)
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("warning %d = %q, want it to contain %q", i, got[i], want[i])
		}
	}
}
