package admission_test

import (
	"fmt"

	"github.com/imagegate/imagegate/pkg/admission"
	"github.com/imagegate/imagegate/pkg/policy"
)

func ExampleReview() {
	p, err := policy.New(policy.Options{AllowedRegistries: []string{"registry.my.com"}, RejectLatest: true})
	if err != nil {
		panic(err)
	}
	body := []byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{
		"uid":"705ab4f5","operation":"CREATE","namespace":"default",
		"kind":{"group":"apps","version":"v1","kind":"Deployment"},
		"object":{"apiVersion":"apps/v1","kind":"Deployment","spec":{"template":{"spec":{
			"initContainers":[{"name":"setup","image":"registry.my.com/setup:1.0"}],
			"containers":[{"name":"app","image":"nginx:1.25"}]}}}}}}`)
	var in policy.Input
	var d policy.Decision
	resp, err := admission.Review(p, body, &in, &d)
	if err != nil {
		panic(err) // body is not an AdmissionReview: answer 400
	}
	fmt.Println(resp.APIVersion, resp.Response.UID, resp.Response.Allowed, resp.Response.Result.Code)
	fmt.Println(resp.Response.Result.Message)
	// Output:
	// admission.k8s.io/v1beta1 705ab4f5 false 403
	// container "app" image "nginx:1.25": registry docker.io is not allowed (allowed: registry.my.com); push or mirror the image to an allowed registry and use that reference
}
