// Package imagereview translates the kube-apiserver's ImagePolicyWebhook
// wire format, imagepolicy.k8s.io/v1alpha1 ImageReview, to a policy.Input and
// a policy.Decision back to an ImageReview status.
//
// A policy denial is an ordinary answer (status.allowed false): the
// apiserver treats anything but a 2xx reply as a backend failure and then
// applies its defaultAllow, so only a request that is not an ImageReview at
// all is an error.
package imagereview

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/imagegate/imagegate/pkg/wirejson"

	"k8s.io/api/imagepolicy/v1alpha1"

	"github.com/imagegate/imagegate/pkg/policy"
)

// APIVersion and Kind are the only ImageReview type this package speaks.
const (
	APIVersion = "imagepolicy.k8s.io/v1alpha1"
	Kind       = "ImageReview"
)

// Decode parses an ImageReview request body. Unknown fields are tolerated so
// a newer apiserver's additions do not break reviews; a wrong apiVersion or
// kind, malformed JSON, trailing data, a repeated member name or invalid
// UTF-8 are errors that say what was wrong.
func Decode(body []byte) (*v1alpha1.ImageReview, error) {
	var review v1alpha1.ImageReview
	if err := wirejson.Unmarshal(body, &review); err != nil {
		return nil, describeError(body, err)
	}
	return checkType(&review)
}

// describeError says why body did not decode: as encoding/json says it, as
// imagegate always has, or, for what only the stricter decoder rejects (a
// repeated member name, invalid UTF-8), as it says it.
//
//go:noinline
func describeError(body []byte, err error) error {
	var review v1alpha1.ImageReview
	dec := stdjson.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&review); err != nil {
		return fmt.Errorf("decode ImageReview: %w", wirejson.DescribeStdError(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("decode ImageReview: unexpected data after the JSON object")
	}
	if _, err := checkType(&review); err != nil {
		return err
	}
	return fmt.Errorf("decode ImageReview: %w", err)
}

func checkType(review *v1alpha1.ImageReview) (*v1alpha1.ImageReview, error) {
	if review.APIVersion != APIVersion || review.Kind != Kind {
		return nil, fmt.Errorf("expected apiVersion %q and kind %q, got apiVersion %q and kind %q", APIVersion, Kind, review.APIVersion, review.Kind)
	}
	return review, nil
}

// Input converts a review's spec to the policy's input. ImageReviews carry no
// container names, only images, in pod order, and no operation: the
// apiserver sends one for every pod UPDATE as for a CREATE, so a passed
// break-glass expiry must not refuse it (see policy.Input.OperationUnknown).
func Input(review *v1alpha1.ImageReview) policy.Input {
	images := make([]policy.Image, len(review.Spec.Containers))
	for i, c := range review.Spec.Containers {
		images[i] = policy.Image{Ref: c.Image}
	}
	return policy.Input{
		Namespace:        review.Spec.Namespace,
		Images:           images,
		Annotations:      review.Spec.Annotations,
		OperationUnknown: true,
	}
}

// Response is the reply body: the request's apiVersion and kind and the
// status. Spec and metadata are not echoed; the apiserver reads only status.
type Response struct {
	APIVersion string                     `json:"apiVersion"`
	Kind       string                     `json:"kind"`
	Status     v1alpha1.ImageReviewStatus `json:"status"`
}

// NewResponse renders a decision as an ImageReview reply.
func NewResponse(d *policy.Decision) Response {
	return Response{
		APIVersion: APIVersion,
		Kind:       Kind,
		Status: v1alpha1.ImageReviewStatus{
			Allowed:          d.Allowed,
			Reason:           d.Reason(),
			AuditAnnotations: d.AuditAnnotations,
		},
	}
}

// Review decodes body and judges it with p, filling in with the input it
// judged and d with the decision, and returns the reply to encode. An
// error means body is not an ImageReview and deserves a 400.
//
// It fills the caller's in and d rather than returning them: each HTTP/2
// request runs on a new goroutine whose stack starts small, and every frame
// holding its own copy of them on the way up is stack that goroutine grows
// into by copying what it has, which costs more than the whole decoding.
func Review(p *policy.Policy, body []byte, in *policy.Input, d *policy.Decision) (Response, error) {
	if err := decodeInto(body, in); err != nil {
		return Response{}, err
	}
	*d = p.Evaluate(*in)
	return NewResponse(d), nil
}

// decodeInto decodes body into in, in its own frame: the review it decodes
// is not needed once in is filled.
//
//go:noinline
func decodeInto(body []byte, in *policy.Input) error {
	review, err := Decode(body)
	if err != nil {
		return err
	}
	*in = Input(review)
	return nil
}

// Refuse answers an ImageReview that imagegate could not read whole (it is
// larger than the server reads, or arrived while the server was at its
// memory budget) from the start of its body: a denial saying why, so the
// apiserver gets a verdict rather than an error its defaultAllow would
// resolve. ok is false when the start of the body is not an ImageReview's.
func Refuse(p *policy.Policy, prefix []byte, why string, d *policy.Decision) (resp Response, ok bool) {
	head := wirejson.Sniff(prefix, "apiVersion", "kind")
	if head["apiVersion"] != APIVersion || head["kind"] != Kind {
		return Response{}, false
	}
	*d = p.Refuse("", why) // the namespace comes after the images
	return NewResponse(d), true
}
