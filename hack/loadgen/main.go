// Command loadgen is hack/bench.sh's helper. The load itself is vegeta's;
// loadgen writes what vegeta sends and reads what it measured:
//
//	loadgen targets -url URL -n N        mixed review bodies as vegeta JSON targets
//	loadgen flood -url URL -images N     ImageReviews naming N distinct images, as vegeta JSON targets
//	loadgen start -ready URL -cacert F -log F -- CMD ARGS...
//	                                     exec CMD, poll URL until 200, print "PID MILLISECONDS"
//	loadgen report FILE                  one line from a vegeta JSON report
//
// Everything it generates is deterministic (a fixed seed), so two runs send
// the same reviews.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	imagepolicyv1alpha1 "k8s.io/api/imagepolicy/v1alpha1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen targets|flood|start|report ...")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "targets":
		err = targets(args)
	case "flood":
		err = flood(args)
	case "start":
		err = start(args)
	case "report":
		err = report(args)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(1)
	}
}

// target is one line of vegeta's JSON target format.
type target struct {
	Method string              `json:"method"`
	URL    string              `json:"url"`
	Body   string              `json:"body"` // base64
	Header map[string][]string `json:"header"`
}

var jsonHeader = map[string][]string{"Content-Type": {"application/json"}}

func writeTarget(enc *json.Encoder, url string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return enc.Encode(target{Method: "POST", URL: url, Body: base64.StdEncoding.EncodeToString(body), Header: jsonHeader})
}

// The images a cluster runs. Allowed ones come from the bench policy's
// registries; denied ones break it in the usual ways.
var (
	teams    = []string{"shop", "payments", "search", "identity", "data", "platform", "ml", "web"}
	apps     = []string{"api", "worker", "frontend", "cron", "migrate", "gateway", "indexer", "scheduler", "notifier", "exporter"}
	sidecars = []string{
		"registry.my.com/platform/envoy:v1.31.2", "registry.my.com/platform/fluent-bit:3.1.9",
		"registry.my.com/platform/vault-agent:1.17.6", "quay.io/prometheus/node-exporter:v1.8.2",
		"quay.io/prometheus/statsd-exporter:v0.27.1", "busybox:1.36.1",
		"registry.my.com/platform/otel-collector:0.110.0@sha256:9c0f0ed6a6d7e2b1c8e4b0d7f1a2c3e4d5f60718293a4b5c6d7e8f9012345678",
	}
	denied = []string{
		"nginx:1.27.2", "redis:7.4", "registry.my.com/shop/api:latest", "registry.my.com/shop/api",
		"ghcr.io/someone/tool:v2", "registry.my.com.evil.io/shop/api:1.0", "docker.io/bitnami/postgresql:16.4.0",
		"quay.io/prometheus-evil/node-exporter:v1", "Registry.my.com/Shop/api:1",
	}
)

type pod struct {
	annotations map[string]string
	images      []string
}

// mixedPod draws a pod: 1 to 5 containers (fewer more often), 78% clean,
// 17% with one denied image, 5% with a denied image and a break-glass
// annotation, which imagegate admits with an audit trail.
func mixedPod(r *rand.Rand) (pod, string) {
	n := []int{1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5}[r.IntN(20)]
	team := teams[r.IntN(len(teams))]
	p := pod{annotations: map[string]string{}}
	p.images = append(p.images, fmt.Sprintf("registry.my.com/%s/%s:1.%d.%d", team, apps[r.IntN(len(apps))], r.IntN(20), r.IntN(5)))
	for len(p.images) < n {
		p.images = append(p.images, sidecars[r.IntN(len(sidecars))])
	}
	kind := "allowed"
	switch x := r.IntN(100); {
	case x < 17:
		kind = "denied"
		p.images[r.IntN(n)] = denied[r.IntN(len(denied)-1)] // not the invalid one: break-glass cannot fix it
	case x < 22:
		kind = "break-glass"
		p.images[r.IntN(n)] = denied[r.IntN(len(denied)-1)]
		p.annotations["ops.image-policy.k8s.io/break-glass"] = "true"
		p.annotations["ops.image-policy.k8s.io/ticket"] = fmt.Sprintf("INC-%d", 1000+r.IntN(9000))
	}
	if r.IntN(3) == 0 {
		p.annotations["ops.image-policy.k8s.io/owner"] = team
	}
	return p, kind
}

func imageReview(p pod, namespace string) *imagepolicyv1alpha1.ImageReview {
	ir := &imagepolicyv1alpha1.ImageReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "imagepolicy.k8s.io/v1alpha1", Kind: "ImageReview"},
		Spec:     imagepolicyv1alpha1.ImageReviewSpec{Annotations: p.annotations, Namespace: namespace},
	}
	for _, img := range p.images {
		ir.Spec.Containers = append(ir.Spec.Containers, imagepolicyv1alpha1.ImageReviewContainerSpec{Image: img})
	}
	return ir
}

// deploymentReview is a CREATE of a Deployment as the apiserver sends it to
// a validating webhook: defaulted, with managedFields.
func deploymentReview(r *rand.Rand, p pod, namespace string, i int) (*admissionv1.AdmissionReview, error) {
	name := fmt.Sprintf("app-%d", i)
	labels := map[string]string{"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": namespace}
	var containers []corev1.Container
	for j, img := range p.images {
		c := corev1.Container{
			Name:                     fmt.Sprintf("c%d", j),
			Image:                    img,
			TerminationMessagePath:   corev1.TerminationMessagePathDefault,
			TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			ImagePullPolicy:          corev1.PullIfNotPresent,
		}
		if j == 0 {
			c.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}
			c.Env = []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}}}
			c.Resources = corev1.ResourceRequirements{
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
			}
			c.ReadinessProbe = &corev1.Probe{
				ProbeHandler:   corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8080), Scheme: corev1.URISchemeHTTP}},
				TimeoutSeconds: 1, PeriodSeconds: 10, SuccessThreshold: 1, FailureThreshold: 3,
			}
		}
		containers = append(containers, c)
	}
	replicas, grace, history, deadline := 1+r.Int32N(5), int64(30), int32(10), int32(600)
	quarter := intstr.FromString("25%")
	d := &appsv1.Deployment{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: namespace, Labels: labels, Generation: 1,
			UID:               types.UID(uid(r)),
			CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 14, 9, 21, 7, 0, time.UTC)),
			ManagedFields: []metav1.ManagedFieldsEntry{{
				Manager: "kubectl-client-side-apply", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "apps/v1",
				FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:labels":{".":{},"f:app.kubernetes.io/name":{},"f:app.kubernetes.io/part-of":{}}},"f:spec":{"f:progressDeadlineSeconds":{},"f:replicas":{},"f:revisionHistoryLimit":{},"f:selector":{},"f:strategy":{"f:rollingUpdate":{".":{},"f:maxSurge":{},"f:maxUnavailable":{}},"f:type":{}},"f:template":{"f:metadata":{"f:labels":{".":{},"f:app.kubernetes.io/name":{}}},"f:spec":{"f:containers":{},"f:dnsPolicy":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{}}}}}`)},
			}},
		},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app.kubernetes.io/name": name}, Annotations: p.annotations},
				Spec: corev1.PodSpec{
					Containers: containers, RestartPolicy: corev1.RestartPolicyAlways, TerminationGracePeriodSeconds: &grace,
					DNSPolicy: corev1.DNSClusterFirst, SecurityContext: &corev1.PodSecurityContext{}, SchedulerName: corev1.DefaultSchedulerName,
				},
			},
			Strategy:                appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &quarter, MaxSurge: &quarter}},
			RevisionHistoryLimit:    &history,
			ProgressDeadlineSeconds: &deadline,
		},
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	gvk := metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	gvr := metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	dryRun := false
	return &admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID(uid(r)), Kind: gvk, Resource: gvr, RequestKind: &gvk, RequestResource: &gvr,
			Name: name, Namespace: namespace, Operation: admissionv1.Create,
			UserInfo: authnv1.UserInfo{Username: "alice@example.com", Groups: []string{"developers", "system:authenticated"}},
			Object:   runtime.RawExtension{Raw: raw},
			DryRun:   &dryRun,
			Options:  runtime.RawExtension{Raw: []byte(`{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1","fieldManager":"kubectl-client-side-apply"}`)},
		},
	}, nil
}

func uid(r *rand.Rand) string {
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", r.Uint32(), r.Uint32()&0xffff, r.Uint32()&0xfff, 0x8000|r.Uint32()&0x3fff, r.Uint64()&0xffffffffffff)
}

func targets(args []string) error {
	fs := flag.NewFlagSet("targets", flag.ExitOnError)
	base := fs.String("url", "https://127.0.0.1:8443", "server base URL")
	n := fs.Int("n", 2000, "number of distinct reviews")
	admissionShare := fs.Int("admission-percent", 30, "share of AdmissionReviews of Deployments, in percent; the rest are ImageReviews")
	_ = fs.Parse(args)
	r := rand.New(rand.NewPCG(7, 7)) //nolint:gosec // a fixed seed on purpose: every run sends the same reviews
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	count := map[string]int{}
	for i := range *n {
		p, kind := mixedPod(r)
		namespace := teams[r.IntN(len(teams))]
		var err error
		if r.IntN(100) < *admissionShare {
			var ar *admissionv1.AdmissionReview
			if ar, err = deploymentReview(r, p, namespace, i); err == nil {
				err = writeTarget(enc, *base+"/validate", ar)
			}
			count["AdmissionReview "+kind]++
		} else {
			err = writeTarget(enc, *base+"/image-policy", imageReview(p, namespace))
			count["ImageReview "+kind]++
		}
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "loadgen targets: %d reviews: %v\n", *n, count)
	return out.Flush()
}

func flood(args []string) error {
	fs := flag.NewFlagSet("flood", flag.ExitOnError)
	base := fs.String("url", "https://127.0.0.1:8443", "server base URL")
	images := fs.Int("images", 1_000_000, "distinct image names to send")
	per := fs.Int("per-review", 50, "images per ImageReview")
	_ = fs.Parse(args)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	for i := 0; i < *images; i += *per {
		p := pod{}
		for j := i; j < i+*per && j < *images; j++ {
			// One in ten is denied, so the flood also fills whatever keeps
			// violation messages.
			if j%10 == 0 {
				p.images = append(p.images, fmt.Sprintf("docker.io/flood/image-%d:v%d", j, j%7))
			} else {
				p.images = append(p.images, fmt.Sprintf("registry.my.com/flood/image-%d:v%d", j, j%7))
			}
		}
		if err := writeTarget(enc, *base+"/image-policy", imageReview(p, "flood")); err != nil {
			return err
		}
	}
	return out.Flush()
}

// start execs a server and measures the time until its readiness URL
// answers 200; the server keeps running after loadgen exits.
func start(args []string) error {
	fs := flag.NewFlagSet("start", flag.ExitOnError)
	ready := fs.String("ready", "", "URL that answers 200 once the server is ready")
	cacert := fs.String("cacert", "", "CA certificate of the server, PEM")
	logFile := fs.String("log", "", "file for the server's stdout and stderr")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	_ = fs.Parse(args)
	if fs.NArg() == 0 || *ready == "" {
		return errors.New("usage: loadgen start -ready URL [-cacert F] [-log F] -- CMD ARGS")
	}
	pool := x509.NewCertPool()
	if *cacert != "" {
		pem, err := os.ReadFile(*cacert)
		if err != nil {
			return err
		}
		pool.AppendCertsFromPEM(pem)
	}
	client := &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...) //nolint:gosec // running the given command is what start is for
	if *logFile != "" {
		f, err := os.Create(*logFile)
		if err != nil {
			return err
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for {
		resp, err := client.Get(*ready)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				fmt.Printf("%d %.1f\n", cmd.Process.Pid, float64(time.Since(begin).Microseconds())/1000)
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("%s exited before it was ready: %v", fs.Arg(0), err)
		case <-time.After(time.Millisecond):
		}
		if time.Since(begin) > *timeout {
			_ = cmd.Process.Kill()
			return fmt.Errorf("%s not ready after %s: %v", fs.Arg(0), *timeout, err)
		}
	}
}

// report prints "requests throughput success p50 p99 max errors" from a
// vegeta JSON report, latencies in milliseconds.
func report(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: loadgen report FILE")
	}
	raw, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	var rep struct {
		Requests   int64   `json:"requests"`
		Throughput float64 `json:"throughput"`
		Success    float64 `json:"success"`
		Latencies  struct {
			P50 float64 `json:"50th"`
			P99 float64 `json:"99th"`
			Max float64 `json:"max"`
		} `json:"latencies"`
		StatusCodes map[string]int64 `json:"status_codes"`
		Errors      []string         `json:"errors"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		return err
	}
	requests := rep.Requests
	for _, e := range rep.Errors {
		if e == "no targets to attack" { // how a lazy attack ends, not a failed review
			requests--
		}
	}
	failed := requests - rep.StatusCodes["200"]
	fmt.Printf("%d %.0f %.4f %.2f %.2f %.2f %d %q\n", requests, rep.Throughput, rep.Success,
		rep.Latencies.P50/1e6, rep.Latencies.P99/1e6, rep.Latencies.Max/1e6, failed, strings.Join(rep.Errors, "; "))
	return nil
}
