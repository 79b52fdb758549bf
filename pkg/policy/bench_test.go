package policy_test

import (
	"fmt"
	"testing"

	"github.com/imagegate/imagegate/pkg/policy"
)

// benchOptions is a realistic policy: a private registry, one upstream
// project on another registry, one Docker Hub image, no latest, audited
// break-glass.
var benchOptions = policy.Options{
	AllowedRegistries: []string{"registry.my.com", "quay.io/prometheus", "docker.io/library/busybox"},
	RejectLatest:      true,
	AllowBreakGlass:   true,
}

// benchPod returns a pod of n containers shaped like real ones: an app
// container, then sidecars. The 3-container pod is the classic one (two
// allowed images and one denied on two rules); the 1-container pod is
// allowed; the 10-container pod has one denied image among nine allowed.
// unique makes every reference distinct from those of any other pod (a new
// tag per pod), as a cluster sees them when it meets images for the first
// time.
func benchPod(n, unique int) policy.Input {
	tag := func(base string) string {
		if unique < 0 {
			return base
		}
		return fmt.Sprintf("%s-%d", base, unique)
	}
	in := policy.Input{
		Namespace:   "team-a",
		Annotations: map[string]string{"app.kubernetes.io/name": "app"},
	}
	add := func(container, ref string) {
		in.Images = append(in.Images, policy.Image{Container: container, Ref: ref})
	}
	add("app", "registry.my.com/team-a/app:"+tag("1.4.2"))
	switch n {
	case 1:
	case 3:
		add("exporter", "quay.io/prometheus/node-exporter:"+tag("v1.7.0"))
		add("debug", "nginx:"+tag("latest"))
	default:
		for i := 1; i < n-1; i++ {
			add(fmt.Sprintf("sidecar-%d", i), fmt.Sprintf("registry.my.com/platform/sidecar-%d:%s", i, tag("2.0.1")))
		}
		add("debug", "docker.io/library/nginx:"+tag("1.25"))
	}
	return in
}

// BenchmarkEvaluate judges pods of 1, 3 and 10 containers.
//
// warm judges the same pod again and again, as a cluster does: a Deployment's
// replicas, and the same few hundred images across every rollout. cold judges
// a pod whose every image the policy has never seen (a fresh tag per pod),
// which is the worst case for anything the policy learns as it goes: each
// round of pods is judged by a newly compiled policy, whose compilation is
// not timed.
func BenchmarkEvaluate(b *testing.B) {
	for _, n := range []int{1, 3, 10} {
		b.Run(fmt.Sprintf("containers=%d/warm", n), func(b *testing.B) {
			p := mustPolicy(b, benchOptions)
			in := benchPod(n, -1)
			wantAllowed := n == 1
			b.ReportAllocs()
			for b.Loop() {
				if d := p.Evaluate(in); d.Allowed != wantAllowed {
					b.Fatalf("allowed = %v, want %v", d.Allowed, wantAllowed)
				}
			}
		})
		b.Run(fmt.Sprintf("containers=%d/cold", n), func(b *testing.B) {
			const round = 4096 // distinct pods before a new policy is compiled
			pods := make([]policy.Input, round)
			for i := range pods {
				pods[i] = benchPod(n, i)
			}
			p := mustPolicy(b, benchOptions)
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				if i == len(pods) {
					b.StopTimer()
					p, i = mustPolicy(b, benchOptions), 0
					b.StartTimer()
				}
				p.Evaluate(pods[i])
				i++
			}
		})
	}
}

// BenchmarkEvaluateParallel judges the warm 3-container pod from every CPU
// at once, as a server does: anything shared between requests shows up here
// as contention.
func BenchmarkEvaluateParallel(b *testing.B) {
	p := mustPolicy(b, benchOptions)
	in := benchPod(3, -1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d := p.Evaluate(in); d.Allowed {
				b.Error("want a denial")
				return
			}
		}
	})
}
