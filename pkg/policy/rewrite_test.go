package policy_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/rewrite"
)

func rules(raws ...string) []rewrite.Rule {
	out := make([]rewrite.Rule, 0, len(raws))
	for _, raw := range raws {
		r, err := rewrite.ParseRule(raw)
		if err != nil {
			panic(err)
		}
		out = append(out, r)
	}
	return out
}

// mirrorSpec is a cluster whose default rule allows only the company
// registry and mirrors Docker Hub and quay.io into it; team-a inherits
// that, team-b mirrors Docker Hub elsewhere, and legacy turns rewriting off.
var mirrorSpec = policy.Spec{
	Source: "policy.yaml",
	Default: policy.RuleOptions{
		AllowedRegistries: []string{"registry.my.com"},
		RejectLatest:      true,
		BreakGlass:        policy.BreakGlassOptions{Enabled: true},
		Rewrites:          rules("docker.io=registry.my.com/dockerhub", "quay.io=registry.my.com/quay"),
	},
	Rules: []policy.RuleOptions{
		{Name: "team-a", Namespaces: []string{"team-a"}, AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true, BreakGlass: policy.BreakGlassOptions{Enabled: true},
			Rewrites: rules("docker.io=registry.my.com/dockerhub", "quay.io=registry.my.com/quay")},
		{Name: "team-b", Namespaces: []string{"team-b"}, AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true,
			Rewrites: rules("docker.io=registry.my.com/team-b-hub")},
		{Name: "legacy", Namespaces: []string{"legacy"}, AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true},
	},
}

func TestRewriteUsesTheNamespaceRule(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, mirrorSpec)
	if !p.HasRewrites() {
		t.Fatal("HasRewrites() = false")
	}
	tests := []struct {
		namespace, image string
		// want is the rewritten image, empty when left alone.
		want string
	}{
		{namespace: "default", image: "prometheus:2.6.1", want: "registry.my.com/dockerhub/library/prometheus:2.6.1"},
		{namespace: "team-a", image: "quay.io/prometheus/prometheus:v2.53.0", want: "registry.my.com/quay/prometheus/prometheus:v2.53.0"},
		{namespace: "team-b", image: "nginx:1.25", want: "registry.my.com/team-b-hub/library/nginx:1.25"},
		{namespace: "team-b", image: "quay.io/prometheus/prometheus:v2.53.0"},
		{namespace: "legacy", image: "nginx:1.25"},
		{namespace: "default", image: "registry.my.com/dockerhub/library/nginx:1.25"},
		{namespace: "default", image: "Nginx:1.25"},
	}
	for _, tc := range tests {
		t.Run(tc.namespace+" "+tc.image, func(t *testing.T) {
			t.Parallel()
			plan := p.Rewrite(policy.Input{Namespace: tc.namespace, Images: []policy.Image{{Container: "app", Ref: tc.image}}})
			if len(plan.Results) != 1 || plan.Results[0].Rewritten != tc.want || plan.Changed() != (tc.want != "") {
				t.Fatalf("Rewrite in %s of %q = %+v, want %q", tc.namespace, tc.image, plan, tc.want)
			}
			if tc.want == "" {
				return
			}
			// The cluster judges the rewritten image: the mirror is allowed.
			d := p.Evaluate(policy.Input{Namespace: tc.namespace, Images: []policy.Image{{Container: "app", Ref: tc.want}}})
			if !d.Allowed {
				t.Errorf("the rewritten image is refused: %s", d.Reason())
			}
		})
	}
}

// Break-glass exists for when the approved registry cannot serve, and the
// mirror lives there: a pod that asks for it keeps its images, where break-
// glass is honoured.
func TestRewriteLeavesBreakGlassPodsAlone(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, mirrorSpec)
	bg := map[string]string{"ops.image-policy.k8s.io/break-glass": "true"}
	in := policy.Input{Namespace: "team-a", Annotations: bg, Images: []policy.Image{{Ref: "nginx:1.25"}}}
	if plan := p.Rewrite(in); !plan.BreakGlass || plan.Changed() {
		t.Errorf("break-glass pod: %+v, want BreakGlass and no rewrite", plan)
	}
	// team-b does not honour break-glass: the request changes nothing, so
	// the image is mirrored as usual.
	in.Namespace = "team-b"
	if plan := p.Rewrite(in); plan.BreakGlass || !plan.Changed() {
		t.Errorf("break-glass disabled: %+v, want the image rewritten", plan)
	}
}

func TestRewriteErrorsNameTheField(t *testing.T) {
	t.Parallel()
	_, err := policy.Compile(policy.Spec{
		Default: policy.RuleOptions{Rewrites: rules("docker.io=registry.my.com/hub", "quay.io=https://registry.my.com/quay")},
		Rules: []policy.RuleOptions{
			{Name: "a", Namespaces: []string{"a"}, Rewrites: rules("*.example.com=registry.my.com/x", "docker.io=registry.my.com/a", "index.docker.io=registry.my.com/b")},
		},
	})
	if err == nil {
		t.Fatal("Compile accepted invalid rewrites")
	}
	for _, want := range []string{
		`default.rewrites[1].to: rewrite quay.io=https://registry.my.com/quay: TO: registry entry "https://registry.my.com/quay": drop the URL scheme`,
		`rules[0].rewrites[0].from: rewrite *.example.com=registry.my.com/x: FROM "*.example.com": a rewrite takes no wildcard`,
		`rules[0].rewrites[2].from: rewrite index.docker.io=registry.my.com/b: FROM docker.io is already rewritten to registry.my.com/a`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
}

func TestNewReportsAnInvalidMirrorByName(t *testing.T) {
	t.Parallel()
	_, err := policy.New(policy.Options{Rewrites: rules("docker.io=mirror/hub")})
	if err == nil || !strings.Contains(err.Error(), `rewrite docker.io=mirror/hub: TO "mirror/hub"`) || strings.Contains(err.Error(), "rewrites[") {
		t.Errorf("New error = %v, want one naming the rule without a field path", err)
	}
}

func TestRewriteWarnings(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, policy.Spec{
		Source: "policy.yaml",
		Default: policy.RuleOptions{
			AllowedRegistries:  []string{"registry.my.com/dockerhub", "registry.my.com/quay"},
			DeniedRepositories: []string{"registry.my.com/quay/deprecated"},
			Rewrites:           rules("docker.io=registry.my.com/dockerhub", "quay.io=registry.my.com/quay", "bitnami=registry.my.com/dockerhub/bitnami", "ghcr.io=mirror.my.com/ghcr"),
		},
		Rules: []policy.RuleOptions{
			// Inherits the rewrites, but allows only one mirror path.
			{Name: "strict", Namespaces: []string{"strict"}, AllowedRegistries: []string{"registry.my.com/dockerhub"},
				Rewrites: rules("docker.io=registry.my.com/dockerhub", "quay.io=registry.my.com/quay")},
		},
	})
	want := []string{
		`default.rewrites[1]: rewrite quay.io=registry.my.com/quay: rule "default"'s deniedRepositories entry registry.my.com/quay/deprecated refuses images under the mirror registry.my.com/quay`,
		`default.rewrites[2]: rewrite bitnami=registry.my.com/dockerhub/bitnami: FROM: registry entry "bitnami" names a host that no image reference can use`,
		`default.rewrites[3]: rewrite ghcr.io=mirror.my.com/ghcr: rule "default"'s allowedRegistries (registry.my.com/dockerhub, registry.my.com/quay) do not cover the mirror mirror.my.com/ghcr, so the images it rewrites would be refused`,
		`rules[0].rewrites[1]: rewrite quay.io=registry.my.com/quay: rule "strict"'s allowedRegistries (registry.my.com/dockerhub) do not cover the mirror registry.my.com/quay`,
	}
	var got []string
	for _, w := range warnings(p) {
		if strings.Contains(w, "rewrite") {
			got = append(got, w)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("rewrite warnings =\n%s\nwant %d", strings.Join(got, "\n"), len(want))
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("warning %d = %q, want it to contain %q", i, got[i], want[i])
		}
	}
}

func TestHashCoversRewrites(t *testing.T) {
	t.Parallel()
	hash := func(raws ...string) string {
		p, err := policy.New(policy.Options{AllowedRegistries: []string{"registry.my.com"}, Rewrites: rules(raws...)})
		if err != nil {
			t.Fatal(err)
		}
		return p.Hash()
	}
	base := hash("docker.io=registry.my.com/hub", "quay.io=registry.my.com/quay")
	if none := hash(); none == base {
		t.Error("a policy without rewrites has the hash of one with rewrites")
	}
	if other := hash("docker.io=registry.my.com/hub2", "quay.io=registry.my.com/quay"); other == base {
		t.Error("another mirror path keeps the hash")
	}
	if same := hash("quay.io=REGISTRY.MY.COM/quay", "index.docker.io=registry.my.com/hub"); same != base {
		t.Errorf("the same rules written differently and in another order changed the hash: %s, want %s", same, base)
	}
}

// EvaluateMutated judges what the mutating webhook makes of each image,
// and its violations name the image as written beside the rewrite judged.
func TestEvaluateMutatedJudgesTheRewriteAndNamesTheImageAsWritten(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, mirrorSpec)
	tests := []struct {
		name        string
		namespace   string
		annotations map[string]string
		// want are the violations, as Image, Rewritten, Rule.
		want [][3]string
		// wantReason is the decision's reason.
		wantReason string
	}{
		{
			name:      "rewritten images are judged as rewritten, the others as written",
			namespace: "default",
			want: [][3]string{
				{"nginx", "registry.my.com/dockerhub/library/nginx", string(policy.CheckLatestTag)},
				{"ghcr.io/acme/app:1", "", string(policy.CheckRegistry)},
			},
			wantReason: `container "app" image "registry.my.com/dockerhub/library/nginx": it has no tag`,
		},
		{
			name:      "without rewrite rules every image is judged as written",
			namespace: "legacy",
			want: [][3]string{
				{"nginx", "", string(policy.CheckRegistry)}, {"nginx", "", string(policy.CheckLatestTag)},
				{"ghcr.io/acme/app:1", "", string(policy.CheckRegistry)},
				{"prometheus:2.6.1", "", string(policy.CheckRegistry)},
			},
			wantReason: `container "app" image "nginx": registry docker.io is not allowed`,
		},
		{
			name:        "a break-glass the rule honours keeps the images as written",
			namespace:   "default",
			annotations: map[string]string{bgFlag: "true"},
			want: [][3]string{
				{"nginx", "", string(policy.CheckRegistry)}, {"nginx", "", string(policy.CheckLatestTag)},
				{"ghcr.io/acme/app:1", "", string(policy.CheckRegistry)},
				{"prometheus:2.6.1", "", string(policy.CheckRegistry)},
			},
			wantReason: `break-glass overrode: container "app" image "nginx": registry docker.io is not allowed`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := policy.Input{Namespace: tc.namespace, Annotations: tc.annotations, Images: []policy.Image{
				{Container: "app", Ref: "nginx"}, {Container: "side", Ref: "ghcr.io/acme/app:1"}, {Container: "metrics", Ref: "prometheus:2.6.1"},
			}}
			plan, d := p.EvaluateMutated(in)
			if got, want := plan.Changed(), tc.want[0][1] != ""; got != want {
				t.Errorf("got plan changed %v, want %v", got, want)
			}
			var got [][3]string
			for _, v := range d.Violations {
				got = append(got, [3]string{v.Image, v.Rewritten, string(v.Check)})
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got violations %q, want %q", got, tc.want)
			}
			if !strings.HasPrefix(d.Reason(), tc.wantReason) {
				t.Errorf("got reason %q, want it to start with %q", d.Reason(), tc.wantReason)
			}
			if !plan.Changed() {
				if want := p.Evaluate(in); fmt.Sprint(want) != fmt.Sprint(d) {
					t.Errorf("got %+v, want what Evaluate decides when nothing is rewritten: %+v", d, want)
				}
			}
		})
	}
}

func TestExplainJudgesTheRewrittenImage(t *testing.T) {
	t.Parallel()
	p := mustCompile(t, mirrorSpec)
	x := p.Explain(policy.Input{Namespace: "default"}, "prometheus:2.6.1")
	if x.Rewrite == nil || x.Judged != "registry.my.com/dockerhub/library/prometheus:2.6.1" || !x.Decision.Allowed {
		t.Fatalf("Explain = rewrite %+v, judged %q, allowed %v; want the mirror judged and allowed", x.Rewrite, x.Judged, x.Decision.Allowed)
	}
	if x.Normalized != "docker.io/library/prometheus:2.6.1" {
		t.Errorf("Normalized = %q, want the image as written, normalised", x.Normalized)
	}
	x = p.Explain(policy.Input{Namespace: "legacy"}, "prometheus:2.6.1")
	if x.Rewrite != nil || x.Decision.Allowed {
		t.Errorf("legacy: rewrite %+v, allowed %v; want no rewrite and a denial", x.Rewrite, x.Decision.Allowed)
	}
	x = p.Explain(policy.Input{Namespace: "default"}, "registry.my.com/dockerhub/library/nginx")
	if x.Rewrite == nil || x.Rewrite.Status != rewrite.StatusMirrored || x.Decision.Allowed {
		t.Errorf("mirrored untagged image: rewrite %+v, allowed %v; want left alone and denied for latest", x.Rewrite, x.Decision.Allowed)
	}
}

func ExamplePolicy_Rewrite() {
	p, err := policy.New(policy.Options{
		AllowedRegistries: []string{"registry.my.com"},
		RejectLatest:      true,
		Rewrites:          []rewrite.Rule{{From: "docker.io", To: "registry.my.com/dockerhub"}},
	})
	if err != nil {
		panic(err)
	}
	plan := p.Rewrite(policy.Input{Images: []policy.Image{
		{Container: "app", Ref: "prometheus:2.6.1"},
		{Container: "sidecar", Ref: "registry.my.com/tools/proxy:1.0"},
	}})
	for _, r := range plan.Results {
		fmt.Println(r.Status, r.Rewritten)
	}
	// Output:
	// rewritten registry.my.com/dockerhub/library/prometheus:2.6.1
	// no-match
}
