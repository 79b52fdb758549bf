//go:build tools

// Package tools pins the Kubernetes binaries that hack/e2e.sh runs against:
// a real kube-apiserver, a kube-controller-manager for the scenarios that need
// the real controllers, and a kubectl of the same version to drive them.
// hack/install-e2e-tools.sh builds them with "go build" from this module.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
