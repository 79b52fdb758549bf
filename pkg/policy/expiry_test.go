package policy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/pkg/policy"
)

// TestAPassedExpiryRefusesOnlyWhereTheOperationIsKnown: a break-glass
// expiry passing can happen to a running pod, so where a review cannot tell
// an update from a new pod (an ImageReview) it is not refused; every other
// expiry refusal, which only an operator's change can bring upon an admitted
// pod, holds on both paths.
func TestAPassedExpiryRefusesOnlyWhereTheOperationIsKnown(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	p := mustCompile(t, policy.Spec{
		Default: policy.RuleOptions{AllowedRegistries: []string{"registry.my.com"}, BreakGlass: policy.BreakGlassOptions{Enabled: true}},
		Rules: []policy.RuleOptions{{Name: "bounded", Namespaces: []string{"bounded"}, AllowedRegistries: []string{"registry.my.com"},
			BreakGlass: policy.BreakGlassOptions{Enabled: true, MaxAge: 4 * time.Hour}}},
	})
	tests := []struct {
		name       string
		namespace  string
		expires    []string // values of ops., x., ... expires annotations
		unknown    bool     // Input.OperationUnknown
		wantReason string   // substring of the refusal; "" for break-glass
	}{
		{name: "a passed expiry refuses where the operation is known", namespace: "bounded", expires: []string{"2025-06-01T11:59:59Z"}, wantReason: "break-glass expired at 2025-06-01T11:59:59Z"},
		{name: "a passed expiry is honoured where the operation is unknown", namespace: "bounded", expires: []string{"2025-06-01T11:59:59Z"}, unknown: true},
		{name: "an expiry at this very second has passed", namespace: "default", expires: []string{"2025-06-01T12:00:00Z"}, wantReason: "expired"},
		{name: "an expiry passed without maxAge is honoured where the operation is unknown", namespace: "default", expires: []string{"2000-01-01T00:00:00Z"}, unknown: true},
		{name: "a missing expiry under maxAge still refuses where the operation is unknown", namespace: "bounded", unknown: true, wantReason: "requires an expiry"},
		{name: "a malformed expiry still refuses where the operation is unknown", namespace: "bounded", expires: []string{"tomorrow"}, unknown: true, wantReason: `expiry "tomorrow" is not an RFC 3339 time`},
		{name: "an expiry beyond maxAge still refuses where the operation is unknown", namespace: "bounded", expires: []string{"2025-06-01T16:00:01Z"}, unknown: true, wantReason: "more than 4h0m0s ahead"},
		{name: "a passed expiry beside one beyond maxAge still refuses where the operation is unknown", namespace: "bounded", expires: []string{"2025-06-01T11:00:00Z", "2025-06-02T12:00:00Z"}, unknown: true, wantReason: "more than 4h0m0s ahead"},
		{name: "an expiry within maxAge is honoured on both paths", namespace: "bounded", expires: []string{"2025-06-01T15:00:00Z"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			annotations := map[string]string{"ops.image-policy.k8s.io/break-glass": "true"}
			for i, e := range tc.expires {
				annotations[[]string{"ops", "x"}[i]+".image-policy.k8s.io/expires"] = e
			}
			d := p.Evaluate(policy.Input{Namespace: tc.namespace, Images: []policy.Image{{Ref: "nginx:1.25"}},
				Annotations: annotations, Time: now, OperationUnknown: tc.unknown})
			want := policy.OutcomeBreakGlass
			if tc.wantReason != "" {
				want = policy.OutcomeDenied
			}
			if d.Outcome != want || !strings.Contains(d.BreakGlassRefused, tc.wantReason) {
				t.Fatalf("got outcome %s, refusal %q; want %s, refusal containing %q", d.Outcome, d.BreakGlassRefused, want, tc.wantReason)
			}
		})
	}
}
