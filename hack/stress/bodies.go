package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	imagepolicyv1alpha1 "k8s.io/api/imagepolicy/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// The bodies are built with the API types and encoding/json, as the
// apiserver builds them: '<', '>' and '&' come out as \u003c, \u003e and
// \u0026.

// imageReview is an ImageReview of a pod in "default" running images.
func imageReview(images []string, annotations map[string]string) []byte {
	ir := imagepolicyv1alpha1.ImageReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "imagepolicy.k8s.io/v1alpha1", Kind: "ImageReview"},
		Spec:     imagepolicyv1alpha1.ImageReviewSpec{Namespace: "default", Annotations: annotations},
	}
	for _, img := range images {
		ir.Spec.Containers = append(ir.Spec.Containers, imagepolicyv1alpha1.ImageReviewContainerSpec{Image: img})
	}
	return mustJSON(ir)
}

// podReview is an AdmissionReview v1 of a Pod in "default" running images,
// each of its objects carrying annotation (when not empty) as the value of
// one annotation. oldImages, when not nil, make it an UPDATE from a Pod
// running those.
func podReview(uid string, images, oldImages []string, annotation string) []byte {
	pod := func(images []string) runtime.RawExtension {
		p := corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: "stress", Namespace: "default", UID: "5c1e0000-0000-4000-8000-00000000ab1e"},
		}
		if annotation != "" {
			p.Annotations = map[string]string{"stress.example.com/blob": annotation}
		}
		for i, img := range images {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: img})
		}
		return runtime.RawExtension{Raw: mustJSON(p)}
	}
	op := admissionv1.Create
	var old runtime.RawExtension
	if oldImages != nil {
		op, old = admissionv1.Update, pod(oldImages)
	}
	gvk := metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
	gvr := metav1.GroupVersionResource{Version: "v1", Resource: "pods"}
	return mustJSON(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID(uid), Kind: gvk, Resource: gvr, RequestKind: &gvk, RequestResource: &gvr,
			Name: "stress", Namespace: "default", Operation: op,
			UserInfo: authnv1.UserInfo{Username: "mallory@example.com", Groups: []string{"system:authenticated"}},
			Object:   pod(images), OldObject: old,
		},
	})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // the API types hold only strings, numbers and maps
	}
	return b
}

// images returns n distinct image references prefix+name+":stress", names
// counted from first in letters only, so that no number in a reason can
// come from an image's name.
func images(prefix string, first, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + letters(first+i) + ":stress"
	}
	return out
}

// letters writes n in base 26 with the digits a-z.
func letters(n int) string {
	var b []byte
	for {
		b = append(b, byte('a'+n%26))
		if n /= 26; n == 0 {
			break
		}
	}
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// heldBody is the first n bytes of a genuine-looking ImageReview whose
// annotation never ends: what a client sends before its last byte.
func heldBody(n int64) []byte {
	head := `{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"registry.my.com/app:1"}],"namespace":"default","annotations":{"stress.image-policy.k8s.io/pad":"`
	b := bytes.Repeat([]byte("a"), int(n))
	copy(b, head)
	return b
}

// smallPolicy is the valid policy alias-bomb-reload starts with.
const smallPolicy = `apiVersion: imagegate.dev/v1alpha1
kind: ImagePolicy
default:
  allowedRegistries: [registry.my.com]
`

// aliasBomb is a policy file whose YAML aliases expand it: rules rules,
// each an alias of one rule whose allowedRegistries is an alias of a list
// of registries entries, rules×registries entries in all from a file of a
// few tens of kilobytes. The rule claims every namespace, so a server that
// loaded it would start denying the real reviews' allowed images.
func aliasBomb(rules, registries int) []byte {
	var b strings.Builder
	b.WriteString("apiVersion: imagegate.dev/v1alpha1\nkind: ImagePolicy\ndefault:\n  allowedRegistries: &regs [")
	for i := range registries {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "r%04d.example.io", i)
	}
	b.WriteString("]\nrules:\n  - &rule {name: bomb, namespaces: [\"*\"], allowedRegistries: *regs}\n")
	for range rules - 1 {
		b.WriteString("  - *rule\n")
	}
	return []byte(b.String())
}

// size renders a byte count in KiB or MiB.
func size(n int) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
