package policy_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/policy"
)

func TestHashTellsPoliciesApartByWhatTheyDecide(t *testing.T) {
	t.Parallel()
	base := policy.Options{AllowedRegistries: []string{"registry.my.com", "quay.io/prometheus"}, RejectLatest: true, AllowBreakGlass: true}
	hash := func(t *testing.T, opts policy.Options) string {
		t.Helper()
		p, err := policy.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		return p.Hash()
	}
	want := hash(t, base)
	if len(want) != 16 {
		t.Errorf("got hash %q, want 16 hex digits", want)
	}
	tests := []struct {
		name string
		// edit changes base.
		edit func(*policy.Options)
		// same says whether the hash must stay the same.
		same bool
	}{
		{name: "the same options", edit: func(*policy.Options) {}, same: true},
		{name: "an entry written differently but normalised alike", edit: func(o *policy.Options) { o.AllowedRegistries = []string{"Registry.My.Com", "quay.io/prometheus"} }, same: true},
		{name: "a duplicate entry", edit: func(o *policy.Options) { o.AllowedRegistries = append(o.AllowedRegistries, "registry.my.com") }, same: true},
		{name: "enforce spelled out", edit: func(o *policy.Options) { o.Mode = policy.ModeEnforce }, same: true},
		{name: "another registry", edit: func(o *policy.Options) { o.AllowedRegistries = []string{"registry.my.com"} }},
		{name: "warn mode", edit: func(o *policy.Options) { o.Mode = policy.ModeWarn }},
		{name: "latest allowed", edit: func(o *policy.Options) { o.RejectLatest = false }},
		{name: "break-glass off", edit: func(o *policy.Options) { o.AllowBreakGlass = false }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := base
			opts.AllowedRegistries = append([]string(nil), base.AllowedRegistries...)
			tc.edit(&opts)
			if got := hash(t, opts); (got == want) != tc.same {
				t.Errorf("got hash %s for %s, base %s; want same=%v", got, tc.name, want, tc.same)
			}
		})
	}
}

// Every field of a rule decides something or says something, so editing
// any one changes the hash. The fields are found by reflection: one added
// to RuleOptions fails here until it has an edit, and then until the hash
// covers it.
func TestHashCoversEveryRuleField(t *testing.T) {
	t.Parallel()
	base := func() policy.RuleOptions {
		return policy.RuleOptions{Name: "team-a", Namespaces: []string{"team-a"}, AllowedRegistries: []string{"registry.my.com"},
			BreakGlass: policy.BreakGlassOptions{Enabled: true}}
	}
	edits := map[string]func(*policy.RuleOptions){
		"Name":                     func(r *policy.RuleOptions) { r.Name = "team-b" },
		"Namespaces":               func(r *policy.RuleOptions) { r.Namespaces = append(r.Namespaces, "team-a-*") },
		"AllowedRegistries":        func(r *policy.RuleOptions) { r.AllowedRegistries = append(r.AllowedRegistries, "quay.io") },
		"RejectLatest":             func(r *policy.RuleOptions) { r.RejectLatest = true },
		"RequireDigest":            func(r *policy.RuleOptions) { r.RequireDigest = true },
		"RequireFullyQualified":    func(r *policy.RuleOptions) { r.RequireFullyQualified = true },
		"PinDigests":               func(r *policy.RuleOptions) { r.PinDigests = true },
		"ExemptImages":             func(r *policy.RuleOptions) { r.ExemptImages = []string{"registry.k8s.io/pause:3.10"} },
		"DeniedRepositories":       func(r *policy.RuleOptions) { r.DeniedRepositories = []string{"registry.my.com/legacy"} },
		"Mode":                     func(r *policy.RuleOptions) { r.Mode = policy.ModeWarn },
		"BreakGlass.Enabled":       func(r *policy.RuleOptions) { r.BreakGlass.Enabled = false },
		"BreakGlass.RequireTicket": func(r *policy.RuleOptions) { r.BreakGlass.RequireTicket = true },
		"BreakGlass.AllowedUsers":  func(r *policy.RuleOptions) { r.BreakGlass.AllowedUsers = []string{"alice"} },
		"BreakGlass.AllowedGroups": func(r *policy.RuleOptions) { r.BreakGlass.AllowedGroups = []string{"oncall"} },
		"BreakGlass.MaxAge":        func(r *policy.RuleOptions) { r.BreakGlass.MaxAge = time.Hour },
		"Rewrites":                 func(r *policy.RuleOptions) { r.Rewrites = rules("docker.io=registry.my.com/hub") },
	}
	hash := func(t *testing.T, r policy.RuleOptions) string {
		return mustCompile(t, policy.Spec{Source: "p.yaml", Rules: []policy.RuleOptions{r}}).Hash()
	}
	want := hash(t, base())
	fields := fieldPaths(reflect.TypeFor[policy.RuleOptions](), "")
	for _, field := range fields {
		t.Run(field, func(t *testing.T) {
			t.Parallel()
			edit, ok := edits[field]
			if !ok {
				t.Fatalf("RuleOptions.%s has no edit in this test: give it one, and make computeHash cover it", field)
			}
			r := base()
			edit(&r)
			if got := hash(t, r); got == want {
				t.Errorf("got hash %s after editing %s, the same as before; want the hash to cover the field", got, field)
			}
		})
	}
	if len(edits) != len(fields) {
		t.Errorf("got %d edits for %d fields %q; want one edit per field", len(edits), len(fields), fields)
	}
}

// fieldPaths lists the fields of the struct type t, recursing into struct
// fields as "Outer.Inner".
func fieldPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() == reflect.Struct {
			out = append(out, fieldPaths(f.Type, prefix+f.Name+".")...)
			continue
		}
		out = append(out, prefix+f.Name)
	}
	return out
}
