package policy_test

import (
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
)

// BenchmarkEvaluate judges a typical 3-container pod: two allowed images and
// one denied on two rules.
func BenchmarkEvaluate(b *testing.B) {
	p := mustPolicy(b, policy.Options{
		RegistryWhitelist: []string{"registry.my.com", "quay.io/prometheus", "docker.io/library/busybox"},
		RejectLatest:      true,
		AllowBreakGlass:   true,
	})
	in := policy.Input{
		Namespace: "team-a",
		Images: []policy.Image{
			{Container: "app", Ref: "registry.my.com/team-a/app:1.4.2"},
			{Container: "exporter", Ref: "quay.io/prometheus/node-exporter:v1.7.0"},
			{Container: "debug", Ref: "nginx:latest"},
		},
		Annotations: map[string]string{"app.kubernetes.io/name": "app"},
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := p.Evaluate(in); d.Allowed {
			b.Fatal("want a denial")
		}
	}
}
