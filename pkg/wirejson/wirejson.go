// Package wirejson is how imagegate reads the JSON the kube-apiserver sends,
// in one place for every review type, so the adapters cannot drift apart on
// what a review means.
package wirejson

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Options are the decoder's defaults, said here on purpose:
//   - Member names match exactly, as in the kube-apiserver's own decoding
//     (sigs.k8s.io/json): "Image" is not "image". encoding/json would match
//     them ignoring case, and so read a member the apiserver ignores.
//   - A repeated member name, in the review or in an object (annotations
//     included), is an error rather than the last one winning: the
//     apiserver never sends one, and a reader that picks another one than
//     the apiserver would is how a check is bypassed.
//   - Invalid UTF-8 is an error rather than replaced.
//   - Unknown members are ignored: a newer apiserver's additions, and every
//     field of an object that imagegate does not read.
var Options = json.JoinOptions(
	json.MatchCaseInsensitiveNames(false),
	jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(false),
	json.RejectUnknownMembers(false),
)

// Unmarshal decodes data into v with Options.
func Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v, Options) }

// DescribeStdError makes an encoding/json error fit to show a user: syntax
// errors gain their byte offset, which encoding/json keeps out of the
// message, and an empty body says so.
func DescribeStdError(err error) error {
	var syn *stdjson.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Errorf("%w (at byte %d)", err, syn.Offset)
	}
	if errors.Is(err, io.EOF) {
		return errors.New("empty body")
	}
	return err
}

// Sniff reads the string members named by paths ("kind", "request.uid")
// from the start of a JSON object that may be cut anywhere, as the first
// bytes of a body too large to read are: what lies past the cut, or past
// anything malformed, is simply not found. It is for answering such a body
// in its own format, never for judging it.
func Sniff(prefix []byte, paths ...string) map[string]string {
	found := make(map[string]string, len(paths))
	want := make(map[string]bool, len(paths))
	for _, p := range paths {
		want[p] = true
		for i := range p { // every parent object is walked into
			if p[i] == '.' {
				want[p[:i]+"."] = true
			}
		}
	}
	dec := jsontext.NewDecoder(bytes.NewReader(prefix), Options)
	_ = sniffObject(dec, "", want, found)
	return found
}

func sniffObject(dec *jsontext.Decoder, path string, want map[string]bool, found map[string]string) error {
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return errors.New("not an object")
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return err
		}
		p := path + name.String()
		switch k := dec.PeekKind(); {
		case want[p] && k == '"':
			v, err := dec.ReadToken()
			if err != nil {
				return err
			}
			found[p] = v.String()
		case want[p+"."] && k == '{':
			if err := sniffObject(dec, p+".", want, found); err != nil {
				return err
			}
		default:
			if err := dec.SkipValue(); err != nil {
				return err
			}
		}
	}
	_, err := dec.ReadToken()
	return err
}
