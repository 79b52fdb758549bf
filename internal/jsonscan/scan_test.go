package jsonscan_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/jsonscan"
)

// sample is a struct of every kind of field the scanner's callers read.
type sample struct {
	Name   string            `json:"name"`
	On     bool              `json:"on"`
	Tags   []string          `json:"tags"`
	Labels map[string]string `json:"labels"`
	Inner  *inner            `json:"inner"`
}

type inner struct {
	X string `json:"x"`
}

var (
	sampleFields = jsonscan.NewFields("name", "on", "tags", "labels", "inner")
	innerFields  = jsonscan.NewFields("x")
)

// readSample reads a sample the way the adapters read their wire types.
func readSample(data []byte) (sample, bool) {
	s := jsonscan.New(data)
	var v sample
	for o := s.Object(sampleFields); o.Next(); {
		switch o.Name() {
		case "name":
			v.Name = s.ReadString()
		case "on":
			v.On = s.ReadBool()
		case "tags":
			v.Tags = s.ReadStrings()
		case "labels":
			v.Labels = s.ReadStringMap()
		case "inner":
			if s.Null() {
				break
			}
			v.Inner = &inner{}
			for o := s.Object(innerFields); o.Next(); {
				switch o.Name() {
				case "x":
					v.Inner.X = s.ReadString()
				default:
					s.Skip()
				}
			}
		default:
			s.Skip()
		}
	}
	return v, s.End()
}

func TestReadMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		doc    string
		wantOK bool // false: the scanner leaves the document to encoding/json
	}{
		{name: "every field", doc: `{"name":"a","on":true,"tags":["x","y"],"labels":{"k":"v"},"inner":{"x":"1"}}`, wantOK: true},
		{name: "whitespace everywhere", doc: " \t\r\n{ \"name\" : \"a\" , \"tags\" : [ \"x\" , \"y\" ] }\n", wantOK: true},
		{name: "unknown members are skipped", doc: `{"future":{"a":[1,-2.5e+3,true,false,null,"s",{}]},"name":"a","x":[]}`, wantOK: true},
		{name: "nulls", doc: `{"name":null,"on":null,"tags":null,"labels":null,"inner":null}`, wantOK: true},
		{name: "null elements and values", doc: `{"tags":["a",null],"labels":{"k":null}}`, wantOK: true},
		{name: "empty array and object are not nil", doc: `{"tags":[],"labels":{},"inner":{}}`, wantOK: true},
		{name: "a repeated map key keeps the last", doc: `{"labels":{"k":"1","k":"2"}}`, wantOK: true},
		{name: "escapes are unquoted as encoding/json does", doc: `{"name":"a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00\ud800x"}`, wantOK: true},
		{name: "escaped map keys", doc: `{"labels":{"a\u0026b":"c"}}`, wantOK: true},
		{name: "UTF-8 is kept", doc: `{"name":"é😀"}`, wantOK: true},
		{name: "invalid UTF-8 is replaced", doc: "{\"name\":\"a\xffb\",\"labels\":{\"\xfe\":\"\xc3\"}}", wantOK: true},
		{name: "null document", doc: `null`, wantOK: true},
		{name: "empty", doc: ``},
		{name: "only whitespace", doc: "  \n"},
		{name: "truncated", doc: `{"name":"a"`},
		{name: "trailing data", doc: `{"name":"a"} {}`},
		{name: "trailing comma", doc: `{"name":"a",}`},
		{name: "trailing comma in an array", doc: `{"tags":["a",]}`},
		{name: "missing colon", doc: `{"name" "a"}`},
		{name: "single quotes", doc: `{'name':'a'}`},
		{name: "control character in a string", doc: "{\"name\":\"a\tb\"}"},
		{name: "bad escape", doc: `{"name":"\x"}`},
		{name: "short unicode escape", doc: `{"name":"\u12"}`},
		{name: "leading zero", doc: `{"x":01}`},
		{name: "bare minus", doc: `{"x":-}`},
		{name: "fraction without digits", doc: `{"x":1.}`},
		{name: "exponent without digits", doc: `{"x":1e}`},
		{name: "misspelt literal", doc: `{"x":nul}`},
		{name: "literal run on", doc: `{"x":truex}`},
		{name: "string where a bool goes", doc: `{"on":"true"}`},
		{name: "number where a string goes", doc: `{"name":1}`},
		{name: "object where an array goes", doc: `{"tags":{}}`},
		{name: "number in a string array", doc: `{"tags":[1]}`},
		{name: "number in a string map", doc: `{"labels":{"k":1}}`},
		{name: "array document", doc: `[]`},
		{name: "a name matched ignoring case", doc: `{"Name":"a"}`},
		{name: "a name matched after folding", doc: "{\"n\u212Ame\":\"a\"}"},
		{name: "an escaped name", doc: `{"n\u0061me":"a"}`},
		{name: "a repeated field", doc: `{"inner":{"x":"1"},"inner":{}}`},
		{name: "too deep to follow", doc: `{"x":` + strings.Repeat("[", jsonscan.MaxDepth+1) + strings.Repeat("]", jsonscan.MaxDepth+1) + `}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := readSample([]byte(tc.doc))
			if ok != tc.wantOK {
				t.Fatalf("scanner ok = %v, want %v", ok, tc.wantOK)
			}
			compare(t, []byte(tc.doc), got, ok)
		})
	}
}

// compare checks what the scanner read against encoding/json: whatever the
// scanner accepts, encoding/json accepts and reads the same.
func compare(t *testing.T, doc []byte, got sample, ok bool) {
	t.Helper()
	if !ok {
		return
	}
	var want sample
	if err := json.Unmarshal(doc, &want); err != nil {
		t.Fatalf("scanner accepted %q, which encoding/json rejects: %v", doc, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("scanner read %q as\n%#v\nencoding/json as\n%#v", doc, got, want)
	}
}

func TestSkipMatchesValid(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{
		`0`, `-0.5e-7`, `"s"`, `true`, `null`, `[]`, `{}`, `[[],{}]`, `{"a":{"b":[1,{"c":null}]}}`,
		``, `[`, `]`, `{"a"}`, `{"a":}`, `[1 2]`, `{"a":1 "b":2}`, `{,}`, `[,]`, `{"a":1]`, `[1}`, `"\u00zz"`, `1 1`,
		strings.Repeat("[", jsonscan.MaxDepth) + strings.Repeat("]", jsonscan.MaxDepth),
	} {
		t.Run(doc[:min(len(doc), 20)], func(t *testing.T) {
			t.Parallel()
			s := jsonscan.New([]byte(doc))
			s.Skip()
			if got, want := s.End(), json.Valid([]byte(doc)); got != want {
				t.Errorf("Skip and End = %v, json.Valid = %v", got, want)
			}
		})
	}
}

// FuzzRead feeds arbitrary documents to a scanner reading every kind of
// field its callers read: whatever it accepts, encoding/json must accept and
// read the same.
func FuzzRead(f *testing.F) {
	for _, doc := range []string{
		`{"name":"a","on":true,"tags":["x",null],"labels":{"k":"v","k":null},"inner":{"x":"1"},"other":[{"a":-1.5e3}]}`,
		`{"name":"\u00e9\ud800","labels":{"\u0026":""},"inner":null,"tags":[]}`,
		`{"Name":"a","inner":{"x":"1"},"inner":{}}`, `null`, `[]`, ``,
	} {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		got, ok := readSample(doc)
		compare(t, doc, got, ok)
	})
}

// FuzzSkip checks that Skip accepts exactly the valid JSON documents, except
// those nested deeper than MaxDepth, which it leaves to encoding/json.
func FuzzSkip(f *testing.F) {
	for _, doc := range []string{`{"a":[1,"b",{"c":null}],"d":true}`, `[1,]`, `"\u0041"`, `-01`} {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		s := jsonscan.New(doc)
		s.Skip()
		got, want := s.End(), json.Valid(doc)
		if got && !want {
			t.Fatalf("Skip accepted invalid %q", doc)
		}
		if want && !got && depth(doc) < jsonscan.MaxDepth {
			t.Fatalf("Skip refused valid %q", doc)
		}
	})
}

// depth is how deeply a valid document nests (brackets outside strings).
func depth(doc []byte) int {
	d, most, inString := 0, 0, false
	for i := 0; i < len(doc); i++ {
		switch c := doc[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case !inString && (c == '{' || c == '['):
			d++
			most = max(most, d)
		case !inString && (c == '}' || c == ']'):
			d--
		}
	}
	return most
}
