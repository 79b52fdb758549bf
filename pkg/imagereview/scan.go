package imagereview

import (
	"github.com/imagegate/imagegate/internal/jsonscan"
	"github.com/imagegate/imagegate/pkg/policy"
)

// The member names of v1alpha1.ImageReview and the structs in it, as
// encoding/json matches them: every one is read or type-checked, so the
// scan accepts only what Decode accepts.
var (
	reviewFields    = jsonscan.NewFields("apiVersion", "kind", "metadata", "spec", "status")
	metadataFields  = jsonscan.NewFields("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers", "managedFields")
	specFields      = jsonscan.NewFields("containers", "annotations", "namespace")
	containerFields = jsonscan.NewFields("image")
	statusFields    = jsonscan.NewFields("allowed", "reason", "auditAnnotations")
)

// scan reads the policy's input from an ImageReview body into in in one
// pass, reading only the spec and checking the rest as encoding/json would.
// It returns false (and a zero in) for anything it does not read exactly as
// Decode and Input would, including every body Decode rejects: the caller
// then takes that path, which says what was wrong.
func scan(body []byte, in *policy.Input) bool {
	s := jsonscan.New(body)
	var apiVersion, kind string
	for o := s.Object(reviewFields); o.Next(); {
		switch o.Name() {
		case "apiVersion":
			apiVersion = s.ReadString()
		case "kind":
			kind = s.ReadString()
		case "metadata":
			scanMetadata(&s)
		case "spec":
			scanSpec(&s, in)
		case "status":
			for o := s.Object(statusFields); o.Next(); {
				switch o.Name() {
				case "allowed":
					s.ReadBool()
				case "reason":
					s.SkipString()
				case "auditAnnotations":
					s.SkipStringMap()
				default:
					s.Skip()
				}
			}
		default:
			s.Skip()
		}
	}
	if !s.End() || apiVersion != APIVersion || kind != Kind {
		*in = policy.Input{}
		return false
	}
	if in.Images == nil {
		in.Images = []policy.Image{} // as Input makes them
	}
	return true
}

// scanMetadata checks an ImageReview's metadata, which imagegate does not
// read. The apiserver sends {"creationTimestamp":null}; the scan leaves the
// typed fields of anything else (times, integers, owner references) to
// encoding/json.
func scanMetadata(s *jsonscan.Scanner) {
	for o := s.Object(metadataFields); o.Next(); {
		switch o.Name() {
		case "creationTimestamp":
			if !s.Null() {
				s.Stop()
			}
		case "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion":
			s.SkipString()
		case "labels", "annotations":
			s.SkipStringMap()
		case "finalizers":
			s.SkipStrings()
		case "":
			s.Skip()
		default:
			s.Stop()
		}
	}
}

func scanSpec(s *jsonscan.Scanner, in *policy.Input) {
	for o := s.Object(specFields); o.Next(); {
		switch o.Name() {
		case "containers":
			if s.Null() {
				break
			}
			in.Images = make([]policy.Image, 0, 4)
			for a := s.Array(); a.Next(); {
				var img policy.Image
				for o := s.Object(containerFields); o.Next(); {
					if o.Name() == "image" {
						img.Ref = s.ReadString()
					} else {
						s.Skip()
					}
				}
				in.Images = append(in.Images, img)
			}
		case "annotations":
			in.Annotations = s.ReadStringMap()
		case "namespace":
			in.Namespace = s.ReadString()
		default:
			s.Skip()
		}
	}
}
