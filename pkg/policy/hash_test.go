package policy_test

import (
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
)

func TestHashTellsPoliciesApartByWhatTheyDecide(t *testing.T) {
	t.Parallel()
	base := policy.Options{RegistryWhitelist: []string{"registry.my.com", "quay.io/prometheus"}, RejectLatest: true, AllowBreakGlass: true}
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
		{name: "an entry written differently but normalised alike", edit: func(o *policy.Options) { o.RegistryWhitelist = []string{"Registry.My.Com", "quay.io/prometheus"} }, same: true},
		{name: "a duplicate entry", edit: func(o *policy.Options) { o.RegistryWhitelist = append(o.RegistryWhitelist, "registry.my.com") }, same: true},
		{name: "enforce spelled out", edit: func(o *policy.Options) { o.Mode = policy.ModeEnforce }, same: true},
		{name: "another registry", edit: func(o *policy.Options) { o.RegistryWhitelist = []string{"registry.my.com"} }},
		{name: "warn mode", edit: func(o *policy.Options) { o.Mode = policy.ModeWarn }},
		{name: "latest allowed", edit: func(o *policy.Options) { o.RejectLatest = false }},
		{name: "break-glass off", edit: func(o *policy.Options) { o.AllowBreakGlass = false }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := base
			opts.RegistryWhitelist = append([]string(nil), base.RegistryWhitelist...)
			tc.edit(&opts)
			if got := hash(t, opts); (got == want) != tc.same {
				t.Errorf("got hash %s for %s, base %s; want same=%v", got, tc.name, want, tc.same)
			}
		})
	}
}
