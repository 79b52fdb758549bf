package policy_test

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/imagegate/imagegate/pkg/policy"
)

const (
	bgFlag    = "ops.image-policy.k8s.io/break-glass"
	bgTicket  = "ops.image-policy.k8s.io/ticket"
	bgExpires = "ops.image-policy.k8s.io/expires"
)

// printableLine reports whether s is valid UTF-8 on one line with every
// rune printable, as reasons, logs and audit annotations need it.
func printableLine(s string) bool {
	return utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !strconv.IsPrint(r) }) < 0
}

// Tickets and expiries are free text: what comes out is single-line,
// printable and bounded, and a ticket nobody can see is no ticket.
func TestParseBreakGlassMakesTicketsAndExpiriesSafeToPrint(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 100) // 200 bytes
	tests := []struct {
		name            string
		ticket, expires string // annotation values, "" for none
		wantTickets     []string
		wantExpires     []string
	}{
		{name: "a zero-width space is no ticket", ticket: "\u200b"},
		{name: "zero-width and blank characters only are no ticket", ticket: " \u200b\u2060\ufeff\u00a0\u3164\u2800\u034f\t\n "},
		{name: "a lone combining mark is no ticket", ticket: "\u0301"},
		{name: "invalid UTF-8 alone is no ticket", ticket: "\xff\xfe"},
		{name: "control characters alone are no ticket", ticket: "\x00\x1b\x7f"},
		{name: "invisible characters around a ticket are trimmed", ticket: "\u200b INC-1\n\u200b", wantTickets: []string{"INC-1"}},
		{name: "a newline inside becomes U+FFFD", ticket: "INC-1\nreason: approved", wantTickets: []string{"INC-1\uFFFDreason: approved"}},
		{name: "control and format characters inside become U+FFFD", ticket: "INC\x1b[31m-1\u200b2\u202e", wantTickets: []string{"INC\uFFFD[31m-1\uFFFD2"}},
		{name: "other spaces become a space", ticket: "INC\u00a01\u30002", wantTickets: []string{"INC 1 2"}},
		{name: "invalid UTF-8 inside becomes U+FFFD", ticket: "INC-\xff1", wantTickets: []string{"INC-\uFFFD1"}},
		{name: "letters of any script are kept", ticket: "ÄRENDE-7 事件", wantTickets: []string{"ÄRENDE-7 事件"}},
		{name: "a long ticket is cut on a rune boundary and says so", ticket: long, wantTickets: []string{long[:128] + "..."}},
		{name: "replacements count towards the cut", ticket: "a" + strings.Repeat("\x01", 60) + "b", wantTickets: []string{"a" + strings.Repeat("\uFFFD", 42) + "..."}},
		{name: "a valid expiry is kept", expires: " 2030-01-31T18:00:00Z\n", wantExpires: []string{"2030-01-31T18:00:00Z"}},
		{name: "a newline inside an expiry becomes U+FFFD", expires: "2030-01-31T18:00:00Z\nok", wantExpires: []string{"2030-01-31T18:00:00Z\uFFFDok"}},
		{name: "an invisible expiry is an empty one, which no rule accepts", expires: "\u200b", wantExpires: []string{""}},
		{name: "a long expiry is cut", expires: strings.Repeat("9", 100), wantExpires: []string{strings.Repeat("9", 64) + "..."}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := map[string]string{bgFlag: "true"}
			if tc.ticket != "" {
				a[bgTicket] = tc.ticket
			}
			if tc.expires != "" {
				a[bgExpires] = tc.expires
			}
			got := policy.ParseBreakGlass(a)
			if !got.Requested || !slices.Equal(got.Tickets, tc.wantTickets) || !slices.Equal(got.Expires, tc.wantExpires) {
				t.Fatalf("got requested %v tickets %q expires %q, want requested, tickets %q expires %q", got.Requested, got.Tickets, got.Expires, tc.wantTickets, tc.wantExpires)
			}
			for _, s := range append(slices.Clone(got.Tickets), got.Expires...) {
				if !printableLine(s) || len(s) > 128+len("...") {
					t.Errorf("got %q, want a printable line of at most 131 bytes", s)
				}
			}
		})
	}
}

// Ticket, which reasons, logs and the ticket audit annotation use, names
// the first tickets and counts the rest, however many annotations a pod has.
func TestTicketIsBoundedHoweverManyTicketsThereAre(t *testing.T) {
	t.Parallel()
	a := map[string]string{}
	for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
		a[n+".image-policy.k8s.io/INC-"+n] = "break-glass"
	}
	bg := policy.ParseBreakGlass(a)
	if got, want := bg.Ticket(), "INC-a,INC-b,INC-c,INC-d,... (2 more)"; got != want {
		t.Errorf("got Ticket() %q, want %q", got, want)
	}
	if got := len(bg.Tickets); got != 6 {
		t.Errorf("got %d tickets, want all 6 kept", got)
	}
}

// A ticket nobody can see does not satisfy requireTicket, and the refusal
// says what to add as it does without one.
func TestRequireTicketRefusesAnInvisibleTicket(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, policy.Spec{Default: policy.RuleOptions{
		AllowedRegistries: []string{"registry.my.com"},
		BreakGlass:        policy.BreakGlassOptions{Enabled: true, RequireTicket: true},
	}})
	for _, ticket := range []string{"\u200b", "\u200b\u200c\u200d", " \t"} {
		d := p.Evaluate(policy.Input{Namespace: "default", Images: []policy.Image{{Container: "app", Ref: "nginx:1.25"}},
			Annotations: map[string]string{bgFlag: "true", bgTicket: ticket}})
		if d.Allowed || !strings.Contains(d.BreakGlassRefused, `requires a ticket: add <prefix>.image-policy.k8s.io/ticket`) {
			t.Errorf("ticket %q: got allowed %v, refusal %q; want denied, refused for want of a ticket", ticket, d.Allowed, d.BreakGlassRefused)
		}
	}
}

// The mutating webhook leaves a pod's images as written only for a
// break-glass the validating path would honour; one it would refuse
// changes nothing, so a fixable image is rewritten to the mirror instead
// of refused.
func TestRewriteSkipsOnlyBreakGlassTheRuleWouldHonour(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 31, 12, 0, 0, 0, time.UTC)
	rule := func(name string, bg policy.BreakGlassOptions) policy.RuleOptions {
		return policy.RuleOptions{Name: name, Namespaces: []string{name}, AllowedRegistries: []string{"registry.my.com"},
			BreakGlass: bg, Rewrites: rules("docker.io=registry.my.com/dockerhub")}
	}
	p := mustCompile(t, policy.Spec{
		Default: policy.RuleOptions{AllowedRegistries: []string{"registry.my.com"}},
		Rules: []policy.RuleOptions{
			rule("ticket", policy.BreakGlassOptions{Enabled: true, RequireTicket: true}),
			rule("users", policy.BreakGlassOptions{Enabled: true, AllowedUsers: []string{"alice"}, AllowedGroups: []string{"oncall"}}),
			rule("maxage", policy.BreakGlassOptions{Enabled: true, MaxAge: time.Hour}),
			rule("open", policy.BreakGlassOptions{Enabled: true}),
			rule("off", policy.BreakGlassOptions{}),
		},
	})
	tests := []struct {
		name, namespace, user string
		groups                []string
		annotations           map[string]string
		wantBreakGlass        bool // true: left as written; false: rewritten
	}{
		{name: "without a ticket under requireTicket, rewritten", namespace: "ticket", annotations: map[string]string{bgFlag: "true"}},
		{name: "with an invisible ticket under requireTicket, rewritten", namespace: "ticket", annotations: map[string]string{bgFlag: "true", bgTicket: "\u200b"}},
		{name: "with a ticket under requireTicket, left alone", namespace: "ticket", annotations: map[string]string{bgFlag: "true", bgTicket: "INC-1"}, wantBreakGlass: true},
		{name: "with the ticket in the key under requireTicket, left alone", namespace: "ticket", annotations: map[string]string{"ops.image-policy.k8s.io/INC-1": "break-glass"}, wantBreakGlass: true},
		{name: "a user not allowed, rewritten", namespace: "users", user: "mallory", annotations: map[string]string{bgFlag: "true"}},
		{name: "no user under allowedUsers, rewritten", namespace: "users", annotations: map[string]string{bgFlag: "true"}},
		{name: "an allowed user, left alone", namespace: "users", user: "alice", annotations: map[string]string{bgFlag: "true"}, wantBreakGlass: true},
		{name: "a member of an allowed group, left alone", namespace: "users", user: "bob", groups: []string{"dev", "oncall"}, annotations: map[string]string{bgFlag: "true"}, wantBreakGlass: true},
		{name: "without an expiry under maxAge, rewritten", namespace: "maxage", annotations: map[string]string{bgFlag: "true"}},
		{name: "an expired expiry, rewritten", namespace: "maxage", annotations: map[string]string{bgFlag: "true", bgExpires: "2025-01-31T11:59:59Z"}},
		{name: "an expiry beyond maxAge, rewritten", namespace: "maxage", annotations: map[string]string{bgFlag: "true", bgExpires: "2025-01-31T14:00:00Z"}},
		{name: "a malformed expiry, rewritten", namespace: "maxage", annotations: map[string]string{bgFlag: "true", bgExpires: "tomorrow"}},
		{name: "an expiry within maxAge, left alone", namespace: "maxage", annotations: map[string]string{bgFlag: "true", bgExpires: "2025-01-31T12:30:00Z"}, wantBreakGlass: true},
		{name: "an expired expiry without maxAge, rewritten", namespace: "open", annotations: map[string]string{bgFlag: "true", bgExpires: "2025-01-01T00:00:00Z"}},
		{name: "plain break-glass where honoured, left alone", namespace: "open", annotations: map[string]string{bgFlag: "true"}, wantBreakGlass: true},
		{name: "break-glass where disabled, rewritten", namespace: "off", annotations: map[string]string{bgFlag: "true"}},
		{name: "no break-glass asked, rewritten", namespace: "open"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := policy.Input{Namespace: tc.namespace, User: tc.user, Groups: tc.groups, Time: now, Annotations: tc.annotations,
				Images: []policy.Image{{Container: "app", Ref: "nginx:1.25"}}}
			plan := p.Rewrite(in)
			if plan.BreakGlass != tc.wantBreakGlass || plan.Changed() == tc.wantBreakGlass {
				t.Fatalf("got BreakGlass %v, changed %v; want BreakGlass %v", plan.BreakGlass, plan.Changed(), tc.wantBreakGlass)
			}
			// The validating path agrees: what is left alone is admitted
			// by break-glass, what is rewritten needs no override.
			judged := in
			if plan.Changed() {
				judged.Images = []policy.Image{{Container: "app", Ref: plan.Results[0].Rewritten}}
			}
			d := p.Evaluate(judged)
			if want := map[bool]policy.Outcome{true: policy.OutcomeBreakGlass, false: policy.OutcomeAllowed}[tc.wantBreakGlass]; d.Outcome != want {
				t.Errorf("got the validating path's outcome %s (%s), want %s", d.Outcome, d.Reason(), want)
			}
		})
	}
}

// FuzzParseBreakGlass checks that whatever the annotations, every ticket
// and expiry is a bounded printable line with a visible character, and
// Ticket() is bounded too.
func FuzzParseBreakGlass(f *testing.F) {
	f.Add("INC-1", "2030-01-31T18:00:00Z", "INC-2")
	f.Add("\u200b", "\n", "x")
	f.Add("a\x00\xff\u202e\u2028b", strings.Repeat("\u00e9", 80), "A.b_c-9")
	f.Fuzz(func(t *testing.T, ticket, expires, name string) {
		bg := policy.ParseBreakGlass(map[string]string{
			bgFlag: "true", bgTicket: ticket, bgExpires: expires,
			"x.image-policy.k8s.io/" + name: "break-glass",
		})
		for _, s := range bg.Tickets {
			if !printableLine(s) || len(s) > 131 || strings.TrimSpace(strings.ReplaceAll(s, "\uFFFD", "")) == "" {
				t.Fatalf("ticket %q from %q: want a printable line of at most 131 bytes with a visible character", s, ticket)
			}
		}
		for _, s := range bg.Expires {
			if !printableLine(s) || len(s) > 64+len("...") {
				t.Fatalf("expiry %q from %q: want a printable line of at most 67 bytes", s, expires)
			}
		}
		if got := bg.Ticket(); !printableLine(got) || len(got) > 4*132+len(",... (99 more)") {
			t.Fatalf("Ticket() = %q: want a bounded printable line", got)
		}
	})
}

// BreakGlassNote says why a break-glass request did not admit the pod, as
// the reason ends with it, and says it even when nothing needed overriding.
func TestBreakGlassNoteSaysWhyBreakGlassDidNotAdmit(t *testing.T) {
	t.Parallel()
	ask := map[string]string{bgFlag: "true"}
	tests := []struct {
		name        string
		rule        policy.RuleOptions
		image       string
		annotations map[string]string
		want        string
	}{
		{name: "none asked", rule: policy.RuleOptions{BreakGlass: policy.BreakGlassOptions{Enabled: true}}, image: "ghcr.io/x:1"},
		{name: "honoured", rule: policy.RuleOptions{BreakGlass: policy.BreakGlassOptions{Enabled: true}}, image: "ghcr.io/x:1", annotations: ask},
		{name: "disabled", image: "ghcr.io/x:1", annotations: ask, want: "break-glass was requested but is disabled on this server"},
		{name: "disabled, with nothing to override", image: "registry.my.com/x:1", annotations: ask, want: "break-glass was requested but is disabled on this server"},
		{
			name: "refused", rule: policy.RuleOptions{BreakGlass: policy.BreakGlassOptions{Enabled: true, RequireTicket: true}}, image: "ghcr.io/x:1", annotations: ask,
			want: `break-glass refused: rule "default" requires a ticket`,
		},
		{
			name: "not overridable", rule: policy.RuleOptions{BreakGlass: policy.BreakGlassOptions{Enabled: true}}, image: "BAD", annotations: ask,
			want: "break-glass cannot override an invalid image reference",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.rule.AllowedRegistries = []string{"registry.my.com"}
			p := mustCompile(t, policy.Spec{Default: tc.rule})
			d := p.Evaluate(policy.Input{Images: []policy.Image{{Ref: tc.image}}, Annotations: tc.annotations})
			got := d.BreakGlassNote()
			if !strings.HasPrefix(got, tc.want) || (tc.want == "") != (got == "") {
				t.Errorf("got note %q, want %q", got, tc.want)
			}
			if got != "" && !d.Allowed && !strings.HasSuffix(d.Reason(), "; "+got) {
				t.Errorf("got reason %q, want it to end with the note", d.Reason())
			}
		})
	}
}
