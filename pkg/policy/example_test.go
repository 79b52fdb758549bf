package policy_test

import (
	"fmt"

	"github.com/imagegate/imagegate/pkg/policy"
)

func ExamplePolicy_Evaluate() {
	p, err := policy.New(policy.Options{
		AllowedRegistries: []string{"registry.my.com"},
		RejectLatest:      true,
		AllowBreakGlass:   true,
	})
	if err != nil {
		panic(err)
	}
	good := p.Evaluate(policy.Input{Images: []policy.Image{{Container: "app", Ref: "registry.my.com/prometheus:2.6.1"}}})
	fmt.Println(good.Allowed, good.Outcome)

	bad := p.Evaluate(policy.Input{Images: []policy.Image{{Container: "app", Ref: "prometheus:2.6.1"}}})
	fmt.Println(bad.Allowed, bad.Outcome)
	fmt.Println(bad.Reason())
	// Output:
	// true allowed
	// false denied
	// container "app" image "prometheus:2.6.1": registry docker.io is not allowed (allowed: registry.my.com); push or mirror the image to an allowed registry and use that reference
}

func ExampleParseBreakGlass() {
	bg := policy.ParseBreakGlass(map[string]string{
		"mycluster.image-policy.k8s.io/ticket-1234": "break-glass",
		"image-policy.k8s.io/break-glass":           "true", // no subdomain: ignored
	})
	fmt.Println(bg.Requested, bg.Ticket())
	// Output: true ticket-1234
}

func ExampleParseRegistryEntry() {
	for _, raw := range []string{"Registry.My.Com", "index.docker.io/library", "library/nginx"} {
		e, _ := policy.ParseRegistryEntry(raw)
		fmt.Println(e)
	}
	// Output:
	// registry.my.com
	// docker.io/library
	// docker.io/library/nginx
}
