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
	"encoding/json"
	"errors"
	"fmt"
	"io"

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
// kind, malformed JSON or trailing data are errors that say what was wrong.
func Decode(body []byte) (*v1alpha1.ImageReview, error) {
	var review v1alpha1.ImageReview
	// json.Unmarshal rejects exactly what the decoder below rejects
	// (malformed JSON, trailing data), without copying the body into a
	// decoder's buffer; the decoder only runs again to say what was wrong.
	if err := json.Unmarshal(body, &review); err == nil {
		return checkType(&review)
	}
	review = v1alpha1.ImageReview{}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&review); err != nil {
		return nil, fmt.Errorf("decode ImageReview: %w", describeJSONError(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode ImageReview: unexpected data after the JSON object")
	}
	return checkType(&review)
}

func checkType(review *v1alpha1.ImageReview) (*v1alpha1.ImageReview, error) {
	if review.APIVersion != APIVersion || review.Kind != Kind {
		return nil, fmt.Errorf("expected apiVersion %q and kind %q, got apiVersion %q and kind %q", APIVersion, Kind, review.APIVersion, review.Kind)
	}
	return review, nil
}

// describeJSONError adds the byte offset to syntax errors, which
// encoding/json keeps out of the message.
func describeJSONError(err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Errorf("%w (at byte %d)", err, syn.Offset)
	}
	if errors.Is(err, io.EOF) {
		return errors.New("empty body")
	}
	return err
}

// Input converts a review's spec to the policy's input. ImageReviews carry no
// container names, only images, in pod order.
func Input(review *v1alpha1.ImageReview) policy.Input {
	images := make([]policy.Image, len(review.Spec.Containers))
	for i, c := range review.Spec.Containers {
		images[i] = policy.Image{Ref: c.Image}
	}
	return policy.Input{
		Namespace:   review.Spec.Namespace,
		Images:      images,
		Annotations: review.Spec.Annotations,
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

// Review decodes body and judges it with p, returning the input it judged,
// the decision and the reply to encode. An error means body is not an
// ImageReview and deserves a 400.
func Review(p *policy.Policy, body []byte) (policy.Input, policy.Decision, Response, error) {
	var in policy.Input
	var d policy.Decision
	resp, err := ReviewInto(p, body, &in, &d)
	return in, d, resp, err
}

// ReviewInto is Review for a server: it fills the caller's in and d instead
// of returning them. Each HTTP/2 request runs on a new goroutine whose stack
// starts small, and every frame holding its own copy of them on the way up
// is stack that goroutine grows into by copying what it has, which costs
// more than the whole decoding.
//
// It reads what the apiserver sends in one pass without reflection (see
// scan), and anything else with Decode and Input, which say what is wrong.
func ReviewInto(p *policy.Policy, body []byte, in *policy.Input, d *policy.Decision) (Response, error) {
	if !scan(body, in) {
		if err := decodeInto(body, in); err != nil {
			return Response{}, err
		}
	}
	*d = p.Evaluate(*in)
	return NewResponse(d), nil
}

// decodeInto is the path for what scan leaves, kept out of ReviewInto's
// frame.
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
